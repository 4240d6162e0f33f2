"""The test-time policy, executed: face crops -> views -> logits -> calibrated, averaged probabilities.

One code path for serving (`Predictor.predict_proba`) and evaluation (`fer evaluate`, the gate,
the model tests), so what a model scores and what it answers can never disagree. numpy only.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np

from fer.artifact import EarlyExit, Policy


def windows(side: int, policy: Policy) -> tuple[int, list[tuple[int, int]]]:
    """The policy's crop windows on a side x side face: their side c and (top, left) corners, in order.

    The centre first, then (`crops: five`) the four corners. `views` cuts them from arrays, and
    `fer.ensemble` cuts the same ones inside a fused graph.
    """
    c = policy.crop if 0 < policy.crop < side else side
    o, e = (side - c) // 2, side - c
    return c, [(o, o)] + ([(0, 0), (0, e), (e, 0), (e, e)] if policy.crops == "five" and c < side else [])


@lru_cache(maxsize=32)  # views() runs per request; the matrix depends only on (side, factor)
def zoom_matrix(side: int, factor: float) -> np.ndarray:
    """(side, side) float32 Z such that Z @ w @ Z.T is window `w` zoomed by `factor` about its centre.

    Bilinear sampling at pixel centres, the border repeated where a zoom-out reaches past it. Each
    row sums to 1, so the zoom commutes with the affine pixel normalisation, and `fer.ensemble`
    applies the same Z inside a fused graph as two MatMuls.
    """
    u = (np.arange(side) + 0.5 - side / 2) / factor + side / 2 - 0.5  # source coordinate of each output pixel
    u = np.clip(u, 0, side - 1)
    lo = np.floor(u).astype(int)
    hi, w = np.minimum(lo + 1, side - 1), (u - lo).astype(np.float32)
    z = np.zeros((side, side), np.float32)
    np.add.at(z, (np.arange(side), lo), 1 - w)
    np.add.at(z, (np.arange(side), hi), w)
    z.flags.writeable = False  # shared by every caller through the cache
    return z


def views(faces: np.ndarray, policy: Policy) -> np.ndarray:
    """(N, S, S) uint8 crops -> (V, N, s, s) views: the policy's crop windows, then their mirrors.

    With `zooms`, each window is followed by its zoomed copies, and the views are float32 (a zoom
    interpolates between pixels; rounding it to uint8 would differ from the fused graph).
    """
    c, offsets = windows(faces.shape[-1], policy)
    cuts = [faces[:, y : y + c, x : x + c] for y, x in offsets]
    if policy.zooms:
        mats = [zoom_matrix(c, z) for z in policy.zooms]
        cuts = [v for w in cuts for v in [w.astype(np.float32)] + [m @ w.astype(np.float32) @ m.T for m in mats]]
    if policy.flip:
        cuts += [w[:, :, ::-1] for w in cuts]
    return np.ascontiguousarray(np.stack(cuts))


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def combine(view_logits: np.ndarray, temperature: float) -> np.ndarray:
    """(V, N, C) logits -> (N, C) probabilities: softmax(logits / T) averaged over the views."""
    return softmax(view_logits / temperature).mean(0)


def view_logits(logits: Callable[[np.ndarray], np.ndarray], faces: np.ndarray, policy: Policy) -> np.ndarray:
    """(V, N, C) logits of every view, from one network call over all views (one batch)."""
    return _run(logits, views(faces, policy))


def _run(logits: Callable[[np.ndarray], np.ndarray], v: np.ndarray) -> np.ndarray:
    """(V, N, s, s) views -> (V, N, C) logits, in one network call over all of them."""
    s = v.shape[-1]
    return logits(v.reshape(-1, s, s)).reshape(len(v), v.shape[1], -1)


def probabilities(logits: Callable[[np.ndarray], np.ndarray], faces: np.ndarray, policy: Policy) -> np.ndarray:
    """(N, C) probabilities as the policy answers: its views averaged, or with `early_exit` in two steps.

    With an early exit, the first `views` views run for every face; faces whose calibrated top
    probability reaches the threshold keep that answer, and only the rest run the remaining views
    and are answered from all of them. Each face's answer depends on that face alone, so a batch
    answers as its faces would one by one.
    """
    v = views(faces, policy)
    ee = policy.early_exit
    if ee is None:
        return combine(_run(logits, v), policy.temperature)
    first = _run(logits, v[: ee.views])
    probs, rest = exit_early(first, ee)
    if len(rest):
        more = _run(logits, np.ascontiguousarray(v[ee.views :, rest]))
        probs[rest] = combine(np.concatenate([first[:, rest], more]), policy.temperature)
    return probs


def answer(view_logits: np.ndarray, policy: Policy) -> np.ndarray:
    """`probabilities` from the (V, N, C) logits of all the policy's views, already computed."""
    ee = policy.early_exit
    if ee is None:
        return combine(view_logits, policy.temperature)
    probs, rest = exit_early(view_logits[: ee.views], ee)
    probs[rest] = combine(view_logits[:, rest], policy.temperature)
    return probs


def exit_early(first: np.ndarray, ee: EarlyExit) -> tuple[np.ndarray, np.ndarray]:
    """The first views' probabilities, and the indices of the faces not sure enough to stop there."""
    probs = combine(first, ee.temperature)
    return probs, np.flatnonzero(probs.max(-1) < ee.threshold)


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(probs[np.arange(len(y)), y] + 1e-12).mean())


def fit_temperature(view_logits: np.ndarray, y: np.ndarray, lo: float = 0.05, hi: float = 20.0) -> float:
    """The temperature minimising the negative log-likelihood of the policy's averaged probabilities.

    Guo et al. (2017) temperature scaling: one scalar, so accuracy is unchanged (for one view the
    argmax cannot move) while confidence matches accuracy. The NLL is unimodal in log T in
    practice; a coarse grid then a golden-section search on log T finds it to ~1e-4.
    """
    f = lambda log_t: nll(combine(view_logits, float(np.exp(log_t))), y)  # noqa: E731
    grid = np.linspace(np.log(lo), np.log(hi), 41)
    i = int(np.argmin([f(g) for g in grid]))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    r = (np.sqrt(5) - 1) / 2
    c, d = b - r * (b - a), a + r * (b - a)
    for _ in range(40):
        if f(c) < f(d):
            b, d = d, c
            c = b - r * (b - a)
        else:
            a, c = c, d
            d = a + r * (b - a)
    return float(np.exp((a + b) / 2))
