"""The repair methods: a registry (``@register_method``) and the training objective of each.

A repair is a training method (this module) plus a protection (``repair_config.PROTECTIONS``:
focal distillation, the weight mix, the gate, field images). All fine-tuning methods share the
protocol (data, budget, schedule, model selection) of ``repair/core.py``; they differ only in
what a batch is turned into and how it is scored.

- ``finetune``: cross-entropy on Dt + Dc. ``fewshot``: the same on Dc (Dt replay optional).
- ``cutout`` (DeVries & Taylor 2017): one 16x16 square zeroed per image.
- ``mixup`` (Zhang et al. 2018): alpha 1. ``cutmix`` (Yun et al. 2019): beta 1, probability 0.5.
- ``augmix``: AugMix + JSD; ``deeprepair``: StyleAug (Algorithm 1) + JSD; ``oracle``: AugMix
  whose op set also holds the true corruption at random severities (an upper bound).
- ``sensei`` (Gao et al. 2020): per example, a genetic search over natural variations keeps the
  highest-loss variant as the next seed; selective augmentation skips well-fit examples.
- ``bn-adapt`` and ``tent`` (repair/testtime.py): label-free test-time adaptation.

Adding a method: write its objective (or adaptation) in its own module under ``repair/`` and
decorate its factory with ``@register_method(name, reads=..., about=...)``; the command line,
``bench`` and ``repair()`` find it here (every module of ``deeprepair.repair`` is imported
before the registry is read).
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..augment import StyleAug, StyleOps, jsd_loss
from ..augment.ops import affine
from ..cluster import ReferenceSampler
from ..engine import to_float
from ..errors import DeepRepairError
from ..style import create_style


@dataclass(frozen=True)
class Method:
    """A registered repair method.

    ``build(cfg, dc, n_examples, autocast) -> (objective, sampler or None)`` makes the training
    objective of a fine-tuning method (``dc``: the failures it fine-tunes on, ``n_examples``: the
    fine-tuning set's size); a label-free method (``test_time``) has none, ``repair()`` adapts
    with it directly. ``reads``: the RepairConfig fields the method reads beyond the fine-tuning
    protocol every method shares (``repair_config.PROTOCOL``); an option that no chosen method or
    protection reads is refused on the command line. ``about``: one line for ``--help``."""

    name: str
    build: Callable | None
    reads: tuple[str, ...]
    about: str
    label: str
    test_time: bool = False


_METHODS: dict[str, Method] = {}


def register_method(name: str, *, reads: tuple[str, ...] = (), about: str, label: str | None = None,
                    test_time: bool = False) -> Callable:
    """Register a repair method under ``name``: decorate its ``build`` factory (a function, or a
    class whose ``build`` classmethod makes it); ``label`` is its name in reports (default
    ``name``). A test-time method decorates its adaptation function (``build`` stays None)."""

    def deco(obj):
        if name in _METHODS:
            raise ValueError(f"repair method {name!r} registered twice")
        build = None if test_time else getattr(obj, "build", obj)
        _METHODS[name] = Method(name, build, tuple(reads), about, label or name, test_time)
        return obj

    return deco


def _load() -> None:
    """Import every module of ``deeprepair.repair`` once, so that every method is registered."""
    pkg = importlib.import_module("deeprepair.repair")
    for m in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{m.name}")


def method_names() -> tuple[str, ...]:
    """The registered methods' names, in registration order."""
    _load()
    return tuple(_METHODS)


def unread_options(cfg, given: dict[str, str], *, field: bool = False, recipe: str | None = None) -> str | None:
    """The options in ``given`` (RepairConfig field -> the flag as written, e.g. ``"style_options":
    "--style-checkpoint"``) that neither ``cfg``'s method nor one of its active protections
    (``repair_config.PROTECTIONS``; ``field``: field images were given) reads, as one line naming what
    does read them (the first such reader, with every flag it reads that was given); None when every
    one is read. ``recipe``: how the user chose the recipe, for the message (default ``--method
    <method>``). The options every fine-tuning method reads (budget, selection) are read by all but
    the label-free methods, which read only their own."""
    from ..repair_config import PROTECTIONS

    m = get_method(cfg.method)
    who = (recipe or f"--method {m.name}") + (" (label-free adaptation)" if m.test_time else "")
    tuning = [x for x in _METHODS.values() if not x.test_time]
    by_methods = {f for x in tuning for f in x.reads}  # the options of one fine-tuning method or another
    active = [p for p in PROTECTIONS.values() if p.active(cfg, field)]
    unread: dict[tuple, list[str]] = {}  # (reader, what the recipe does not do, the fix) -> the flags only it reads
    for name, flag in given.items():
        if name in m.reads or name in ("method", "seed"):
            continue
        if name in by_methods:
            readers = [f"--method {x.name}" for x in tuning if name in x.reads]
            key = (" or ".join(readers), "read", f"choose {' or '.join(readers)}")
        elif m.test_time:
            also = "".join(f" and --method {x.name}" for x in _METHODS.values() if x.test_time and name in x.reads)
            key = (f"the fine-tuning methods{also}", "read", "choose a fine-tuning --method")
        else:
            owners = [(n, p) for n, p in PROTECTIONS.items() if name in p.reads]
            if not owners or any(p in active for _, p in owners):
                continue
            key = (" or ".join(f"the {n} ({p.switch})" for n, p in owners), "use",
                   f"add {' or '.join(p.switch for _, p in owners)}")
        unread.setdefault(key, []).append(flag)
    if not unread:
        return None
    (reader, verb, fix), flags = next(iter(unread.items()))
    flags = list(dict.fromkeys(flags))
    one = len(flags) == 1
    return (f"{' and '.join(flags)} {'is' if one else 'are'} read by {reader}; {who} does not {verb} "
            f"{'it' if one else 'them'}: {fix}, or drop {' and '.join(flags)}")


def get_method(name: str) -> Method:
    """The registered method ``name`` (a one-line error lists the others)."""
    _load()
    if name not in _METHODS:
        raise DeepRepairError(f"unknown repair method {name!r}; choose one of: {', '.join(_METHODS)}")
    return _METHODS[name]


@register_method("fewshot", reads=("fewshot_replay",), label="few-shot",
                 about="cross-entropy fine-tuning on Dc (--fewshot-replay training images beside it)")
@register_method("finetune", label="fine-tune", about="cross-entropy fine-tuning on Dt + Dc")
class Objective:
    """Loss of one batch; ``jsd`` methods forward clean + two augmented views together."""

    def __init__(self, autocast: Callable):
        self.autocast = autocast

    @classmethod
    def build(cls, cfg, dc, n_examples: int, autocast: Callable):
        return cls(autocast), None

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


AUGMIX_READS = ("jsd_weight", "width", "severity", "aug_alpha")  # the AugMix chains and the JSD term


def _jsd(cfg, autocast: Callable, ops=None) -> JSDObjective:
    aug = StyleAug(ops, width=cfg.width, severity=cfg.severity, alpha=cfg.aug_alpha)
    return JSDObjective(autocast, aug, cfg.jsd_weight)


@register_method("augmix", reads=AUGMIX_READS, label="AugMix", about="AugMix chains + JSD loss (Hendrycks et al. 2020)")
def augmix(cfg, dc, n_examples: int, autocast: Callable):
    return _jsd(cfg, autocast), None


@register_method("deeprepair", label="DeepRepair",
                 reads=AUGMIX_READS + ("style", "style_options", "style_alpha", "sampling", "clusters",
                                       "cluster_features"),
                 about="AugMix whose ops transfer the style of the collected failures (style ops, Algorithm 1) "
                       "+ JSD loss")
def deeprepair(cfg, dc, n_examples: int, autocast: Callable):
    sampler = ReferenceSampler(cfg.sampling, cfg.clusters, cfg.seed, cfg.cluster_features).fit(dc.x, dc.y)
    refs = to_float(torch.from_numpy(np.ascontiguousarray(dc.x))).contiguous()
    ops = StyleOps(create_style(cfg.style, **cfg.style_options), refs, sampler, alpha=cfg.style_alpha)
    return _jsd(cfg, autocast, ops), sampler


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


@register_method("oracle", reads=AUGMIX_READS + ("oracle_corruption",), label="oracle",
                 about="AugMix whose ops include the failures' true corruption (--oracle-corruption): an upper bound")
def oracle(cfg, dc, n_examples: int, autocast: Callable):
    return _jsd(cfg, autocast, OracleOps(cfg.oracle_corruption)), None


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


@register_method("cutout", label="Cutout", about="one 16x16 square zeroed per image (DeVries & Taylor 2017)")
class Cutout(Objective):
    def __init__(self, autocast, size: int = 16):
        super().__init__(autocast)
        self.size = size

    def loss(self, model, x, y, idx, rng):
        n, _, h, w = x.shape
        s = np.full(n, self.size)
        mask = _box_mask(*_box(rng, n, h, w, s, s), h, w, x.device)
        return super().loss(model, x.masked_fill(mask, 0.0), y, idx, rng)


@register_method("mixup", label="Mixup", about="convex mixes of image pairs and their labels (Zhang et al. 2018)")
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


@register_method("cutmix", label="CutMix", about="a box of another image pasted in, labels mixed by area "
                 "(Yun et al. 2019)")
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


@register_method("sensei", label="SENSEI", about="per example, a genetic search over natural variations "
                 "trains on the worst one (Gao et al. 2020)")
class Sensei(Objective):
    """Per example: population = [current seed, 7 mutants] (+ the unmodified image); train on the
    highest-loss member and keep it as the example's seed for the next epoch (Gao et al. 2020).
    Examples whose loss is below ``skip_loss`` are trained on as they are (selective augmentation)."""

    def __init__(self, autocast, n_examples: int, population: int = 8, mutation: float = 0.6,
                 skip_loss: float = 1e-4):
        super().__init__(autocast)
        self.seeds = np.tile(SENSEI_IDENTITY, (n_examples, 1))
        self.population, self.mutation, self.skip_loss = population, mutation, skip_loss

    @classmethod
    def build(cls, cfg, dc, n_examples: int, autocast: Callable):
        return cls(autocast, n_examples), None

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
