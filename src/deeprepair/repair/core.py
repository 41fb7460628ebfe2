"""Repair by fine-tuning with style-guided augmentation (Algorithm 1) and the JSD loss."""

from __future__ import annotations

import copy
import dataclasses
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import distributed
from ..augment import StyleAug
from ..cluster import ReferenceSampler
from ..data import ImageSet
from ..engine import autocast, predict, resolve_precision, to_float
from ..errors import DeepRepairError
from ..repair_config import PRESETS, SELECTIONS, TUNES, RepairConfig  # noqa: F401  (re-exported)
from ..train import crop_flip, resume_run, save_run_state, schedule_lr, sgd_epoch
from .losses import distill_loss, focal_weights, l2_pull, pseudo_label_loss
from .protection import (calibration_check, combine_runs, field_check, interpolate_weights,  # noqa: F401
                         kept_original, protected_variant, regression_control)
from .split import Split, final_validation, make_split, validation_score  # noqa: F401  (re-exported)
from .tuning import Tuning


def build_objective(cfg: RepairConfig, dc: ImageSet, n_examples: int, ctx) -> tuple[object, ReferenceSampler | None]:
    """The loss of the chosen method and, for DeepRepair, its sampler (the method registry,
    ``repair/methods.py``)."""
    from .methods import get_method

    return get_method(cfg.method).build(cfg, dc, n_examples, ctx)


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
                 field: np.ndarray | None, val: ImageSet | None = None, field_eval: ImageSet | None = None) -> None:
    from .methods import get_method

    cfg.check(len(failures))
    get_method(cfg.method)  # an unknown name: one line listing the registered ones
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
    for name, ds in (("val", val), ("field_eval", field_eval)):
        if ds is not None and (ds.x.shape[1:] != train.x.shape[1:] or int(ds.y.max(initial=0)) >= train.num_classes
                               or not len(ds)):
            raise DeepRepairError(f"{name} must be a non-empty labelled set of {train.x.shape[1:]} (H, W, C) images "
                                  f"with the training data's {train.num_classes} classes")


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
        self.ensemble: list[nn.Module] = []  # with combine="distill": the K runs the repair is distilled toward

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
        if self.ensemble:  # ELODI-style: toward the K runs' mean softened output, on every input
            t = cfg.distill_t
            with torch.no_grad(), autocast(self.device, self.precision):
                xin = extra["inputs"].contiguous(memory_format=torch.channels_last)
                mean_p = torch.stack([F.softmax(m(xin).float() / t, 1) for m in self.ensemble]).mean(0)
            kd = distill_loss(extra["student"], t * mean_p.clamp_min(1e-8).log(), t)
            total, parts["ensemble"] = total + kd, kd.item()
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
    # bit-identical to it (fused=True is faster still but not bit-identical)
    opt = torch.optim.SGD(tuning.params, lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay, nesterov=True, foreach=True)
    n = len(split.x)
    run = FineTune(best_score=score_before,
                   best_state={k: v.detach().clone() for k, v in model.state_dict().items()})
    resumed = resume_run(state_path, model, opt, cfg)  # fields added since a state was saved: their defaults
    if resumed is not None:
        meta, best = resumed
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
        tuning.train(model)

        def step_loss(x, yb, idx):
            loss, extra = objective.loss(net, x, yb, idx.numpy(), rng)
            extra_loss, _ = reg.loss(net, extra, yb, split.is_failure[idx.numpy()], gen)
            return loss + extra_loss, {"jsd": extra.get("jsd", 0.0) * len(idx), "aug_s": extra.get("aug_s", 0.0)}

        tot = sgd_epoch(opt, xt, yt, batch_size=cfg.batch_size, epoch=epoch, epochs=cfg.epochs,
                        lr=lambda step, total: schedule_lr(cfg.lr, step, total), gen=gen, step_loss=step_loss,
                        device=device, progress=progress)
        tot.setdefault("jsd", 0.0)
        tot.setdefault("aug_s", 0.0)
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


def run_state_paths(state_path: Path, cfg: RepairConfig) -> list[Path]:
    """The resumable state of each run a repair with ``cfg`` makes (``cfg.runs_trained()``): the
    first at ``state_path``, then ``.run1`` ... beside it, and ``.distilled`` last."""
    extra = [f"run{k}" for k in range(1, cfg.average)] + ["distilled"] * (cfg.runs_trained() > cfg.average)
    return [state_path] + [state_path.with_name(f"{state_path.stem}.{e}{state_path.suffix}") for e in extra]


