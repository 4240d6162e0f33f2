"""Hyperparameter search with Optuna: the objective calls `fit` with a reporting/pruning callback.

Search space from the original design (learning rate 1e-4..1e-2 log, batch size 32/64/128,
optimizer Adam/SGD), optional extras switched on in the tuning config; objective: best validation
accuracy (PublicTest, or the validation split), never the test split.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError

from fer.config import ConfigError, StrictModel, TrainConfig, apply_overrides, load_train_config, save_config

log = logging.getLogger(__name__)


class SearchSpace(StrictModel):
    lr: tuple[float, float] = (1e-4, 1e-2)  # log-uniform
    batch_size: list[int] = [32, 64, 128]
    optimizer: list[Literal["adam", "adamw", "sgd"]] = ["adam", "sgd"]
    weight_decay: tuple[float, float] | None = None  # log-uniform, off unless given
    label_smoothing: tuple[float, float] | None = None
    augment_strength: tuple[float, float] | None = None  # scales rotation/brightness/shift together


class TuneConfig(StrictModel):
    """A study: the base training config, the search space and the budget."""

    study_name: str = "fer-tune"
    base: dict[str, Any] = {}  # TrainConfig fields (or `base_config: path`), before the trial's values
    base_config: str | None = None
    search: SearchSpace = SearchSpace()
    trials: int = Field(50, ge=1)
    timeout: float | None = Field(None, gt=0)  # seconds for the whole study (per worker)
    epochs: int = Field(3, ge=1)  # per trial
    subset: float = Field(0.2, gt=0, le=1)  # stratified share of Training per trial
    pruner: Literal["median", "hyperband", "none"] = "median"
    seed: int = 0
    storage: str | None = None  # default: sqlite file in the study folder; any RDB URL for many machines
    output_dir: str = "runs/tune"


def load_tune_config(path: str | Path | None, overrides: list[str] | None = None) -> TuneConfig:
    data: dict[str, Any] = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"tuning config not found: {p}")
        data = yaml.safe_load(p.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level")
    data = apply_overrides(data, overrides or [])
    try:
        cfg = TuneConfig.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"invalid tuning config{f' {path}' if path else ''}: {problems}") from e
    if path and cfg.base_config and not Path(cfg.base_config).is_absolute():
        # A base config named in a tuning file is relative to that file, wherever fer runs from.
        beside = (Path(path).parent / cfg.base_config).resolve()
        if beside.is_file():
            cfg.base_config = str(beside)
    s = cfg.search
    for name in ("lr", "weight_decay", "label_smoothing", "augment_strength"):
        rng = getattr(s, name)
        if rng is not None and not (0 <= rng[0] < rng[1]):
            raise ConfigError(f"search.{name}: need low < high and low >= 0, got {list(rng)}")
    if s.lr[0] <= 0:
        raise ConfigError("search.lr: the log-uniform range must start above 0")
    if not s.batch_size or any(b < 1 for b in s.batch_size) or not s.optimizer:
        raise ConfigError("search.batch_size and search.optimizer need at least one valid choice")
    base_train_config(cfg)  # fail now, not in trial 1
    return cfg


def base_train_config(cfg: TuneConfig) -> TrainConfig:
    base = load_train_config(cfg.base_config) if cfg.base_config else TrainConfig()
    data = base.model_dump(mode="json")
    for key, value in cfg.base.items():
        apply_overrides(data, [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}"])
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"invalid base training config in tuning config: {e}") from e


def suggest(trial, cfg: TuneConfig) -> list[str]:
    """The trial's hyperparameters as TrainConfig overrides."""
    s = cfg.search
    out = [
        f"optim.lr={trial.suggest_float('lr', *s.lr, log=True)}",
        f"batch_size={trial.suggest_categorical('batch_size', s.batch_size)}",
        f"optim.name={trial.suggest_categorical('optimizer', s.optimizer)}",
    ]
    if s.weight_decay:
        wd = trial.suggest_float("weight_decay", *s.weight_decay, log=s.weight_decay[0] > 0)
        out.append(f"optim.weight_decay={wd}")
    if s.label_smoothing:
        out.append(f"label_smoothing={trial.suggest_float('label_smoothing', *s.label_smoothing)}")
    if s.augment_strength:
        k = trial.suggest_float("augment_strength", *s.augment_strength)
        out += [
            f"augment.rotation={15 * k}",
            f"augment.brightness={min(1.0, 0.25 * k)}",
            f"augment.translate={min(0.5, 0.1 * k)}",
        ]
    return out


