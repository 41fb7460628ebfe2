"""Routed repair: send inputs that look like the collected failures to the repaired model and
everything else to the original one, so that clean images keep their original predictions.

The router is a logistic regression on the wavelet style descriptor (``style_features``: per
band and channel log energies, the residual's mean and std), fitted to tell the fine-tuning
images of Dt from the collected failures Dc. Its threshold is chosen on the validation split of
Dt and Dc (never De or the test set) like the interpolation coefficient: the largest
validation repair whose validation break rate stays <= ``max_break``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from ..engine import predict, to_float
from ..style.wavelet import style_features


class StyleGate(nn.Module):
    """Logit that a float NCHW image in [0, 1] looks like the collected failures rather than
    clean data: ``w . (f(x) - mu) / sd + b`` on the style descriptor ``f``."""

    def __init__(self, channels: int = 3, levels: int = 3):
        super().__init__()
        self.levels = levels
        n = channels * (levels + 2)
        self.register_buffer("mu", torch.zeros(n))
        self.register_buffer("sd", torch.ones(n))
        self.linear = nn.Linear(n, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):  # log energies need float32
            f = style_features(x.float(), self.levels)
            return self.linear((f - self.mu) / self.sd).squeeze(1)

    @torch.no_grad()
    def fit(self, clean: torch.Tensor, failures: torch.Tensor, l2: float = 1e-3, steps: int = 100) -> StyleGate:
        """Class-balanced L2-regularised logistic regression (L-BFGS) on float NCHW images."""
        fc = torch.cat([style_features(b.float(), self.levels) for b in clean.split(1000)])
        ff = torch.cat([style_features(b.float(), self.levels) for b in failures.split(1000)])
        f = torch.cat([fc, ff])
        self.mu.copy_(f.mean(0))
        self.sd.copy_(f.std(0).clamp_min(1e-6))
        z = (f - self.mu) / self.sd
        t = torch.cat([torch.zeros(len(fc)), torch.ones(len(ff))])
        w = torch.cat([torch.full((len(fc),), 0.5 / len(fc)), torch.full((len(ff),), 0.5 / len(ff))])
        lin = nn.Linear(z.shape[1], 1)
        nn.init.zeros_(lin.weight)
        nn.init.zeros_(lin.bias)
        opt = torch.optim.LBFGS(lin.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            with torch.enable_grad():
                loss = (w * nn.functional.binary_cross_entropy_with_logits(lin(z).squeeze(1), t, reduction="none")).sum()
                loss = loss + l2 * lin.weight.pow(2).sum()
                loss.backward()
            return loss

        opt.step(closure)
        self.linear.load_state_dict(lin.state_dict())
        return self


class GatedClassifier(nn.Module):
    """``repaired(x)`` where ``gate(x) > threshold``, else ``original(x)``; each input goes
    through one of the two networks only. Input float NCHW in [0, 1], like ``Classifier``."""

    def __init__(self, original: nn.Module, repaired: nn.Module, gate: StyleGate, threshold: float = 0.0):
        super().__init__()
        self.original, self.repaired, self.gate = original, repaired, gate
        self.register_buffer("threshold", torch.tensor(float(threshold)))

    @property
    def mean(self) -> torch.Tensor:  # the input normalisation, for checkpoint metadata
        return self.repaired.mean

    @property
    def std(self) -> torch.Tensor:
        return self.repaired.std

    def route(self, x: torch.Tensor) -> torch.Tensor:
        """Boolean (N,): which inputs the repaired model answers."""
        return self.gate(x) > self.threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.route(x)
        if r.all():
            return self.repaired(x)
        out = self.original(x)
        if r.any():
            out = out.clone()
            out[r] = self.repaired(x[r]).to(out.dtype)
        return out


def _scores(gate: StyleGate, x: np.ndarray) -> np.ndarray:
    xt = torch.from_numpy(np.ascontiguousarray(x))
    with torch.no_grad():
        return torch.cat([gate(to_float(b)) for b in xt.split(1000)]).numpy() if len(x) else np.zeros(0)


def fit_gate(original: nn.Module, repaired: nn.Module, split, max_break: float, device, precision) -> tuple[GatedClassifier, dict]:
    """Fit the router on the fine-tuning images (Dt part vs Dc part of ``split``) and choose its
    threshold on the validation split; only Dt/Dc data is read."""
    clean = split.x[~split.is_failure]
    gate = StyleGate(channels=split.x.shape[-1]).fit(to_float(torch.from_numpy(clean)),
                                                     to_float(torch.from_numpy(split.dc_fit.x)))
    gate = gate.to(device)
    if split.val_train is None or split.val_failures is None:
        return GatedClassifier(original, repaired, gate, 0.0), {"threshold": 0.0, "reason": "no validation split"}
    vt, vf = split.val_train, split.val_failures
    st, sf = _scores(gate, vt.x), _scores(gate, vf.x)
    ot = predict(original, vt.x, device=device, precision=precision) == vt.y
    rt = predict(repaired, vt.x, device=device, precision=precision) == vt.y
    of = predict(original, vf.x, device=device, precision=precision) == vf.y
    rf = predict(repaired, vf.x, device=device, precision=precision) == vf.y
    cands = np.unique(np.concatenate([st, sf, [np.inf, -np.inf]]))
    rows = []
    for t in cands:
        right_t = np.where(st > t, rt, ot)
        right_f = np.where(sf > t, rf, of)
        rows.append({"threshold": float(t), "val_break": float((ot & ~right_t).sum() / max(ot.sum(), 1)),
                     "val_failures_acc": float(right_f.mean()), "routed_clean": float((st > t).mean()),
                     "routed_failures": float((sf > t).mean())})
    ok = [r for r in rows if r["val_break"] <= max_break]
    best = max(ok, key=lambda r: (r["val_failures_acc"], -r["val_break"], r["threshold"]))
    t = best["threshold"] if np.isfinite(best["threshold"]) else (1e9 if best["threshold"] > 0 else -1e9)
    info = {k: best[k] for k in ("val_break", "val_failures_acc", "routed_clean", "routed_failures")}
    return GatedClassifier(original, repaired, gate, t), {"threshold": t, "max_break": max_break, **info}


def gated_from_state(make: Callable[[], nn.Module], channels: int = 3) -> GatedClassifier:
    """An empty ``GatedClassifier`` of two ``make()`` networks, to load a saved state into."""
    return GatedClassifier(make(), make(), StyleGate(channels))


__all__ = ["GatedClassifier", "StyleGate", "fit_gate", "gated_from_state"]