def average_runs(model: nn.Module, split: Split, objective, cfg: RepairConfig, field, device, precision,
                 state_path: Path | None, progress, select_last: bool, before: dict) -> tuple[list, dict]:
    """Fine-tune ``cfg.average`` copies of ``model`` with seeds seed, seed + 1, ... on the same
    split (protection.py, "Averaging"); ``model`` itself is left as it was. Returns the runs'
    outcomes and what was tuned."""
    runs, tuned = [], None
    for k in range(cfg.average):
        net = copy.deepcopy(model)
        run_cfg = cfg if k == 0 else dataclasses.replace(cfg, seed=cfg.seed + k)
        tuning = Tuning(net, cfg.tune, split.x.shape[1:])
        tuned = tuned or {"tuned_parameters": tuning.count(), "tuned_modules": len(tuning.modules)}
        reg = Regularisers(net, cfg, tuning, field, device, precision)
        path = None if state_path is None else run_state_paths(state_path, cfg)[k]
        runs.append(fine_tune(net, split, objective, tuning, reg, run_cfg, device, precision, path, progress,
                              select_last, before["val_score"]))
        del net, reg
    return runs, tuned


def distill_runs(model: nn.Module, runs: list, split: Split, objective, cfg: RepairConfig, field, device, precision,
                 state_path: Path | None, progress, select_last: bool, before: dict) -> FineTune:
    """``combine="distill"`` (ELODI-style, Zhao et al. 2022): one more run from the original, with
    seed seed + K and the recipe's own loss and protections, also distilled toward the mean
    softened output of the K runs (their selected states) on every input; ``model`` is left as
    it was. Returns that run."""
    ensemble = []
    for r in runs:
        net = copy.deepcopy(model)
        net.load_state_dict(r.best_state)
        ensemble.append(net.eval())
    net = copy.deepcopy(model)
    tuning = Tuning(net, cfg.tune, split.x.shape[1:])
    reg = Regularisers(net, cfg, tuning, field, device, precision)
    reg.ensemble = ensemble
    path = None if state_path is None else run_state_paths(state_path, cfg)[-1]
    return fine_tune(net, split, objective, tuning, reg, dataclasses.replace(cfg, seed=cfg.seed + len(runs)), device,
                     precision, path, progress, select_last, before["val_score"])


