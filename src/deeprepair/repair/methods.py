"""The training objectives of the repair methods: one ``loss(model, x, y, ...)`` each.

All methods share the fine-tuning protocol (data, budget, schedule, model selection) of
``repair/core.py``; they differ only in what a batch is turned into and how it is scored.

- ``finetune``: cross-entropy on Dt + Dc. ``fewshot``: the same on Dc (Dt replay optional).
- ``cutout`` (DeVries & Taylor 2017): one 16x16 square zeroed per image.
- ``mixup`` (Zhang et al. 2018): alpha 1. ``cutmix`` (Yun et al. 2019): beta 1, probability 0.5.
- ``augmix``: AugMix + JSD; ``deeprepair``: StyleAug (Algorithm 1) + JSD; ``oracle``: AugMix
  whose op set also holds the true corruption at random severities (an upper bound).
- ``sensei`` (Gao et al. 2020): per example, a genetic search over natural variations keeps the
  highest-loss variant as the next seed; selective augmentation skips well-fit examples.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..augment import StyleAug, jsd_loss
from ..augment.ops import affine


class Objective:
    """Loss of one batch; ``jsd`` methods forward clean + two augmented views together."""

    def __init__(self, autocast: Callable):
        self.autocast = autocast

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return model(x.contiguous(memory_format=torch.channels_last)).float()

    def loss(self, model, x, y, idx, rng) -> tuple[torch.Tensor, dict]:
        """(loss, extra); extra["student"] are logits of extra["inputs"], for distillation."""
        out = self.forward(model, x)
        return F.cross_entropy(out, y), {"student": out, "inputs": x}


class JSDObjective(Objective):
    def __init__(self, autocast, aug: StyleAug, weight: float):
        super().__init__(autocast)
        self.aug, self.weight = aug, weight

    def loss(self, model, x, y, idx, rng):
        import time

        t = time.perf_counter()
        views = torch.cat([x, self.aug(x, rng), self.aug(x, rng)])
        aug_s = time.perf_counter() - t
        l0, l1, l2 = self.forward(model, views).split(len(x))
        js = jsd_loss(l0, l1, l2)
        return F.cross_entropy(l0, y) + self.weight * js, {"jsd": js.item(), "aug_s": aug_s, "student": l0, "inputs": x}


def _box(rng: np.random.Generator, n: int, h: int, w: int, side_h: np.ndarray, side_w: np.ndarray):
    cy, cx = rng.integers(0, h, n), rng.integers(0, w, n)
    y0, y1 = np.clip(cy - side_h // 2, 0, h), np.clip(cy + side_h // 2, 0, h)
    x0, x1 = np.clip(cx - side_w // 2, 0, w), np.clip(cx + side_w // 2, 0, w)
    return y0, y1, x0, x1


def _box_mask(y0, y1, x0, x1, h, w, device) -> torch.Tensor:
    yy = torch.arange(h, device=device).view(1, h, 1)
    xx = torch.arange(w, device=device).view(1, 1, w)
    t = lambda a: torch.as_tensor(a, device=device).view(-1, 1, 1)  # noqa: E731
    return ((yy >= t(y0)) & (yy < t(y1)) & (xx >= t(x0)) & (xx < t(x1))).unsqueeze(1)


class Cutout(Objective):
    def __init__(self, autocast, size: int = 16):
        super().__init__(autocast)
        self.size = size

    def loss(self, model, x, y, idx, rng):
        n, _, h, w = x.shape
        s = np.full(n, self.size)
        mask = _box_mask(*_box(rng, n, h, w, s, s), h, w, x.device)
        return super().loss(model, x.masked_fill(mask, 0.0), y, idx, rng)


class Mixup(Objective):
    def __init__(self, autocast, alpha: float = 1.0):
        super().__init__(autocast)
        self.alpha = alpha

    def loss(self, model, x, y, idx, rng):
        lam = float(rng.beta(self.alpha, self.alpha))
        perm = torch.from_numpy(rng.permutation(len(x))).to(x.device)
        mixed = lam * x + (1 - lam) * x[perm]
        out = self.forward(model, mixed)
        return lam * F.cross_entropy(out, y) + (1 - lam) * F.cross_entropy(out, y[perm]), {"student": out, "inputs": mixed}


class CutMix(Objective):
    def __init__(self, autocast, beta: float = 1.0, prob: float = 0.5):
        super().__init__(autocast)
        self.beta, self.prob = beta, prob

    def loss(self, model, x, y, idx, rng):
        if rng.uniform() >= self.prob:
            return super().loss(model, x, y, idx, rng)
        n, _, h, w = x.shape
        lam = float(rng.beta(self.beta, self.beta))
        cut = math.sqrt(1 - lam)
        side_h, side_w = np.full(1, int(h * cut)), np.full(1, int(w * cut))
        y0, y1, x0, x1 = _box(rng, 1, h, w, side_h, side_w)
        perm = torch.from_numpy(rng.permutation(n)).to(x.device)
        mixed = x.clone()
        mixed[:, :, y0[0]:y1[0], x0[0]:x1[0]] = x[perm][:, :, y0[0]:y1[0], x0[0]:x1[0]]
        lam = 1 - (y1[0] - y0[0]) * (x1[0] - x0[0]) / (h * w)
        out = self.forward(model, mixed)
        return lam * F.cross_entropy(out, y) + (1 - lam) * F.cross_entropy(out, y[perm]), {"student": out, "inputs": mixed}


# SENSEI's natural variations for CIFAR (Gao et al. 2020, "Fuzz testing based data augmentation to
# improve robustness of deep neural networks", ICSE; docs/repair.md, the methods): (low, high) per gene
SENSEI_RANGES = np.array([[-15, 15], [-3, 3], [-3, 3], [-0.1, 0.1], [0.9, 1.1], [-32, 32], [0.8, 1.2]], float)
SENSEI_IDENTITY = np.array([0, 0, 0, 0, 1, 0, 1], float)


def sensei_transform(x: torch.Tensor, genes: np.ndarray) -> torch.Tensor:
    """Apply (rotation deg, tx px, ty px, shear, zoom, brightness /255, contrast) per image."""
    n, _, h, w = x.shape
    g = torch.from_numpy(genes).to(torch.float64)
    rot, tx, ty, sh, zoom, bri, con = g.unbind(1)
    a = torch.deg2rad(rot)
    cos, sin = torch.cos(a) / zoom, torch.sin(a) / zoom
    cx, cy = w / 2, h / 2
    # inverse map about the centre: rotation, shear, zoom, then translation
    m = torch.stack([cos, sin + sh / zoom, cx - cos * cx - (sin + sh / zoom) * cy - tx,
                     -sin, cos, cy + sin * cx - cos * cy - ty], 1)
    out = affine(x, m.to(x.device))
    mean = out.mean((1, 2, 3), keepdim=True)
    con_t = con.to(x).view(-1, 1, 1, 1)
    return ((out - mean) * con_t + mean + bri.to(x).view(-1, 1, 1, 1) / 255).clamp(0, 1)


class Sensei(Objective):
    """Per example: population = [current seed, 7 mutants] (+ the unmodified image); train on the
    highest-loss member and keep it as the example's seed for the next epoch (Gao et al. 2020).
    Examples whose loss is below ``skip_loss`` are trained on as they are (selective augmentation)."""

    def __init__(self, autocast, n_examples: int, population: int = 8, mutation: float = 0.6,
                 skip_loss: float = 1e-4):
        super().__init__(autocast)
        self.seeds = np.tile(SENSEI_IDENTITY, (n_examples, 1))
        self.population, self.mutation, self.skip_loss = population, mutation, skip_loss

    def mutate(self, genes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        new = rng.uniform(SENSEI_RANGES[:, 0], SENSEI_RANGES[:, 1], genes.shape)
        return np.where(rng.uniform(size=genes.shape) < self.mutation, new, genes)

    @torch.no_grad()
    def search(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: np.ndarray,
               rng: np.random.Generator) -> tuple[np.ndarray, torch.Tensor]:
        """Best genes per example and their loss; the unmodified image is a candidate too."""
        cands = [np.tile(SENSEI_IDENTITY, (len(x), 1)), self.seeds[idx]]
        cands += [self.mutate(self.seeds[idx], rng) for _ in range(self.population - 1)]
        was = model.training
        model.eval()
        losses = torch.stack([F.cross_entropy(self.forward(model, sensei_transform(x, g)), y, reduction="none")
                              for g in cands])
        model.train(was)
        best = losses.argmax(0).cpu().numpy()
        genes = np.stack(cands)[best, np.arange(len(x))]
        return genes, losses.max(0).values

    def loss(self, model, x, y, idx, rng):
        idx = np.asarray(idx)
        with torch.no_grad():
            was = model.training
            model.eval()
            base = F.cross_entropy(self.forward(model, x), y, reduction="none")
            model.train(was)
        genes, _ = self.search(model, x, y, idx, rng)
        skip = (base < self.skip_loss).cpu().numpy()
        genes[skip] = SENSEI_IDENTITY
        self.seeds[idx] = genes
        return super().loss(model, sensei_transform(x, genes), y, idx, rng)
