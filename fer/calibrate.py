"""Temperature scaling: a new artifact whose policy carries the temperature fitted on PublicTest.

The network file is copied unchanged; only `meta.json`'s `policy` changes (and its metrics,
re-measured through that policy, which is how the artifact will serve).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from fer.artifact import CARD_FILE, META_FILE, Policy, read_meta, write_meta
from fer.evaluate import classification_metrics, measure_artifact
from fer.policy import answer, combine, exit_early, fit_temperature, nll


def calibrate_artifact(src: Path, dst: Path, ds, parent: str, policy: Policy | None = None) -> dict[str, Any]:
    """Fit the temperature of `policy` (default: `src`'s own) on PublicTest and write `dst`.

    Returns the temperature and PublicTest ECE/NLL before and after; `dst`'s meta then holds
    val/test metrics measured with the calibrated policy (the parent's kept beside them).

    Raises:
        KeyError: the dataset has no PublicTest ("val") split.
    """
    from fer.inference import Predictor

    src, dst = Path(src), Path(dst)
    val = ds["val"]
    meta = read_meta(src)
    policy = (policy or meta.policy).model_copy(update={"temperature": 1.0})
    logits = Predictor(src, threads=0).view_logits(val.x, policy)
    t = fit_temperature(logits, val.y)
    policy = policy.model_copy(update={"temperature": t})
    if policy.early_exit:  # the first views answer alone for sure faces: they get their own fit
        first = fit_temperature(logits[: policy.early_exit.views], val.y)
        policy = policy.model_copy(update={"early_exit": policy.early_exit.model_copy(update={"temperature": first})})
    before, after = combine(logits, 1.0), answer(logits, policy)
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.name not in {META_FILE, CARD_FILE}:
            shutil.copy2(f, dst / f.name)
    meta.policy = policy
    meta.calibration = {"method": "temperature scaling (NLL)", "split": "val", "n": len(val), "parent": parent}
    if ee := policy.early_exit:  # what the early exit saves depends on it: kept for the benchmarks
        meta.calibration["exit_share"] = 1 - len(exit_early(logits[: ee.views], ee)[1]) / len(val)
    write_meta(dst, meta)
    measure_artifact(dst, ds, f"parent_{parent}")
    labels = list(meta.labels)
    return {
        "temperature": t,
        "val_ece_before": classification_metrics(val.y, before, labels)["ece"],
        "val_ece_after": classification_metrics(val.y, after, labels)["ece"],
        "val_nll_before": nll(before, val.y),
        "val_nll_after": nll(after, val.y),
        "exit_temperature": ee.temperature if ee else None,
        "val_exit_share": meta.calibration.get("exit_share"),  # PublicTest answered by the first views alone
    }
