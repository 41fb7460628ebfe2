"""The loss terms a repair adds to its method's objective (``repair/methods.py`` holds the
objectives; ``augment/augmix.py: jsd_loss`` the JSD term of Eq. 1-2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, t: float,
                 weight: torch.Tensor | None = None) -> torch.Tensor:
    """T^2 KL(softmax(teacher / T) || softmax(student / T)) (Hinton et al. 2015), mean over the
    batch, each input weighted by ``weight`` when given (focal distillation)."""
    s, te = F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1)
    if weight is None:
        return F.kl_div(s, te, reduction="batchmean", log_target=True) * t * t
    kl = F.kl_div(s, te, reduction="none", log_target=True).sum(1) * t * t
    return (kl * weight).sum() / max(len(kl), 1)


def focal_weights(teacher: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Focal distillation (positive-congruent training, Yan et al., CVPR 2021): weight 1 on the
    inputs the original model classifies right, 0 on those it gets wrong, so the repair is held
    to the original only where the original was right."""
    return (teacher.argmax(1) == y).float()


def l2_pull(params: list[torch.nn.Parameter], anchors: list[torch.Tensor]) -> torch.Tensor:
    """sum ||theta - theta_original||^2 / 2 over the tuned parameters (L2-SP, Li et al. 2018)."""
    return sum(((p - a) ** 2).sum() for p, a in zip(params, anchors)) / 2


def pseudo_label_loss(weak: torch.Tensor, strong: torch.Tensor, threshold: float) -> tuple[torch.Tensor, float]:
    """FixMatch's unlabelled term (Sohn et al., NeurIPS 2020): the network's own answer on a weakly
    augmented view is the label of a strongly augmented view of the same image, kept only where
    that answer's probability is >= ``threshold``; mean over the whole batch. Returns the loss and
    the share of the batch that passed the threshold."""
    conf, label = F.softmax(weak.detach().float(), 1).max(1)
    mask = (conf >= threshold).float()
    return (F.cross_entropy(strong.float(), label, reduction="none") * mask).mean(), float(mask.mean())
