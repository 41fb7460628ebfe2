"""Routed repair: send inputs that look like the collected failures to the repaired model and
everything else to the original one, so that clean images keep their original predictions.

The router is a class-balanced logistic regression fitted to tell the fine-tuning images of Dt
from the collected failures Dc, on one of two descriptors:

- ``deep`` (default): what the original model sees, its penultimate features (the input of
  its last ``nn.Linear``, when it has one), its logits, their entropy and maximum;
- ``style``: the wavelet style descriptor (``style_features``: per band and channel log
  energies, the residual's mean and std) and its squares.

Its threshold is chosen on the validation split of Dt and Dc (never De or the test set) like
the interpolation coefficient: the largest validation repair whose validation break rate stays
<= ``max_break``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from ..data import ImageSet
from ..engine import autocast, batches, predict, to_float
from ..style.wavelet import style_features
from .report import wilson

GATE_FEATURES = ("deep", "style")


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


class GatedClassifier(nn.Module):
    """``repaired(x)`` where the gate's score exceeds ``threshold``, else ``original(x)``. With the
    ``deep`` gate the original runs on every input (its features feed the gate) and the repaired
    model only on the routed ones. Input float NCHW in [0, 1], like ``Classifier``."""

    def __init__(self, original: nn.Module, repaired: nn.Module, gate: LinearGate, threshold: float = 0.0,
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
        if self.features == "deep":
            logits, f = original_with_features(self.original, x)
            return logits, self.gate(f)
        return self.original(x), self.gate(style_descriptor(x))

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
        fs.append(f.float().cpu())
        preds.append(logits.float().argmax(1).cpu())
    return torch.cat(fs), torch.cat(preds).numpy()


def fit_gate(original: nn.Module, repaired: nn.Module, split, max_break: float, device, precision: str,
             features: str = "deep", bound: str = "point") -> tuple[GatedClassifier, dict]:
    """Fit the router on the fine-tuning images (Dt part vs Dc part of ``split``) and choose its
    threshold on the validation split (plus ``split.calibration``, training images left out of
    fine-tuning, when present); only Dt/Dc data is read. ``bound="wilson"`` holds the Wilson 95%
    upper bound of the validation break rate, not the estimate, to ``max_break``."""
    if features not in GATE_FEATURES:
        raise ValueError(f"gate features must be one of {GATE_FEATURES}, got {features!r}")
    fc, _ = _descriptors(original, split.x[~split.is_failure], features, device, precision)
    ff, _ = _descriptors(original, split.dc_fit.x, features, device, precision)
    gate = LinearGate(fc.shape[1], squares=features == "style").fit(fc, ff).to(device)
    info = {"features": features, "n_features": int(fc.shape[1]), "max_break": max_break}
    if split.val_train is None:
        return GatedClassifier(original, repaired, gate, 0.0, features), {"threshold": 0.0, **info,
                                                                           "reason": "no validation split"}
    # No failures held out (selection "last"): rank thresholds on the training failures instead;
    # routing more of them is what a lower threshold does, so this keeps the most routing that
    # stays within the break limit, which is still measured on held-back clean images only.
    vt, vf = split.val_train, split.val_failures if split.val_failures is not None else split.dc_fit
    info["threshold_failures"] = "validation" if split.val_failures is not None else "training (none held out)"
    if getattr(split, "calibration", None) is not None:
        vt = ImageSet(np.concatenate([vt.x, split.calibration.x]), np.concatenate([vt.y, split.calibration.y]), vt.classes)
    dt, pt = _descriptors(original, vt.x, features, device, precision)
    df, pf = _descriptors(original, vf.x, features, device, precision)
    with torch.no_grad():
        st, sf = gate(dt.to(device)).cpu().numpy(), gate(df.to(device)).cpu().numpy()
    ot, of = pt == vt.y, pf == vf.y
    rt = predict(repaired, vt.x, device=device, precision=precision) == vt.y
    rf = predict(repaired, vf.x, device=device, precision=precision) == vf.y
    rows = []
    for t in np.unique(np.concatenate([st, sf, [np.inf, -np.inf]])):
        right_t, right_f = np.where(st > t, rt, ot), np.where(sf > t, rf, of)
        broke = int((ot & ~right_t).sum())
        rows.append({"threshold": float(t), "val_break": float(broke / max(ot.sum(), 1)),
                     "val_break_upper": wilson(broke, int(ot.sum()))[1],
                     "val_failures_acc": float(right_f.mean()), "routed_clean": float((st > t).mean()),
                     "routed_failures": float((sf > t).mean())})
    key = "val_break_upper" if bound == "wilson" else "val_break"
    ok = [r for r in rows if r[key] <= max_break] or rows[-1:]  # +inf routes nothing (the last row)
    best = max(ok, key=lambda r: (r["val_failures_acc"], -r["val_break"], r["threshold"]))
    t = best["threshold"] if np.isfinite(best["threshold"]) else float(np.sign(best["threshold"]) * 1e9)
    info.update({k: best[k] for k in ("val_break", "val_break_upper", "val_failures_acc", "routed_clean",
                                      "routed_failures")}, bound=bound, val_clean_images=len(vt))
    return GatedClassifier(original, repaired, gate, t, features), {"threshold": t, **info}


def gated_from_state(make: Callable[[], nn.Module], info: dict) -> GatedClassifier:
    """An empty ``GatedClassifier`` of two ``make()`` networks, shaped by the ``gate`` entry of a
    checkpoint's metadata, to load the saved state into."""
    features = info.get("features", "deep")
    return GatedClassifier(make(), make(), LinearGate(int(info["n_features"]), squares=features == "style"),
                           features=features)


__all__ = ["GATE_FEATURES", "GatedClassifier", "LinearGate", "fit_gate", "gated_from_state", "original_with_features"]
