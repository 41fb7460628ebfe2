"""Protection: what keeps a repair from breaking what the original got right, after fine-tuning.

The stages, in the order ``repair()`` runs them (docs/repair.md, "Protection"):

1. **Averaging** (``core.average_runs`` trains, ``combine_runs`` averages): K repairs trained
   from the original with different seeds are averaged weight by weight (a uniform model soup,
   Wortsman et al. 2022). Flips between two
   networks come largely from run-to-run variance (Zhao et al. 2022, ELODI), and the average of
   K runs keeps the repair the runs share while their individual flips cancel. If the average
   scores below the best run on validation, the BatchNorm statistics of the layers the runs
   tuned are recomputed on the fine-tuning images (``recalibrate_bn``) and the better of the two
   is kept.
2. **The certified mix** (``certified_mix``): theta = (1 - a) theta_original + a theta_repaired
   (WiSE-FT, Wortsman et al. 2022), for a = 0, 1/N, ..., 1 walked upward from 0 (N =
   ``mix_steps``, 20 in the default). For each mix the
   break rate on the calibration images (never trained on, never evaluated on) is bounded by the
   exact one-sided Clopper-Pearson upper bound (``bounds.clopper_pearson_upper``); the walk
   stops at the first mix whose bound exceeds the limit (fixed-sequence testing, as in
   Learn-then-Test, Angelopoulos et al. 2021, so the chosen mix's statement holds with the stated
   confidence although several mixes were looked at), and among the mixes it passed the one with
   the largest validation repair is kept. If none above 0 passes, the original comes back.
   ``mix_path="fisher"`` walks another path with the same ends (``fisher_mix``): each weight
   mixed in proportion to its diagonal Fisher information under each network (Fisher merging,
   Matena & Raffel 2022, as BCWI's importance-weighted interpolation, Schumann et al. 2023). It
   repaired less than the linear path within the same limit (SUMMARY section 5), so it is not
   the default.
3. **The field check** (``field_check``): with labelled field photos, the chosen network must not
   be worse there: the exact McNemar lower bound on its paired accuracy change
   (``bounds.paired_change_lower``) must be >= 0, else the original comes back ("no repair
   helped on your field photos").

``point`` (``mix_bound="point"``) is the point estimate the weight mix used before the bound: the
break rate itself held to the limit. It stays for the recipes measured with it.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..bounds import clopper_pearson_min_n, clopper_pearson_upper, paired_change_lower
from ..data import ImageSet
from ..engine import predict, to_float
from ..errors import DeepRepairError
from ..repair_config import RepairConfig
from .split import Split, final_validation, validation_score
from .tuning import tuned_modules

MIX_STEPS = 10  # mixes a = 0, 0.1, ..., 1 unless the recipe says otherwise (RepairConfig.mix_steps)


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


def fisher_diag(model: nn.Module, x: np.ndarray, y: np.ndarray, device, *, images: int = 1024, batch: int = 128,
                seed: int = 0) -> dict:
    """The diagonal empirical Fisher information of ``model`` (eval mode: BatchNorm's running
    statistics) on up to ``images`` of (x, y): the mean over images of each parameter's squared
    gradient of the cross-entropy at its label. Per-image gradients in one batched pass
    (``torch.func.vmap`` of ``grad``), in fp32."""
    from torch.func import functional_call, grad, vmap

    model = model.eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss(p, xi, yi):
        return F.cross_entropy(functional_call(model, (p, buffers), (xi[None],)), yi[None])

    per_image = vmap(grad(loss), in_dims=(None, 0, 0))
    pick = np.sort(np.random.default_rng(seed).permutation(len(x))[:images])
    fisher = {k: torch.zeros_like(v) for k, v in params.items()}
    for i in range(0, len(pick), batch):
        j = pick[i:i + batch]
        xb = to_float(torch.from_numpy(np.ascontiguousarray(x[j]))).to(device)
        try:
            grads = per_image(params, xb, torch.from_numpy(np.asarray(y[j], dtype=np.int64)).to(device))
        except (RuntimeError, NotImplementedError) as exc:  # e.g. a TorchScript module: no torch.func
            msg = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
            raise DeepRepairError(f"--mix-path fisher needs per-image gradients of the model (torch.func), which "
                                  f"this model does not support ({msg}): use --mix-path linear") from None
        for k in fisher:
            fisher[k] += grads[k].pow(2).sum(0)
    return {k: v / max(len(pick), 1) for k, v in fisher.items()}


def fisher_mix(original: nn.Module, repaired: nn.Module, f_original: dict, f_repaired: dict, alpha: float,
               floor: float = 1e-8) -> nn.Module:
    """theta = ((1 - a) F_o theta_o + a F_r theta_r) / ((1 - a) F_o + a F_r), weight by weight (F: the
    diagonal Fisher of each network, ``fisher_diag``, plus ``floor``); buffers (BatchNorm's
    statistics) mix linearly. a = 0 is the original, a = 1 the repaired network."""
    out = interpolate_weights(original, repaired, alpha)  # the ends exactly; buffers: the linear mix
    if alpha in (0, 1):
        return out
    so, sr, state = original.state_dict(), repaired.state_dict(), out.state_dict()
    for k in f_original:
        wo, wr = (1 - alpha) * (f_original[k] + floor), alpha * (f_repaired[k] + floor)
        state[k].copy_((wo * so[k].float() + wr * sr[k].float()) / (wo + wr))
    return out


def mix_path(original: nn.Module, repaired: nn.Module, split: Split, cfg: RepairConfig, device):
    """The path the certified walk takes from the original (a = 0) to the repaired network (a =
    1): ``interpolate_weights`` (linear) or ``fisher_mix`` with each network's Fisher on its own
    fine-tuning images (the original's: the training images; the repair's: those and Dc)."""
    if cfg.mix_path == "linear":
        return lambda a: interpolate_weights(original, repaired, a)
    keep = ~split.is_failure
    f_o = fisher_diag(original, split.x[keep], split.y[keep], device, seed=cfg.seed)
    f_r = fisher_diag(repaired, split.x, split.y, device, seed=cfg.seed + 1)
    return lambda a: fisher_mix(original, repaired, f_o, f_r, a)


def average_states(states: list[dict]) -> dict:
    """The uniform average of K state dicts of one architecture (floating tensors averaged,
    integer buffers from the first)."""
    first = states[0]
    return {k: (torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype) if v.is_floating_point() else v)
            for k, v in first.items()}


@torch.no_grad()
def recalibrate_bn(model: nn.Module, x: np.ndarray, device, batch: int = 256, max_images: int = 4096,
                   seed: int = 0, only: set[str] | None = None) -> nn.Module:
    """Recompute BatchNorm's running statistics (cumulative average) on up to ``max_images`` of
    ``x`` (uint8 NHWC), the rest of the network unchanged; ``only``: the names of the BatchNorm
    layers to recompute (the fine-tuned ones; default all), the others kept as they are. Returns
    the model in eval mode."""
    bns = [m for n, m in model.named_modules()
           if isinstance(m, nn.modules.batchnorm._BatchNorm) and (only is None or n in only)]
    if not bns:
        return model.eval()
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the batches below
    pick = np.sort(np.random.default_rng(seed).permutation(len(x))[:max_images])
    model.eval()
    for m in bns:
        m.train()
    for i in range(0, len(pick), batch):
        xb = to_float(torch.from_numpy(np.ascontiguousarray(x[pick[i:i + batch]]))).to(device)
        model(xb.contiguous(memory_format=torch.channels_last))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    return model.eval()


def calibration_check(right0: np.ndarray, max_break: float, confidence: float, what: str) -> None:
    """Refuse a calibration set too small for the bound ever to reach the limit."""
    need = clopper_pearson_min_n(max_break, confidence)
    have = int(np.sum(right0))
    if have < need:
        raise DeepRepairError(
            f"{what} has {have} images the model gets right; a break limit of {max_break:.2%} at "
            f"{confidence:.0%} confidence needs at least {need} (with no break at all, more for any): "
            f"give --val with more labelled images the model never trained on, or raise --max-break")


def certified_mix(original: nn.Module, repaired: nn.Module, calib: ImageSet, right0: np.ndarray,
                  val_failures: ImageSet | None, max_break: float, *, confidence: float = 0.95,
                  bound: str = "clopper-pearson", device, precision, steps: int = MIX_STEPS,
                  path=None) -> tuple[nn.Module, dict]:
    """The mix of original and repaired weights with the largest validation repair whose
    calibration break rate is certified <= ``max_break`` (module docstring); the original when no
    mix above 0 is. ``right0``: which calibration images the original gets right. The mixes
    a = 0, 1/steps, ..., 1 are walked upward and the walk stops at the first that fails (no later
    mix can count under fixed-sequence testing, so none is computed); ``grid`` lists the mixes
    walked, the failing one last. ``path(a)``: the network at mix a (default: the linear mix,
    ``interpolate_weights``)."""
    path = path or (lambda a: interpolate_weights(original, repaired, a))
    n = int(right0.sum())
    rows = []
    for i in range(steps + 1):
        a = i / steps
        m = path(a)
        right = right0 if a == 0 else predict(m, calib.x, device=device, precision=precision) == calib.y
        k = int((right0 & ~right).sum())
        ub = clopper_pearson_upper(k, n, confidence) if a > 0 else 0.0
        fix = (float((predict(m, val_failures.x, device=device, precision=precision) == val_failures.y).mean())
               if val_failures is not None else None)
        ok = (k / max(n, 1) if bound == "point" else ub) <= max_break
        rows.append({"alpha": a, "breaks": k, "right_before": n, "val_break": k / max(n, 1),
                     "break_bound": float(ub), "val_failures_acc": fix, "val_train_acc": float(right.mean()),
                     "passed": bool(ok)})
        if not ok:  # fixed-sequence: a mix counts only if every smaller one passed too
            break
    ok = [r for r in rows if r["passed"]]
    key = (lambda r: (r["val_failures_acc"], r["alpha"])) if val_failures is not None else (lambda r: r["alpha"])
    best = max(ok, key=key)
    info = {"alpha": best["alpha"], "grid": rows, "steps": steps, "max_break": max_break, "confidence": confidence,
            "bound": bound, "calibration_images": len(calib), "calibration_right": n,
            "break_bound": best["break_bound"], "kept_original": best["alpha"] == 0}
    return path(best["alpha"]), info


def field_check(original: nn.Module, chosen: nn.Module, field: ImageSet, *, confidence: float = 0.95,
                device, precision) -> dict:
    """The chosen network against the original on labelled field photos: accuracy before and
    after, and the exact one-sided lower bound on the paired change; ``passed`` when that bound
    is >= 0 (not worse, with the given confidence)."""
    rb = predict(original, field.x, device=device, precision=precision) == field.y
    ra = predict(chosen, field.x, device=device, precision=precision) == field.y
    low = paired_change_lower(rb, ra, confidence)
    return {"images": len(field), "before": float(rb.mean()), "after": float(ra.mean()),
            "won": int((~rb & ra).sum()), "lost": int((rb & ~ra).sum()), "change_lower_bound": low,
            "confidence": confidence, "passed": bool(low >= 0)}


def regression_control(original: nn.Module, model: nn.Module, split: Split, cfg: RepairConfig, device, precision,
                       clean_heldout: ImageSet | None, right0: np.ndarray | None = None
                       ) -> tuple[nn.Module, dict | None, dict | None]:
    """Protection after training: ``--interpolate`` (``certified_mix``) and ``--gate`` (routed
    repair, gate.py); returns the network and what each did (None where it was off)."""
    interp = routing = None
    if cfg.interpolate and split.val_train is None:
        interp = {"alpha": 1.0, "reason": "no validation images of Dt"}
    elif cfg.interpolate:
        if right0 is None:
            right0 = predict(original, split.val_train.x, device=device, precision=precision) == split.val_train.y
        model, interp = certified_mix(original, model, split.val_train, right0, split.val_failures, cfg.max_break,
                                      confidence=cfg.confidence, bound=cfg.mix_bound, device=device,
                                      precision=precision, steps=cfg.mix_steps,
                                      path=mix_path(original, model, split, cfg, device))
        interp["path"] = cfg.mix_path
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


def combine_runs(model: nn.Module, runs: list, split: Split, cfg: RepairConfig, device, precision) -> dict | None:
    """Load into ``model`` the uniform weight average of the runs that moved off the original
    (their selected states), recomputing BatchNorm's statistics on the fine-tuning images when
    the average scores below the best run on validation and that helps (``cfg.average_bn``
    "recompute"; "kept" keeps the averaged statistics); what it did (None for one run)."""
    chosen = [r for r in runs if r.best_epoch]  # runs that kept the original (epoch 0) add nothing
    if len(runs) == 1 or not chosen:
        model.load_state_dict((chosen or runs)[0].best_state)
        return None if len(runs) == 1 else {"runs": len(runs), "averaged": 0}
    model.load_state_dict(average_states([r.best_state for r in chosen]))
    model.eval()
    score = validation_score(model, split, device, precision)["val_score"]
    scores = [r.best_score for r in chosen if r.best_score is not None]  # None: nothing held out to score on
    best_single = max(scores) if scores else None
    info = {"runs": len(runs), "averaged": len(chosen), "val_scores": [r.best_score for r in runs],
            "val_score_average": score, "bn_recomputed": False}
    if cfg.average_bn == "recompute" and score is not None and best_single is not None and score < best_single:
        averaged = {k: v.detach().clone() for k, v in model.state_dict().items()}
        # only the norms the runs tuned: a frozen layer's statistics stay the original's (repair/tuning.py)
        recalibrate_bn(model, split.x, device, seed=cfg.seed, only=set(tuned_modules(model, cfg.tune, split.x.shape[1:])))
        rescore = validation_score(model, split, device, precision)["val_score"]
        if rescore > score:
            info.update(bn_recomputed=True, val_score_average=rescore)
        else:
            model.load_state_dict(averaged)
    return info


def protected_variant(pristine: nn.Module, original: nn.Module, runs: list, split: Split, cfg: RepairConfig, device,
                      precision, clean_heldout, right0, k: int, max_break: float,
                      path: str | None = None) -> tuple[nn.Module, dict]:
    """The network the same protection makes of the first ``k`` runs at the limit ``max_break``
    (and along the mix ``path``, default the recipe's)."""
    net = copy.deepcopy(pristine)
    info = combine_runs(net, runs[:k], split, cfg, device, precision)
    net.to(memory_format=torch.contiguous_format).eval()
    if not any(r.best_epoch for r in runs[:k]):
        return net, {"alpha": 0.0, "averaging": info}
    net, mix, _ = regression_control(original, net, split,
                                     dataclasses.replace(cfg, max_break=max_break, mix_path=path or cfg.mix_path),
                                     device, precision, clean_heldout, right0)
    return net, {"alpha": (mix or {}).get("alpha"), "averaging": info,
                 "validation_final": final_validation(net, split, right0, device, precision)}


def kept_original(interp: dict | None, checked: dict | None, runs: list) -> str | None:
    """Why the original comes back unchanged, in words (None when a repair is returned)."""
    if checked is not None and not checked["passed"]:
        return "no repair helped on your field photos; the original is kept"
    if not any(r.best_epoch for r in runs):
        return "no epoch scored above the original on validation; the original is kept"
    if interp is not None and interp.get("kept_original"):
        return (f"no mix of the repair keeps the break rate <= {interp['max_break']:.2%} with "
                f"{interp['confidence']:.0%} confidence on the validation images; the original is kept")
    return None
