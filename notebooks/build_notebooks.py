"""Writes the notebooks from this one source (outputs stay out of git): python notebooks/build_notebooks.py"""

from pathlib import Path

import nbformat as nbf

HERE = Path(__file__).parent
SETUP = """import os
os.environ.setdefault("MPLBACKEND", "Agg")
import matplotlib.pyplot as plt
from IPython.display import Image, display
"""


def notebook(cells):
    nb = nbf.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbf.v4.new_markdown_cell(c[3:]) if c.startswith("md:") else nbf.v4.new_code_cell(c) for c in cells]
    return nb


EXPLORE = [
    "md:# 01 Data exploration\nClass balance per split, a sample grid per emotion, duplicates and blank images. "
    "Reads FER-2013 from `FER_DATA` or `../../shared/data/fer2013/`; without it, a small synthetic set stands in.",
    SETUP + "from fer.explore import (load_or_demo, class_balance, sample_grid, duplicate_groups,\n"
    "                         cross_split_duplicates, blank_images)\n"
    "data, real = load_or_demo(os.environ.get('FER_DATA'))\n"
    "print('FER-2013' if real else 'synthetic stand-in (FER-2013 not found)', data.source)",
    "md:## Class balance per split\nDisgust is rare (about 1.5% of Training); happy is a quarter of it.",
    "import pandas as pd\nbalance = pd.DataFrame(class_balance(data))\nbalance['train_share'] = "
    "(balance['train'] / balance['train'].sum()).round(3)\nbalance",
    "ax = pd.DataFrame(class_balance(data)).plot.bar(figsize=(8, 3), title='images per class')\nplt.show()",
    "md:## A sample of each emotion",
    "fig = sample_grid(data['train'], per_class=8)\nplt.show()",
    "md:## Duplicates and blank images\nIdentical images inside Training, Training images that reappear in "
    "PrivateTest, and (near-)uniform frames.",
    "groups = duplicate_groups(data['train'].x)\nprint(f'{len(groups)} groups of identical Training images, "
    "{sum(len(g) for g in groups)} images')\nprint(f\"{cross_split_duplicates(data, 'train', 'test')} PrivateTest "
    "images also in Training\")\nblank = blank_images(data['train'].x)\nprint(f'{len(blank)} blank Training images')",
]

OPTUNA = [
    "md:# 02 Optuna experiments\nA small study through `fer.tune` (the same code as `fer tune`), every trial "
    "logged to Neptune (offline) and ClearML (offline). Budget from `NB_TRIALS`, `NB_EPOCHS`, `NB_SUBSET`; "
    "`NB_ARCH` swaps the network (the tests use `tiny`, which checks the study, not ResNet-18).",
    SETUP + "import tempfile\nfrom fer.explore import load_or_demo\nfrom fer.tune import load_tune_config, run_study\n"
    "data, real = load_or_demo(os.environ.get('FER_DATA'))\n"
    "out = os.environ.get('NB_OUTPUT', tempfile.mkdtemp(prefix='fer-nb-'))\n"
    "os.environ.setdefault('CLEARML_CACHE_DIR', os.path.join(out, 'clearml'))\n"
    "budget = [f\"trials={os.environ.get('NB_TRIALS', '12')}\", f\"epochs={os.environ.get('NB_EPOCHS', '3')}\",\n"
    "          f\"subset={os.environ.get('NB_SUBSET', '0.1')}\", f'output_dir={out}', 'study_name=notebook']\n"
    "if os.environ.get('NB_ARCH'):\n    budget.append(f\"base.model.arch={os.environ['NB_ARCH']}\")\n"
    "cfg = load_tune_config('../experiments/tune.yaml', budget)\ncfg",
    "result = run_study(cfg, data=data, trackers='neptune,clearml')\n"
    "print(f'best val_acc {result.best_value:.4f} with {result.best_params}')\n"
    "print(f'{result.n_complete} complete, {result.n_pruned} pruned in {result.seconds:.0f} s')",
    "md:## Plots\nOptimisation history, parameter importances and intermediate values (also viewable with "
    "`optuna-dashboard sqlite:///<study folder>/study.db`).",
    "for name in ('history', 'importances', 'intermediate'):\n"
    "    path = os.path.join(out, 'notebook', f'{name}.png')\n"
    "    if os.path.exists(path):\n        display(Image(filename=path))",
    "md:The best configuration is a YAML file that `fer train --config` accepts:",
    "print(open(result.best_config).read())",
]

ERRORS = [
    "md:# 03 Error analysis of the production model\nConfusion matrix, the most confident mistakes and "
    "calibration per class, for the model the app serves.",
    SETUP + "from fer.registry import open_registry\nfrom fer.inference import Predictor\n"
    "from fer.evaluate import evaluate_split, save_report\n"
    "from fer.explore import load_or_demo, most_confident_mistakes, mistakes_grid, per_class_calibration\n"
    "mv = open_registry(os.environ.get('FER_REGISTRY_DIR', '../.fer/registry')).resolve('fer-resnet18@production')\n"
    "predictor = Predictor(mv.path, threads=0)\n"
    "data, real = load_or_demo(os.environ.get('FER_DATA'))\ntest = data['test']\n"
    "print(mv.ref, 'on', 'FER-2013 PrivateTest' if real else 'the synthetic stand-in', len(test), 'images')",
    "metrics = evaluate_split(predictor, test)\nprint(f\"accuracy {metrics['accuracy']:.4f}, "
    "macro-F1 {metrics['macro_f1']:.4f}, ECE {metrics['ece']:.4f}\")",
    "import tempfile\nreport = save_report(metrics, predictor.labels, __import__('pathlib').Path(tempfile.mkdtemp()), "
    "mv.ref)\ndisplay(Image(filename=str(report['confusion_png'])))",
    "md:## The most confident mistakes\nOften label noise (FER+ annotators disagree with many of these labels) "
    "rather than model error.",
    "probs = predictor.predict_proba(test.x)\nidx = most_confident_mistakes(probs, test.y, k=18)\n"
    "fig = mistakes_grid(test, probs, idx)\nplt.show()",
    "md:## Calibration per predicted class",
    "import pandas as pd\npd.Series(per_class_calibration(probs, test.y), name='ECE').round(3).to_frame()",
    "display(Image(filename=str(report['reliability_png'])))",
]

for name, cells in (("01_data_exploration", EXPLORE), ("02_optuna_experiments", OPTUNA), ("03_error_analysis", ERRORS)):
    nbf.write(notebook(cells), HERE / f"{name}.ipynb")
