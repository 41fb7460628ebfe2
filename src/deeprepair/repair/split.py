"""The split every repair starts from (``make_split``: the fine-tuning set and the validation sets
carved from Dt and Dc, never from De or a test set) and the validation scores read on it: the
only numbers a repair is selected by."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch.nn as nn

from ..data import ImageSet
from ..engine import predict
from ..repair_config import RepairConfig


@dataclass
class Split:
    """Fine-tuning set and the validation sets carved from Dt and Dc (never from De or test)."""

    x: np.ndarray
    y: np.ndarray
    is_failure: np.ndarray
    val_train: ImageSet | None
    val_failures: ImageSet | None
    dc_fit: ImageSet
    calibration: ImageSet | None = None  # training images in neither fine-tuning nor validation (gate threshold)


def make_split(train: ImageSet, failures: ImageSet, cfg: RepairConfig, val: ImageSet | None = None) -> Split:
    """``val``: labelled images the model never trained on (the calibration set of the break
    limit); without it 1,000 (at most a tenth) of ``train`` are held back instead."""
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(train))
    n_val = 0 if val is not None else min(cfg.val_train, len(train) // 10)
    val_t = val if val is not None else (train.subset(order[:n_val]) if n_val else None)
    rest = order[n_val:]
    if cfg.method == "fewshot":
        rest, unused = rest[: cfg.fewshot_replay], rest[cfg.fewshot_replay:]
    elif cfg.train_subset:
        rest, unused = rest[: cfg.train_subset], rest[cfg.train_subset:]
    else:
        unused = rest[:0]
    calib = train.subset(np.sort(unused[: cfg.gate_calibration])) if cfg.gate_calibration and len(unused) else None
    fo = rng.permutation(len(failures))
    keep_out = len(failures) >= 10 and cfg.resolved_selection(len(failures)) == "holdout"
    n_fval = int(round(cfg.val_fraction * len(failures))) if keep_out else 0
    val_f = failures.subset(np.sort(fo[:n_fval])) if n_fval else None
    dc_fit = failures.subset(np.sort(fo[n_fval:]))
    copies = cfg.failure_copies(len(rest), len(dc_fit))  # --dc-repeat, or more to reach --dc-share
    x = np.concatenate([train.x[rest], *[dc_fit.x] * copies])
    y = np.concatenate([train.y[rest], *[dc_fit.y] * copies])
    is_f = np.concatenate([np.zeros(len(rest), bool), np.ones(len(dc_fit) * copies, bool)])
    return Split(x, y, is_f, val_t, val_f, dc_fit, calib)


def _accuracy(model: nn.Module, ds: ImageSet | None, device, precision) -> float | None:
    if ds is None:
        return None
    return float((predict(model, ds.x, device=device, precision=precision) == ds.y).mean())


def validation_score(model: nn.Module, split: Split, device, precision) -> dict:
    """Accuracy on the held-back Dt and Dc images; the score is their mean."""
    a_t = _accuracy(model, split.val_train, device, precision)
    a_f = _accuracy(model, split.val_failures, device, precision)
    parts = [a for a in (a_t, a_f) if a is not None]
    return {"val_train_acc": a_t, "val_failures_acc": a_f,
            "val_score": float(np.mean(parts)) if parts else None}


def _break_rate(right0: np.ndarray, right: np.ndarray) -> float:
    """Share of the images right before that are wrong after."""
    return float((right0 & ~right).sum() / max(right0.sum(), 1))


def final_validation(model: nn.Module, split: Split, right0: np.ndarray | None, device, precision) -> dict:
    """The returned model on the validation split (after regression control): accuracy on the
    held-back Dt and Dc images, and the break rate on Dt (right before, wrong after). A recipe is
    chosen on these numbers only, never on De or the test set (benchmarks/results/SUMMARY.md)."""
    out = validation_score(model, split, device, precision)
    if right0 is not None:
        right = predict(model, split.val_train.x, device=device, precision=precision) == split.val_train.y
        out["val_break"] = _break_rate(right0, right)
    return out