def trial_config(cfg: TuneConfig, overrides: list[str]) -> TrainConfig:
    data = base_train_config(cfg).model_dump(mode="json")
    apply_overrides(data, [*overrides, f"epochs={cfg.epochs}", f"data.subset={cfg.subset}"])
    return TrainConfig.model_validate(data)


def study_dir(cfg: TuneConfig) -> Path:
    return Path(cfg.output_dir) / cfg.study_name


def storage_url(cfg: TuneConfig, workers: int = 1):
    """SQLite in the study folder for one process; a journal file for several on one machine."""
    import optuna

    d = study_dir(cfg).resolve()
    d.mkdir(parents=True, exist_ok=True)
    if cfg.storage:
        return cfg.storage
    if workers > 1:
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(d / "journal.log")))
    return f"sqlite:///{d / 'study.db'}"


def _pruner(cfg: TuneConfig):
    import optuna

    if cfg.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if cfg.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=cfg.epochs)
    return optuna.pruners.NopPruner()


def create_study(cfg: TuneConfig, workers: int = 1):
    import optuna

    return optuna.create_study(
        study_name=cfg.study_name,
        storage=storage_url(cfg, workers),
        direction="maximize",
        load_if_exists=True,
        pruner=_pruner(cfg),
        sampler=optuna.samplers.TPESampler(seed=cfg.seed),
    )


def make_objective(cfg: TuneConfig, data, trackers: str = "none"):
    """The objective: train one trial with `fit`, reporting each epoch to the pruner."""
    import optuna

    from fer.tracking import make_tracker
    from fer.train import fit

    def objective(trial: optuna.Trial) -> float:
        train_cfg = trial_config(cfg, suggest(trial, cfg))
        run_dir = study_dir(cfg) / f"trial-{trial.number:04d}"
        pruned = {"flag": False}

        def report(epoch: int, metrics: dict[str, float]) -> bool:
            trial.report(metrics["val_acc"], epoch)
            if trial.should_prune():
                pruned["flag"] = True
                return True  # stop fit cleanly; the trial is marked pruned below
            return False

        tracker = make_tracker(trackers, run_dir)
        tracker_tags = [f"study:{cfg.study_name}", f"trial:{trial.number}"]
        result = fit(
            train_cfg,
            data=data,
            run_dir=run_dir,
            callbacks=[report],
            evaluate_test=False,
            export_onnx=False,
            checkpoints=False,
            tracker=_Tagged(tracker, tracker_tags),
        )
        trial.set_user_attr("run_dir", str(run_dir))
        # Which worker ran it: with a shared RDB storage, trials come from several processes/machines.
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        if pruned["flag"]:
            raise optuna.TrialPruned()
        return result.metrics["val_acc"]

    return objective


class _Tagged:
    """Adds study/trial tags to every tracker run started through it."""

    def __init__(self, tracker, tags: list[str]):
        self.tracker, self.tags = tracker, tags

    def start(self, project, name, tags, config):
        self.tracker.start(project, name, [*tags, *self.tags], config)

    def __getattr__(self, name):
        return getattr(self.tracker, name)


@dataclass
class TuneResult:
    study_name: str
    best_value: float
    best_params: dict[str, Any]
    best_config: Path
    n_complete: int
    n_pruned: int
    seconds: float


