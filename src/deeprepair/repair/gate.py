"""Routed repair: send inputs that look like the collected failures to the repaired model and
everything else to the original one, so that clean images keep their original predictions.

The router is fitted to tell the fine-tuning images of Dt from the collected failures Dc
(class-balanced), on one of three descriptors:

- ``deep``: what the original model sees, its penultimate features (the input of its last
  ``nn.Linear``, when it has one), its logits, their entropy and maximum;
- ``style``: the wavelet style descriptor (``style_features``: per band and channel log
  energies, the residual's mean and std);
- ``deep+style``: both.

and is either ``linear`` (logistic regression; with ``style`` on the descriptor and its squares)
or ``mlp`` (one hidden layer of 128 ReLU units). ``mlp`` on ``deep+style`` keeps more of the
repair at the same break limit (benchmarks/results/retired/gate_routers.md, made by a script
retired since; docs/repair.md, Regression control).

Its threshold is chosen on the validation split of Dt and Dc (never De or the test set) like
the interpolation coefficient: the largest validation repair whose validation break rate stays
<= ``max_break``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from ..bounds import wilson_interval
from ..data import ImageSet
from ..engine import autocast, batches, predict, to_float
from ..models.checkpoint import register_checkpoint_kind
from ..repair_config import GATE_BOUNDS, GATE_FEATURES, GATE_ROUTERS
from ..style.wavelet import style_features


def _head(model: nn.Module) -> nn.Linear | None:
    """The model's last ``nn.Linear`` (its classifier head), if any."""
    lins = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return lins[-1] if lins else None


