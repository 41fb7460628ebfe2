"""Repair by fine-tuning with style-guided augmentation (Algorithm 1) and the JSD loss."""

from __future__ import annotations

import copy
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from .. import distributed
from ..augment import StyleAug, StyleOps
from ..cluster import ReferenceSampler
from ..data import ImageSet
from ..engine import autocast, batches, predict, resolve_precision, to_float
from ..errors import DeepRepairError
from ..repair_config import METHODS, PRESETS, SELECTIONS, TUNES, RepairConfig  # noqa: F401  (re-exported)
from ..style import create_style
from ..train import crop_flip, load_run_state, save_run_state
from .losses import distill_loss, focal_weights, l2_pull, pseudo_label_loss
from .tuning import Tuning


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


def make_split(train: ImageSet, failures: ImageSet, cfg: RepairConfig) -> Split:
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(train))
    n_val = min(cfg.val_train, len(train) // 10)
    val_t = train.subset(order[:n_val]) if n_val else None
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
    reps = [dc_fit.x] * cfg.dc_repeat
    x = np.concatenate([train.x[rest], *reps]) if reps else train.x[rest]
    y = np.concatenate([train.y[rest], *[dc_fit.y] * cfg.dc_repeat])
    is_f = np.concatenate([np.zeros(len(rest), bool), np.ones(len(dc_fit) * cfg.dc_repeat, bool)])
    return Split(x, y, is_f, val_t, val_f, dc_fit, calib)


class OracleOps:
    """One op: the true corruption at a random severity (1-5), for the oracle upper bound."""

    def __init__(self, name: str):
        from ..corruptions import get_corruption

        get_corruption(name)
        self.name = name

    def __len__(self) -> int:
        return 1

    def __call__(self, x: torch.Tensor, group: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        from ..corruptions import corrupt

        u8 = (x * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
        sev = rng.integers(1, 6, len(u8))
        seed = int(rng.integers(2**31))
        for s in np.unique(sev):
            m = np.flatnonzero(sev == s)
            u8[m] = corrupt(u8[m], self.name, int(s), seed=seed)
        return to_float(torch.from_numpy(u8)).to(x.device)


def build_objective(cfg: RepairConfig, dc: ImageSet, n_examples: int, ctx) -> tuple[object, ReferenceSampler | None]:
    """The loss of the chosen method (``repair/methods.py``) and, for DeepRepair, its sampler."""
    from . import methods as M

    aug_kw = dict(width=cfg.width, severity=cfg.severity, alpha=cfg.aug_alpha)
    if cfg.method in ("finetune", "fewshot"):
        return M.Objective(ctx), None
    if cfg.method == "cutout":
        return M.Cutout(ctx), None
    if cfg.method == "mixup":
        return M.Mixup(ctx), None
    if cfg.method == "cutmix":
        return M.CutMix(ctx), None
    if cfg.method == "sensei":
        return M.Sensei(ctx, n_examples), None
    if cfg.method == "augmix":
        return M.JSDObjective(ctx, StyleAug(**aug_kw), cfg.jsd_weight), None
    if cfg.method == "oracle":
        return M.JSDObjective(ctx, StyleAug(OracleOps(cfg.oracle_corruption), **aug_kw), cfg.jsd_weight), None
    sampler = ReferenceSampler(cfg.sampling, cfg.clusters, cfg.seed, cfg.cluster_features).fit(dc.x, dc.y)
    refs = to_float(torch.from_numpy(np.ascontiguousarray(dc.x))).contiguous()
    ops = StyleOps(create_style(cfg.style, **cfg.style_options), refs, sampler, alpha=cfg.style_alpha)
    return M.JSDObjective(ctx, StyleAug(ops, **aug_kw), cfg.jsd_weight), sampler


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


def interpolate_weights(original: nn.Module, repaired: nn.Module, alpha: float) -> nn.Module:
    """theta = (1 - alpha) theta_original + alpha theta_repaired (floating tensors; integer
    buffers such as BN's batch counter come from the repaired model). 0 -> original, 1 -> repaired."""
    out = copy.deepcopy(repaired)
    so, sr = original.state_dict(), repaired.state_dict()
    if alpha == 0:
        out.load_state_dict(so)
        return out
    if alpha == 1:
        return out
    out.load_state_dict({k: (so[k] + alpha * (v - so[k])) if v.is_floating_point() else v for k, v in sr.items()})
    return out


def choose_interpolation(original: nn.Module, repaired: nn.Module, split: Split, max_break: float,
                         device, precision, grid: int = 11, right0: np.ndarray | None = None) -> tuple[nn.Module, dict]:
    """The largest validation repair over alpha in [0, 1] whose validation break rate (held-back
    Dt images right before, wrong after) is <= ``max_break``. Only Dt/Dc validation data is read.
    ``right0``: which validation images of Dt the original gets right, when already known."""
    if split.val_train is None:
        return repaired, {"alpha": 1.0, "reason": "no validation images of Dt"}
    if right0 is None:
        right0 = predict(original, split.val_train.x, device=device, precision=precision) == split.val_train.y
    rows = []
    for a in np.linspace(0, 1, grid):
        m = interpolate_weights(original, repaired, float(a))
        right = predict(m, split.val_train.x, device=device, precision=precision) == split.val_train.y
        brk = _break_rate(right0, right)
        fix = _accuracy(m, split.val_failures, device, precision)
        rows.append({"alpha": float(a), "val_break": brk, "val_failures_acc": fix,
                     "val_train_acc": float(right.mean())})
    ok = [r for r in rows if r["val_break"] <= max_break]
    key = (lambda r: (r["val_failures_acc"] or 0.0, r["alpha"])) if split.val_failures is not None else (lambda r: r["alpha"])
    best = max(ok, key=key) if ok else rows[0]
    return interpolate_weights(original, repaired, best["alpha"]), {"alpha": best["alpha"], "grid": rows,
                                                                     "max_break": max_break}


def resolve_config(config: RepairConfig | None, overrides: dict, n_train: int) -> RepairConfig:
    """A copy of ``config`` (default ``RepairConfig()``) with ``overrides``; a fractional
    ``train_subset`` (a preset's share, e.g. 0.8) becomes a number of the ``n_train`` images."""
    cfg = copy.deepcopy(config) if config else RepairConfig()
    for k, v in overrides.items():
        if not hasattr(cfg, k):
            raise DeepRepairError(f"unknown repair option {k!r}")
        setattr(cfg, k, v)
    if isinstance(cfg.train_subset, float):
        cfg.train_subset = int(cfg.train_subset * n_train)
    return cfg


def check_inputs(model: nn.Module, train: ImageSet, failures: ImageSet, cfg: RepairConfig,
                 field: np.ndarray | None) -> None:
    cfg.check(len(failures))
    if hasattr(model, "gate") and hasattr(model, "original"):
        raise DeepRepairError("this model is already a routed (gated) repair; repair its parent model "
                              "again with all the failures instead")
    if train.x.shape[1:] != failures.x.shape[1:]:
        raise DeepRepairError(f"failure images are {failures.x.shape[1:]} but training images are "
                              f"{train.x.shape[1:]} (H, W, C): resize the failures to the model's input size")
    if failures.num_classes != train.num_classes or int(failures.y.max()) >= train.num_classes:
        raise DeepRepairError("failure labels must use the training data's classes")
    if field is not None and (field.dtype != np.uint8 or field.shape[1:] != train.x.shape[1:] or not len(field)):
        raise DeepRepairError(f"field images must be a non-empty uint8 array of {train.x.shape[1:]} (H, W, C) "
                              f"images like the training data, got {field.dtype} {field.shape}")


def test_time_repair(model: nn.Module, failures: ImageSet, cfg: RepairConfig, device, precision) -> tuple[nn.Module, dict]:
    """``bn-adapt`` and ``tent``: label-free, on the failure images only."""
    from .testtime import bn_adapt, tent

    t0 = time.perf_counter()
    out = (bn_adapt(model, failures.x, device=device) if cfg.method == "bn-adapt"
           else tent(model, failures.x, steps=cfg.epochs, seed=cfg.seed, device=device))
    secs = time.perf_counter() - t0
    return out, {"config": asdict(cfg), "precision": precision, "history": [], "best_epoch": 0,
                 "finetune_images": len(failures), "failures_used": len(failures), "seconds": secs,
                 "img_per_s": len(failures) * max(cfg.epochs, 1) / secs if secs else None,
                 "aug_share": None, "clusters": None, "interpolation": None, "gate": None}


@dataclass
class FineTune:
    """The fine-tuning stage's outcome (and, saved after each epoch, its resumable state)."""

    history: list = field(default_factory=list)
    best_score: float | None = None
    best_epoch: int = 0
    epochs_done: int = 0
    seconds: float = 0.0
    best_state: dict | None = None


class Regularisers:
    """What keeps the repair close to the original: distillation on the training inputs (all, or
    focal: those the original gets right), distillation on unlabelled field images (or, with
    ``field_labels="self"``, the network's own confident answers on them as labels), and an L2
    pull to the original weights. The teacher is a frozen copy of the original model."""

    def __init__(self, model: nn.Module, cfg: RepairConfig, tuning: Tuning, field: np.ndarray | None, device,
                 precision):
        self.cfg, self.device, self.precision = cfg, device, precision
        teach_field = field is not None and cfg.field_labels == "original"
        self.teacher = copy.deepcopy(model).eval() if (cfg.distill > 0 or teach_field) else None
        self.strong = StyleAug() if field is not None and cfg.field_labels == "self" else None  # AugMix's chains
        self.anchors = [p.detach().clone() for p in tuning.params] if cfg.l2_pull > 0 else None
        self.params = tuning.params
        self.field = torch.from_numpy(np.ascontiguousarray(field)) if field is not None else None

    def _teacher(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), autocast(self.device, self.precision):
            return self.teacher(x.contiguous(memory_format=torch.channels_last)).float()

    def loss(self, model: nn.Module, extra: dict, y: torch.Tensor, is_failure: np.ndarray,
             gen: torch.Generator) -> tuple[torch.Tensor, dict]:
        cfg, total, parts = self.cfg, torch.zeros((), device=y.device), {}
        if cfg.distill > 0:  # on the (clean or augmented) training inputs, never on Dc
            keep = torch.from_numpy(~is_failure)
            if keep.any():
                t_logits = self._teacher(extra["inputs"][keep])
                w = focal_weights(t_logits, y[keep]) if cfg.distill_focus == "right" else None
                kd = distill_loss(extra["student"][keep], t_logits, cfg.distill_t, w)
                total, parts["distill"] = total + cfg.distill * kd, kd.item()
        if self.field is not None:  # unlabelled field images: the original's answers, and BN statistics
            pick = torch.randint(len(self.field), (min(cfg.field_batch, len(self.field)),), generator=gen)
            xf = to_float(crop_flip(self.field[pick], gen)).to(self.device)
            if self.strong is None:
                with autocast(self.device, self.precision):
                    s_logits = model(xf.contiguous(memory_format=torch.channels_last)).float()
                term = distill_loss(s_logits, self._teacher(xf), cfg.distill_t)
            else:  # FixMatch: the weak view (crop + flip) labels an AugMix view of the same image
                rng = np.random.default_rng(int(torch.randint(2**31, (1,), generator=gen)))
                xs = self.strong(xf, rng)
                with autocast(self.device, self.precision):
                    both = model(torch.cat([xf, xs]).contiguous(memory_format=torch.channels_last)).float()
                term, parts["field_kept"] = pseudo_label_loss(both[: len(xf)], both[len(xf):], cfg.field_threshold)
            total, parts["field"] = total + cfg.field_weight * term, term.item()
        if self.anchors is not None:
            pull = l2_pull(self.params, self.anchors)
            total, parts["l2"] = total + cfg.l2_pull * pull, pull.item()
        return total, parts


def fine_tune(model: nn.Module, split: Split, objective, tuning: Tuning, reg: Regularisers, cfg: RepairConfig,
              device, precision, state_path: Path | None, progress, select_last: bool,
              score_before: float | None) -> FineTune:
    """Algorithm 1's loop: SGD (Nesterov, per-step cosine) over the fine-tuning set for
    ``cfg.epochs``, scoring the validation split after each epoch, keeping the best state (or the
    last with ``select_last``), saving a resumable state after each epoch."""
    # foreach: one multi-tensor update for all parameters instead of a Python loop over them,
    # bit-identical to it (issue 34; fused=True is faster still but not bit-identical)
    opt = torch.optim.SGD(tuning.params, lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay, nesterov=True, foreach=True)
    n = len(split.x)
    per_epoch = math.ceil(n / cfg.batch_size)
    steps = per_epoch * cfg.epochs
    run = FineTune(best_score=score_before,
                   best_state={k: v.detach().clone() for k, v in model.state_dict().items()})
    if state_path is not None and state_path.exists():
        meta, best = load_run_state(state_path, model, opt)
        if meta["config"] != json.loads(json.dumps(asdict(cfg))):
            raise DeepRepairError(f"{state_path} belongs to a run with other settings; delete it or "
                                  "rerun with the same settings")
        run = FineTune(meta["history"], meta["best_score"], meta["best_epoch"], meta["epochs_done"],
                       meta["seconds"], best or run.best_state)
    xt = torch.from_numpy(np.ascontiguousarray(split.x))
    yt = torch.from_numpy(split.y)
    net = distributed.wrap(model)  # under torchrun: each rank runs the model on its slice of every batch
    if reg.teacher is not None:
        reg.teacher = distributed.wrap(reg.teacher)
    for epoch in range(run.epochs_done, cfg.epochs):
        if epoch - run.best_epoch > cfg.patience:
            break
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)
        rng = np.random.default_rng([cfg.seed, epoch])
        torch.manual_seed(cfg.seed * 7919 + epoch)
        order = torch.randperm(n, generator=gen)
        tuning.train(model)
        tot = {"loss": 0.0, "jsd": 0.0, "aug_s": 0.0}
        for i, s in enumerate(batches(n, cfg.batch_size)):
            idx = order[s]
            x = to_float(crop_flip(xt[idx], gen)).to(device)
            yb = yt[idx].to(device)
            for g in opt.param_groups:
                g["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * (epoch * per_epoch + i) / steps))
            loss, extra = objective.loss(net, x, yb, idx.numpy(), rng)
            extra_loss, _ = reg.loss(net, extra, yb, split.is_failure[idx.numpy()], gen)
            loss = loss + extra_loss
            tot["jsd"] += extra.get("jsd", 0.0) * len(idx)
            tot["aug_s"] += extra.get("aug_s", 0.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            distributed.average_gradients(tuning.params)
            opt.step()
            tot["loss"] += loss.item() * len(idx)
            if progress is not None:
                progress(len(idx))
        if not math.isfinite(tot["loss"]):
            raise DeepRepairError(f"repair diverged in epoch {epoch + 1}: lower the learning rate")
        val = validation_score(model, split, device, precision)
        row = {"epoch": epoch + 1, "loss": tot["loss"] / n, "jsd": tot["jsd"] / n,
               "seconds": time.perf_counter() - t0, "aug_seconds": tot["aug_s"], **val}
        run.seconds += row["seconds"]
        run.history.append(row)
        run.epochs_done = epoch + 1
        if select_last or val["val_score"] is None or run.best_score is None or val["val_score"] >= run.best_score:
            run.best_score, run.best_epoch = val["val_score"], epoch + 1
            run.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if state_path is not None and distributed.is_main():
            save_run_state(state_path, model, opt, {
                "config": asdict(cfg), "history": run.history, "best_score": run.best_score,
                "best_epoch": run.best_epoch, "epochs_done": run.epochs_done, "seconds": run.seconds},
                best=run.best_state)
    return run


def regression_control(original: nn.Module, model: nn.Module, split: Split, cfg: RepairConfig, device, precision,
                       clean_heldout: ImageSet | None, right0: np.ndarray | None = None
                       ) -> tuple[nn.Module, dict | None, dict | None]:
    """``--interpolate`` (WiSE-FT mix chosen on validation) and ``--gate`` (routed repair)."""
    interp = routing = None
    if cfg.interpolate:
        model, interp = choose_interpolation(original, model, split, cfg.max_break, device, precision, right0=right0)
    if cfg.gate:
        from .gate import fit_gate

        model, routing = fit_gate(original.to(memory_format=torch.contiguous_format), model, split,
                                  cfg.max_break, device, precision, features=cfg.gate_features,
                                  bound=cfg.gate_bound, clean_heldout=clean_heldout, router=cfg.gate_router,
                                  seed=cfg.seed, keep=cfg.gate_keep)
        if cfg.gate_calibration and split.calibration is None:
            routing["calibration_note"] = ("no training images were left out of fine-tuning (train_subset covers Dt), "
                                           "so the threshold was checked on the validation images only")
            warnings.warn(f"gate: {routing['calibration_note']}; lower --train-subset to calibrate on more", stacklevel=3)
        model.eval()
    return model, interp, routing


def repair(model: nn.Module, train: ImageSet, failures: ImageSet, config: RepairConfig | None = None, *,
           device: torch.device | None = None, state_path: str | Path | None = None,
           progress: Callable[[int], None] | None = None, clean_heldout: ImageSet | None = None,
           field: np.ndarray | None = None, **overrides) -> tuple[nn.Module, dict]:
    """Fine-tune a copy of ``model`` (a ``Classifier``, input [0, 1]) on a subset of ``train``
    plus the collected ``failures`` with the chosen method; return it and a report.

    The stages, in order: split (``make_split``) -> objective (``build_objective``) -> fine-tune
    (``fine_tune``, with the ``Regularisers``) -> select (best or last epoch) -> regression
    control (``regression_control``) -> report. Model selection and early stopping use a
    validation split of ``train`` and ``failures`` only. With ``state_path`` the run saves its
    state after each epoch and resumes from it. ``clean_heldout`` (with ``gate``): labelled clean
    images the original model was not trained on, never the test set. ``field``: unlabelled
    uint8 images from the deployment (never the images the repair is evaluated on): the repair is
    distilled from the original on them and BatchNorm sees them.
    """
    cfg = resolve_config(config, overrides, len(train))
    check_inputs(model, train, failures, cfg, field)
    device = device or next(model.parameters()).device
    precision = resolve_precision(cfg.precision, device)
    if cfg.method in ("bn-adapt", "tent"):
        return test_time_repair(model, failures, cfg, device, precision)
    select_last = cfg.resolved_selection(len(failures)) == "last"
    model = copy.deepcopy(model).to(device).to(memory_format=torch.channels_last)
    original = copy.deepcopy(model).eval() if cfg.interpolate or cfg.gate else None
    split = make_split(train, failures, cfg)
    objective, sampler = build_objective(cfg, split.dc_fit, len(split.x), lambda: autocast(device, precision))
    tuning = Tuning(model, cfg.tune, train.x.shape[1:])
    reg = Regularisers(model, cfg, tuning, field, device, precision)
    before = validation_score(model, split, device, precision)
    right0 = (predict(model, split.val_train.x, device=device, precision=precision) == split.val_train.y
              if split.val_train is not None else None)
    run = fine_tune(model, split, objective, tuning, reg, cfg, device, precision,
                    Path(state_path) if state_path else None, progress, select_last, before["val_score"])
    model.load_state_dict(run.best_state)
    model.to(memory_format=torch.contiguous_format).eval()
    interp = routing = None
    if run.best_epoch:
        model, interp, routing = regression_control(original, model, split, cfg, device, precision, clean_heldout,
                                                    right0)
    images = len(split.x) * len(run.history)
    report = {
        "config": asdict(cfg), "precision": precision, "history": run.history, "best_epoch": run.best_epoch,
        "selection": "last" if select_last else "holdout", "validation_before": before,
        "validation_after": run.history[run.best_epoch - 1] if run.best_epoch else before,
        "validation_final": final_validation(model, split, right0, device, precision),
        "finetune_images": len(split.x), "failures_used": len(split.dc_fit),
        "failures_validation": len(split.val_failures) if split.val_failures is not None else 0,
        "field_images": 0 if field is None else len(field),
        "tuned_parameters": tuning.count(), "tuned_modules": len(tuning.modules),
        "seconds": run.seconds, "img_per_s": images / run.seconds if run.seconds else None,
        "aug_share": (sum(h["aug_seconds"] for h in run.history) / run.seconds) if run.seconds else None,
        "clusters": [len(g[0]) for g in sampler.groups] if sampler is not None else None,
        "interpolation": interp, "gate": routing,
    }
    return model, report
