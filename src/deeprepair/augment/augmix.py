"""AugMix and StyleAug (Algorithm 1), batched, with the Jensen-Shannon consistency loss."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DeepRepairError
from .ops import AUGMIX_OPS, GEOMETRIC, affine, geometric_matrix

if TYPE_CHECKING:  # annotations only
    from ..cluster import ReferenceSampler
    from ..style import StyleTransfer


class StyleOps:
    """The style-transfer ops O_c (Eq. 5): op i renders the image in the style of a failure
    drawn from group i of the sampler; the style statistics of Dc are computed once."""

    def __init__(self, style: StyleTransfer, references: torch.Tensor, sampler: ReferenceSampler,
                 alpha: float = 1.0):
        self.style = style.fit(references)
        self.sampler, self.alpha = sampler, alpha

    def __len__(self) -> int:
        return len(self.sampler.groups)

    def __call__(self, x: torch.Tensor, group: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        ref = torch.from_numpy(self.sampler.sample(group, rng))
        return self.style.transfer(x, index=ref, alpha=self.alpha)


class StyleAug:
    """``StyleAug(X, O)`` of Algorithm 1; with no style ops it is AugMix.

    Per image: chain weights w ~ Dirichlet(alpha), blend m ~ Beta(alpha, alpha); each of the
    ``width`` chains has depth 1-3 (or ``depth``); its first op is drawn uniformly from the
    AugMix ops plus the style ops, the 2nd and 3rd only from the AugMix ops; output
    ``m * sum_i w_i chain_i(X) + (1 - m) X``. All ops run batched on the images that drew them.
    """

    def __init__(self, style_ops: StyleOps | None = None, width: int = 3, depth: int = -1,
                 severity: float = 3.0, alpha: float = 1.0, ops: Sequence[str] | None = None):
        names = list(ops or AUGMIX_OPS)
        unknown = [n for n in names if n not in AUGMIX_OPS]
        if unknown:
            raise DeepRepairError(f"unknown augmentation ops {unknown}; choose from {list(AUGMIX_OPS)}")
        self.names = names
        self.ops = [AUGMIX_OPS[n] for n in names]
        self.geometric = [i for i, n in enumerate(names) if n in GEOMETRIC]
        self.style_ops = style_ops
        self.width, self.depth, self.severity, self.alpha = width, depth, severity, alpha

    def __call__(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        b = x.shape[0]
        n_ops, n_style = len(self.ops), (len(self.style_ops) if self.style_ops else 0)
        w = torch.from_numpy(rng.dirichlet([self.alpha] * self.width, size=b)).to(x)
        m = torch.from_numpy(rng.beta(self.alpha, self.alpha, size=b)).to(x).view(b, 1, 1, 1)
        mix = torch.zeros_like(x)
        for i in range(self.width):
            depth = (np.full(b, self.depth) if self.depth > 0 else rng.integers(1, 4, size=b))
            chain = x
            for step in range(int(depth.max())):
                pool = n_ops + (n_style if step == 0 else 0)
                op = rng.integers(0, pool, size=b)
                op[depth <= step] = -1
                level = torch.from_numpy(rng.uniform(0.1, self.severity, size=b)).to(x)
                chain = chain.clone()
                geo = np.isin(op, self.geometric)
                if geo.any():  # the five geometric ops share one batched affine resampling
                    sel = np.flatnonzero(geo)
                    t = torch.from_numpy(sel).to(x.device)
                    mats = torch.empty(len(sel), 6, dtype=torch.float64, device=x.device)
                    for o in np.unique(op[sel]):
                        k = op[sel] == o
                        mats[torch.from_numpy(k)] = geometric_matrix(self.names[o], level[t[torch.from_numpy(k)]],
                                                                     x.shape[2], x.shape[3], rng)
                    chain.index_copy_(0, t, affine(chain.index_select(0, t), mats))
                for o in np.unique(op[(op >= 0) & (op < n_ops) & ~geo]):
                    sel = np.flatnonzero(op == o)
                    t = torch.from_numpy(sel).to(x.device)
                    chain.index_copy_(0, t, self.ops[o](chain.index_select(0, t), level[t], rng))
                sel = np.flatnonzero(op >= n_ops)
                if len(sel):  # every style op in one transfer: each image gets a reference of its op's group
                    t = torch.from_numpy(sel).to(x.device)
                    chain.index_copy_(0, t, self.style_ops(chain.index_select(0, t), op[sel] - n_ops, rng))
            mix += w[:, i].view(b, 1, 1, 1) * chain
        return m * mix + (1 - m) * x


def jsd_loss(logits_clean: torch.Tensor, logits_aug1: torch.Tensor, logits_aug2: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence among the three predictions (AugMix Eq. 2; mixture clamped at 1e-7)."""
    p0, p1, p2 = (F.softmax(t.float(), dim=1) for t in (logits_clean, logits_aug1, logits_aug2))
    log_m = torch.clamp((p0 + p1 + p2) / 3.0, 1e-7, 1).log()
    return (F.kl_div(log_m, p0, reduction="batchmean") + F.kl_div(log_m, p1, reduction="batchmean")
            + F.kl_div(log_m, p2, reduction="batchmean")) / 3.0