def _worker(cfg_json: str, data_path: str | None, n_trials: int, trackers: str) -> None:
    from fer.data import load_dataset

    cfg = TuneConfig.model_validate_json(cfg_json)
    base = base_train_config(cfg)
    data = load_dataset(data_path or base.data.path, base.data.val_fraction, base.data.seed)
    study = create_study(cfg, workers=2)
    study.optimize(make_objective(cfg, data, trackers), n_trials=n_trials, timeout=cfg.timeout, catch=())


def run_study(
    cfg: TuneConfig, data=None, data_path: str | None = None, workers: int = 1, trackers: str = "none"
) -> TuneResult:
    """Run (or resume) the study until `cfg.trials` trials exist, then write results and plots."""

    from fer.data import load_dataset

    t0 = time.time()
    study = create_study(cfg, workers)
    done = len([t for t in study.trials if t.state.is_finished()])
    remaining = max(0, cfg.trials - done)
    if done:
        log.info("resuming study %s: %d trials done, %d to go", cfg.study_name, done, remaining)
    if workers > 1 and remaining:
        per = [remaining // workers + (i < remaining % workers) for i in range(workers)]
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_worker, args=(cfg.model_dump_json(), data_path, n, trackers)) for n in per if n]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        study = create_study(cfg, workers)
    elif remaining:
        base = base_train_config(cfg)
        data = data or load_dataset(data_path or base.data.path, base.data.val_fraction, base.data.seed)
        study.optimize(make_objective(cfg, data, trackers), n_trials=remaining, timeout=cfg.timeout)
    return summarize(cfg, study, time.time() - t0, trackers)


def summarize(cfg: TuneConfig, study, seconds: float, trackers: str = "none") -> TuneResult:
    import optuna

    from fer.tracking import make_tracker

    states = [t.state for t in study.trials]
    complete = states.count(optuna.trial.TrialState.COMPLETE)
    pruned = states.count(optuna.trial.TrialState.PRUNED)
    if not complete:
        raise RuntimeError(f"study {cfg.study_name} has no completed trial yet")
    out = study_dir(cfg)
    best = trial_config(cfg, suggest(optuna.trial.FixedTrial(study.best_params), cfg))
    # The best config trains the final model: the full training split and the base epoch count.
    best = best.model_copy(
        update={"epochs": base_train_config(cfg).epochs, "data": best.data.model_copy(update={"subset": 1.0})}
    )
    best_path = out / "best.yaml"
    save_config(best, best_path)
    save_plots(study, out)
    summary = {
        "best_value": study.best_value,
        "best_params": study.best_params,
        "trials": len(study.trials),
        "complete": complete,
        "pruned": pruned,
    }
    (out / "summary.yaml").write_text(yaml.safe_dump(summary, sort_keys=False))
    tracker = make_tracker(trackers, out)
    tracker.start("fer", f"{cfg.study_name}-summary", [f"study:{cfg.study_name}", "summary"], summary)
    tracker.finish("completed")
    return TuneResult(cfg.study_name, study.best_value, study.best_params, best_path, complete, pruned, seconds)


def save_plots(study, out: Path) -> list[Path]:
    """Optimisation history, parameter importances and intermediate values as PNG files."""
    import matplotlib
    import optuna

    matplotlib.use("Agg")
    import warnings

    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    paths = []
    # The matplotlib backend of optuna.visualization is flagged experimental; its output is fine.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    for name, fn in (
        ("history", ovm.plot_optimization_history),
        ("importances", ovm.plot_param_importances),
        ("intermediate", ovm.plot_intermediate_values),
    ):
        try:
            ax = fn(study)
        except (ValueError, RuntimeError) as e:  # e.g. importances need 2+ completed trials
            log.info("skipping %s plot: %s", name, e)
            continue
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        p = out / f"{name}.png"
        fig.savefig(p, dpi=100, bbox_inches="tight")
        plt.close(fig)
        paths.append(p)
    return paths