def original_with_features(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``model(x)`` and the ``deep`` descriptor: [penultimate features, logits, entropy, max logit]."""
    head, seen = _head(model), []
    hook = head.register_forward_pre_hook(lambda m, i: seen.append(i[0])) if head is not None else None
    try:
        logits = model(x)
    finally:
        if hook is not None:
            hook.remove()
    lf = logits.float()
    logp = torch.log_softmax(lf, 1)
    parts = [seen[0].flatten(1).float()] if seen else []
    parts += [lf, -(logp.exp() * logp).sum(1, keepdim=True), lf.max(1, keepdim=True).values]
    return logits, torch.cat(parts, 1)


def style_descriptor(x: torch.Tensor, levels: int = 3) -> torch.Tensor:
    """The ``style`` descriptor of float NCHW images, in float32 whatever the autocast."""
    with torch.autocast(x.device.type, enabled=False):
        return style_features(x.float(), levels)


class LinearGate(nn.Module):
    """``w . phi((f - mu) / sd) + b`` on a descriptor ``f``; ``phi`` appends the squares when
    ``squares`` (so that one gate can flag deviations in both directions: blur lowers the
    fine-band energy, noise raises it)."""

    def __init__(self, n_features: int, squares: bool = False):
        super().__init__()
        self.squares = squares
        self.register_buffer("mu", torch.zeros(n_features))
        self.register_buffer("sd", torch.ones(n_features))
        self.linear = nn.Linear(2 * n_features if squares else n_features, 1)

    def _phi(self, f: torch.Tensor) -> torch.Tensor:
        z = (f.float() - self.mu) / self.sd
        return torch.cat([z, z * z], 1) if self.squares else z

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        with torch.autocast(f.device.type, enabled=False):  # the threshold was set on float32 scores
            return self.linear(self._phi(f)).squeeze(1)

    @torch.no_grad()
    def fit(self, clean: torch.Tensor, failures: torch.Tensor, l2: float = 1e-3, steps: int = 200) -> LinearGate:
        """Class-balanced L2-regularised logistic regression (L-BFGS): failures 1, clean 0."""
        f = torch.cat([clean, failures]).float()
        self.mu.copy_(f.mean(0))
        self.sd.copy_(f.std(0).clamp_min(1e-6))
        z = self._phi(f)
        t = torch.cat([torch.zeros(len(clean)), torch.ones(len(failures))])
        w = torch.cat([torch.full((len(clean),), 0.5 / len(clean)), torch.full((len(failures),), 0.5 / len(failures))])
        lin = nn.Linear(z.shape[1], 1)
        nn.init.zeros_(lin.weight)
        nn.init.zeros_(lin.bias)
        opt = torch.optim.LBFGS(lin.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            with torch.enable_grad():
                bce = nn.functional.binary_cross_entropy_with_logits(lin(z).squeeze(1), t, reduction="none")
                loss = (w * bce).sum() + l2 * lin.weight.pow(2).sum()
                loss.backward()
            return loss

        opt.step(closure)
        self.linear.load_state_dict(lin.state_dict())
        return self


class MLPGate(nn.Module):
    """``net((f - mu) / sd)`` with one hidden layer: a router that can bend around the clean images."""

    def __init__(self, n_features: int, hidden: int = 128):
        super().__init__()
        self.register_buffer("mu", torch.zeros(n_features))
        self.register_buffer("sd", torch.ones(n_features))
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        with torch.autocast(f.device.type, enabled=False):
            return self.net((f.float() - self.mu) / self.sd).squeeze(1)

    def fit(self, clean: torch.Tensor, failures: torch.Tensor, seed: int = 0, steps: int = 300, lr: float = 1e-3,
            weight_decay: float = 1e-3) -> MLPGate:
        """Class-balanced BCE, full batch, AdamW; seeded without touching the global RNG."""
        f = torch.cat([clean, failures]).float().cpu()
        self.to("cpu")
        self.mu.copy_(f.mean(0))
        self.sd.copy_(f.std(0).clamp_min(1e-6))
        t = torch.cat([torch.zeros(len(clean)), torch.ones(len(failures))])
        w = torch.cat([torch.full((len(clean),), 0.5 / len(clean)), torch.full((len(failures),), 0.5 / len(failures))])
        net = self.net
        with torch.random.fork_rng(devices=[]):  # a seeded re-initialisation, in construction order
            torch.manual_seed(seed)
            for layer in net:
                if isinstance(layer, nn.Linear):
                    layer.reset_parameters()
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
        z = (f - self.mu) / self.sd
        with torch.enable_grad():
            for _ in range(steps):
                opt.zero_grad()
                loss = (w * nn.functional.binary_cross_entropy_with_logits(net(z).squeeze(1), t, reduction="none")).sum()
                loss.backward()
                opt.step()
        return self


def make_gate(router: str, features: str, n_features: int) -> nn.Module:
    """An unfitted router of kind ``router`` for a descriptor of ``n_features``."""
    if router not in GATE_ROUTERS:
        raise ValueError(f"gate router must be one of {GATE_ROUTERS}, got {router!r}")
    return MLPGate(n_features) if router == "mlp" else LinearGate(n_features, squares=features == "style")


class GatedClassifier(nn.Module):
    """``repaired(x)`` where the gate's score exceeds ``threshold``, else ``original(x)``. With the
    ``deep`` gate the original runs on every input (its features feed the gate) and the repaired
    model only on the routed ones. Input float NCHW in [0, 1], like ``Classifier``."""

    def __init__(self, original: nn.Module, repaired: nn.Module, gate: nn.Module, threshold: float = 0.0,
                 features: str = "deep"):
        super().__init__()
        if features not in GATE_FEATURES:
            raise ValueError(f"gate features must be one of {GATE_FEATURES}, got {features!r}")
        self.original, self.repaired, self.gate, self.features = original, repaired, gate, features
        self.register_buffer("threshold", torch.tensor(float(threshold)))

    @property
    def mean(self) -> torch.Tensor:  # the input normalisation, for checkpoint metadata
        return self.repaired.mean

    @property
    def std(self) -> torch.Tensor:
        return self.repaired.std

    def scores(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(original logits, gate score) of a batch."""
        if self.features == "style":
            return self.original(x), self.gate(style_descriptor(x))
        logits, f = original_with_features(self.original, x)
        if self.features == "deep+style":
            f = torch.cat([f.float(), style_descriptor(x)], 1)
        return logits, self.gate(f)

    def route(self, x: torch.Tensor) -> torch.Tensor:
        """Boolean (N,): which inputs the repaired model answers."""
        return self.scores(x)[1] > self.threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, s = self.scores(x)
        r = s > self.threshold
        if r.any():
            out = out.clone()
            out[r] = self.repaired(x[r]).to(out.dtype)
        return out


@torch.no_grad()
def _descriptors(original: nn.Module, x: np.ndarray, features: str, device, precision: str,
                 batch_size: int = 500) -> tuple[torch.Tensor, np.ndarray]:
    """(descriptors (N, F), original's predictions (N,)) of uint8 NHWC images, batched."""
    original.eval()
    fs, preds = [], []
    xt = torch.from_numpy(np.ascontiguousarray(x))
    for s in batches(len(xt), batch_size):
        xb = to_float(xt[s].to(device))
        with autocast(device, precision):
            logits, f = original_with_features(original, xb)
        if features == "style":
            f = style_descriptor(xb)
        elif features == "deep+style":
            f = torch.cat([f.float(), style_descriptor(xb)], 1)
        fs.append(f.float().cpu())
        preds.append(logits.float().argmax(1).cpu())
    return torch.cat(fs), torch.cat(preds).numpy()


def _count_above(scores: np.ndarray, values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """For every threshold t: the sum of ``values`` over the items routed at t (score > t)."""
    order = np.argsort(scores, kind="stable")
    tail = np.concatenate([np.cumsum(values[order][::-1].astype(np.int64))[::-1], [0]])
    return tail[np.searchsorted(scores[order], thresholds, side="right")]


def choose_threshold(clean_scores: np.ndarray, clean_before: np.ndarray, clean_after: np.ndarray,
                     fail_scores: np.ndarray, fail_before: np.ndarray, fail_after: np.ndarray, max_break: float,
                     bound: str = "wilson", clean_heldout: np.ndarray | None = None,
                     keep: float | None = None) -> dict:
    """The routing threshold with the most validation failures right among those whose validation
    break rate (estimate, or its Wilson 95% upper bound with ``bound="wilson"``) is <= ``max_break``;
    with ``clean_heldout`` (a mask over the clean images: the ones the original model was *not*
    trained on) also those whose routing leaves the accuracy on them >= the original's. Ties go to
    fewer breaks, then to the higher threshold (less routing); +inf (route nothing) is always
    allowed. ``*_before`` / ``*_after``: whether the original / the repaired answer is right.

    ``keep``: instead, the highest allowed threshold (the least routing) whose validation repair
    (failures right, less those right with nothing routed) is >= ``keep`` times the repair with
    every input routed; where none reaches it, the choice above. It stops routing where the repair
    stops growing instead of spending the whole break budget."""
    if bound not in GATE_BOUNDS:
        raise ValueError(f"bound must be one of {GATE_BOUNDS}, got {bound!r}")
    if keep is not None and not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep!r}")
    ts = np.unique(np.concatenate([clean_scores, fail_scores, [np.inf, -np.inf]]))
    cb, ca, fb, fa = (np.asarray(a, bool) for a in (clean_before, clean_after, fail_before, fail_after))
    n_ok = int(cb.sum())
    broke = _count_above(clean_scores, cb & ~ca, ts)
    fail_right = int(fb.sum()) + _count_above(fail_scores, fa.astype(int) - fb.astype(int), ts)
    rate = broke / max(n_ok, 1)
    upper = wilson_interval(broke, n_ok)[1]  # the Wilson upper bound for every threshold at once
    ok = (upper if bound == "wilson" else rate) <= max_break
    net = None
    if clean_heldout is not None:
        h = np.asarray(clean_heldout, bool)
        net = _count_above(clean_scores[h], ca[h].astype(int) - cb[h].astype(int), ts)
        ok &= net >= 0
    ok[-1] = True  # +inf routes nothing
    idx = np.flatnonzero(ok)
    i = idx[np.lexsort((ts[idx], -broke[idx], fail_right[idx]))[-1]]
    if keep is not None:  # ts ascends: ts[0] = -inf routes everything, ts[-1] = +inf nothing
        gain = fail_right - fail_right[-1]
        enough = np.flatnonzero(ok & (gain >= keep * gain[0]))
        i = int(enough[-1]) if len(enough) else i
    out = {"threshold": float(ts[i]), "val_break": float(rate[i]), "val_break_upper": float(upper[i]),
           "val_failures_acc": float(fail_right[i] / max(len(fb), 1)),
           "routed_clean": float((clean_scores > ts[i]).mean()) if len(clean_scores) else 0.0,
           "routed_failures": float((fail_scores > ts[i]).mean()) if len(fail_scores) else 0.0}
    if net is not None:
        out["heldout_clean_change"] = float(net[i] / max(int(np.asarray(clean_heldout, bool).sum()), 1))
    return out


def fit_gate(original: nn.Module, repaired: nn.Module, split, max_break: float, device, precision: str,
             features: str = "deep", bound: str = "wilson", clean_heldout: ImageSet | None = None,
             router: str = "linear", seed: int = 0, keep: float | None = None) -> tuple[GatedClassifier, dict]:
    """Fit the router on the fine-tuning images (Dt part vs Dc part of ``split``) and choose its
    threshold on the validation split (plus ``split.calibration``, training images left out of
    fine-tuning, when present) with ``choose_threshold``; only Dt/Dc data is read.

    ``clean_heldout``: labelled clean images the *original* model was not trained on (e.g. its own
    validation split, never the test set). Training images cannot tell how many clean images
    routing fixes, because the original model learnt them; with these, the threshold also keeps
    clean accuracy on them >= the original's, and they join the break-rate check. ``keep``: route
    only as much as keeps that share of the validation repair (``choose_threshold``)."""
    if features not in GATE_FEATURES:
        raise ValueError(f"gate features must be one of {GATE_FEATURES}, got {features!r}")
    fc, _ = _descriptors(original, split.x[~split.is_failure], features, device, precision)
    ff, _ = _descriptors(original, split.dc_fit.x, features, device, precision)
    gate = make_gate(router, features, fc.shape[1])
    gate = (gate.fit(fc, ff, seed=seed) if router == "mlp" else gate.fit(fc, ff)).to(device)
    info = {"features": features, "router": router, "n_features": int(fc.shape[1]), "max_break": max_break}
    if split.val_train is None and clean_heldout is None:
        return GatedClassifier(original, repaired, gate, 0.0, features), {"threshold": 0.0, **info,
                                                                           "reason": "no validation split"}
    # No failures held out (selection "last"): rank thresholds on the training failures instead;
    # routing more of them is what a lower threshold does, so this keeps the most routing that
    # stays within the break limit, which is still measured on held-back clean images only.
    vf = split.val_failures if split.val_failures is not None else split.dc_fit
    info["threshold_failures"] = "validation" if split.val_failures is not None else "training (none held out)"
    parts = [d for d in (split.val_train, getattr(split, "calibration", None), clean_heldout) if d is not None]
    vt = ImageSet(np.concatenate([d.x for d in parts]), np.concatenate([d.y for d in parts]), parts[0].classes)
    heldout = None
    if clean_heldout is not None:
        heldout = np.zeros(len(vt), bool)
        heldout[len(vt) - len(clean_heldout):] = True
    dt, pt = _descriptors(original, vt.x, features, device, precision)
    df, pf = _descriptors(original, vf.x, features, device, precision)
    with torch.no_grad():
        st, sf = gate(dt.to(device)).cpu().numpy(), gate(df.to(device)).cpu().numpy()
    rt = predict(repaired, vt.x, device=device, precision=precision) == vt.y
    rf = predict(repaired, vf.x, device=device, precision=precision) == vf.y
    best = choose_threshold(st, pt == vt.y, rt, sf, pf == vf.y, rf, max_break, bound, heldout, keep)
    t = best.pop("threshold")
    t = t if np.isfinite(t) else float(np.sign(t) * 1e9)
    info.update(best, bound=bound, keep=keep, val_clean_images=len(vt),
                heldout_clean_images=len(clean_heldout) if clean_heldout is not None else 0)
    return GatedClassifier(original, repaired, gate, t, features), {"threshold": t, **info}


def gated_from_state(make: Callable[[], nn.Module], info: dict) -> GatedClassifier:
    """An empty ``GatedClassifier`` of two ``make()`` networks, shaped by the ``gate`` entry of a
    checkpoint's metadata, to load the saved state into."""
    features = info.get("features", "deep")
    return GatedClassifier(make(), make(), make_gate(info.get("router", "linear"), features, int(info["n_features"])),
                           features=features)


register_checkpoint_kind("gate", gated_from_state)  # load_checkpoint builds routed repairs with it

__all__ = ["GATE_FEATURES", "GATE_ROUTERS", "GatedClassifier", "LinearGate", "MLPGate", "choose_threshold", "fit_gate", "gated_from_state", "original_with_features"]