def repair(model: nn.Module, train: ImageSet, failures: ImageSet, config: RepairConfig | None = None, *,
           device: torch.device | None = None, state_path: str | Path | None = None,
           progress: Callable[[int], None] | None = None, clean_heldout: ImageSet | None = None,
           field: np.ndarray | None = None, val: ImageSet | None = None, field_eval: ImageSet | None = None,
           keep_runs: bool = False, **overrides) -> tuple[nn.Module, dict]:
    """Fine-tune a copy of ``model`` (a ``Classifier``, input [0, 1]) on a subset of ``train``
    plus the collected ``failures`` with the chosen method; return it and a report.

    The stages, in order: split (``make_split``) -> objective (``build_objective``) -> fine-tune
    (``fine_tune``, with the ``Regularisers``; ``cfg.average`` runs, averaged: ``average_runs``, or
    distilled into one more: ``distill_runs``)
    -> select (best or last epoch) -> protection (``regression_control``: the certified mix, the
    gate; then the field check) -> report. Model selection and early stopping use a validation
    split of ``train`` and ``failures`` only. With ``state_path`` the run saves its state after
    each epoch and resumes from it.

    ``val``: labelled images the model never trained on (held out by ``train``, or the user's
    own): the break limit is certified on them. Without it the limit is checked on 1,000 held-back
    training images, which the original has memorised, so it is optimistic (the report says so).
    ``clean_heldout`` (with ``gate``): labelled clean images the original model was not trained
    on, never the test set. ``field``: unlabelled uint8 images from the deployment (never the
    images the repair is evaluated on): the repair is distilled from the original on them and
    BatchNorm sees them. ``field_eval``: labelled field photos (never evaluated on): the repaired
    network must not be worse on them by an exact one-sided bound, else the original is returned.
    ``keep_runs`` (Python only, for studies): the report's ``_variant(k, max_break)`` gives the
    network the same protection makes of the first k runs at another limit.
    """
    cfg = resolve_config(config, overrides, len(train))
    check_inputs(model, train, failures, cfg, field, val=val, field_eval=field_eval)
    device = device or next(model.parameters()).device
    precision = resolve_precision(cfg.precision, device)
    if cfg.method in ("bn-adapt", "tent"):
        return test_time_repair(model, failures, cfg, device, precision)
    select_last = cfg.resolved_selection(len(failures)) == "last"
    model = copy.deepcopy(model).to(device).to(memory_format=torch.channels_last)
    original = copy.deepcopy(model).eval() if cfg.interpolate or cfg.gate or field_eval is not None else None
    split = make_split(train, failures, cfg, val)
    right0 = (predict(model, split.val_train.x, device=device, precision=precision) == split.val_train.y
              if split.val_train is not None else None)
    calibration = calibration_source(split, right0, cfg, given=val is not None)
    objective, sampler = build_objective(cfg, split.dc_fit, len(split.x), lambda: autocast(device, precision))
    before = validation_score(model, split, device, precision)
    runs, tuned = average_runs(model, split, objective, cfg, field, device, precision,
                               Path(state_path) if state_path else None, progress, select_last, before)
    run = runs[0]
    pristine = copy.deepcopy(model) if keep_runs else None
    if cfg.combine == "distill" and len(runs) > 1 and any(r.best_epoch for r in runs):
        student = distill_runs(model, [r for r in runs if r.best_epoch], split, objective, cfg, field, device,
                               precision, Path(state_path) if state_path else None, progress, select_last, before)
        averaging = combine_runs(model, [student], split, cfg, device, precision) or {
            "runs": len(runs), "combined": "distill", "val_scores": [r.best_score for r in runs],
            "val_score_distilled": student.best_score}
        runs = [*runs, student]
    else:
        averaging = combine_runs(model, runs, split, cfg, device, precision)
    model.to(memory_format=torch.contiguous_format).eval()
    interp = routing = checked = None
    if any(r.best_epoch for r in runs):
        model, interp, routing = regression_control(original, model, split, cfg, device, precision, clean_heldout,
                                                    right0)
    if field_eval is not None:
        checked = field_check(original, model, field_eval, confidence=cfg.confidence, device=device,
                              precision=precision)
        if not checked["passed"]:
            model = copy.deepcopy(original).to(memory_format=torch.contiguous_format).eval()
    seconds = sum(r.seconds for r in runs)
    images = len(split.x) * sum(len(r.history) for r in runs)
    report = {
        "config": asdict(cfg), "precision": precision, "history": run.history, "best_epoch": run.best_epoch,
        "selection": "last" if select_last else "holdout", "validation_before": before,
        "validation_after": run.history[run.best_epoch - 1] if run.best_epoch else before,
        "validation_final": final_validation(model, split, right0, device, precision),
        "finetune_images": len(split.x), "failures_used": len(split.dc_fit),
        "failure_copies": int(split.is_failure.sum()) // max(len(split.dc_fit), 1),
        "failures_validation": len(split.val_failures) if split.val_failures is not None else 0,
        "field_images": 0 if field is None else len(field),
        **tuned, "seconds": seconds, "img_per_s": images / seconds if seconds else None,
        "aug_share": (sum(h["aug_seconds"] for r in runs for h in r.history) / seconds) if seconds else None,
        "clusters": [len(g[0]) for g in sampler.groups] if sampler is not None else None,
        "interpolation": interp, "gate": routing, "averaging": averaging, "calibration": calibration,
        "field_check": checked, "kept_original": kept_original(interp, checked, runs),
    }
    if keep_runs:  # Python only (bench): the same protection over the first k runs at another limit
        report["_variant"] = partial(protected_variant, pristine, original, runs, split, cfg, device, precision, clean_heldout,
                                     right0)
    return model, report


def calibration_source(split: Split, right0: np.ndarray | None, cfg: RepairConfig, given: bool) -> dict:
    """Where the break limit is checked, in the report: ``--val`` (given) or held-back training
    images, which the model has seen (a warning says the limit is then optimistic); a set too
    small for the bound ever to reach the limit is refused with the size it needs."""
    out = {"source": "val" if given else "training images",
           "images": len(split.val_train) if split.val_train is not None else 0}
    if cfg.interpolate and cfg.mix_bound == "clopper-pearson" and right0 is not None:  # refused: no warning first
        calibration_check(right0, cfg.max_break, cfg.confidence,
                          "the validation set" if given else "the held-back training images")
    if not given and cfg.interpolate and right0 is not None:
        out["note"] = ("the break limit was checked on training images the model has seen, so it is optimistic: "
                       "give labelled images it never trained on (--val, or a model whose training held a "
                       "validation split out) for a limit that holds on new images")
        warnings.warn(out["note"], stacklevel=3)
    return out
