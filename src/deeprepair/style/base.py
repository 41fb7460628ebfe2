"""The style-transfer interface: ``transfer(content, style, alpha)`` on batches of [0, 1] tensors."""

from __future__ import annotations

import torch

from ..errors import DeepRepairError


def check_pair(content: torch.Tensor, style: torch.Tensor | None) -> None:
    """One-line errors for inputs the backends cannot use."""
    if not isinstance(content, torch.Tensor) or content.ndim != 4:
        shape = tuple(content.shape) if isinstance(content, torch.Tensor) else type(content).__name__
        raise DeepRepairError(f"content must be a float tensor (B, C, H, W) in [0, 1], got {shape}")
    if not content.is_floating_point():
        raise DeepRepairError(f"content must be a float tensor in [0, 1], got {content.dtype}; "
                              "divide uint8 images by 255")
    if style is None:
        return
    if not isinstance(style, torch.Tensor) or style.ndim != 4:
        raise DeepRepairError("style must be a float tensor (B, C, H, W) or (1, C, H, W)")
    if style.shape[1] != content.shape[1]:
        raise DeepRepairError(f"content has {content.shape[1]} channels but style has {style.shape[1]}")
    if style.shape[2:] != content.shape[2:]:
        raise DeepRepairError(f"content is {tuple(content.shape[2:])} but style is "
                              f"{tuple(style.shape[2:])} (H, W): resize the references to the images' size")
    if style.shape[0] not in (1, content.shape[0]):
        raise DeepRepairError(f"style batch must be 1 or match the content batch ({content.shape[0]}), "
                              f"got {style.shape[0]}")


LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as Pillow's convert("L") and the corruptions' grey path


def to_channels(out: torch.Tensor, channels: int) -> torch.Tensor:
    """A backend's output brought to the content's channel count: an RGB output (the adain
    decoder always renders RGB) for grey content becomes its luma; anything else must match."""
    if out.shape[1] == channels:
        return out
    if out.shape[1] == 3 and channels == 1:
        w = out.new_tensor(LUMA).view(1, 3, 1, 1)
        return (out * w).sum(1, keepdim=True)
    raise DeepRepairError(f"the style backend returned {out.shape[1]} channels for {channels}-channel images")


class StyleTransfer:
    """Render ``content`` in the style of ``style`` (or of fitted references), batched.

    Subclasses implement ``stats(images)`` (style statistics, one entry per image, computed
    once) and ``apply(content, stats)``. ``fit(references)`` caches the statistics of a
    reference set so that ``transfer(content, index=...)`` costs one pass per batch.
    """

    name = "base"

    def __init__(self) -> None:
        self.cached: object | None = None
        self.n_refs = 0

    # -- to implement -------------------------------------------------------------------
    def stats(self, images: torch.Tensor) -> object:
        raise NotImplementedError

    def apply(self, content: torch.Tensor, stats: object) -> torch.Tensor:
        raise NotImplementedError

    def select(self, stats: object, index: torch.Tensor) -> object:
        """Statistics of the references at ``index`` (tensors indexed along dim 0)."""
        if isinstance(stats, torch.Tensor):
            return stats[index]
        return type(stats)(s[index] for s in stats)

    # -- public API ----------------------------------------------------------------------
    def fit(self, references: torch.Tensor) -> StyleTransfer:
        """Compute and keep the style statistics of ``references`` (N, C, H, W) in [0, 1]."""
        check_pair(references, None)
        if len(references) == 0:
            raise DeepRepairError("no reference images to fit: give at least one failure image")
        self.cached = self.stats(references.float())
        self.n_refs = len(references)
        self.ref_shape = tuple(references.shape[1:])
        return self

    def transfer(self, content: torch.Tensor, style: torch.Tensor | None = None, alpha: float | torch.Tensor = 1.0,
                 index: torch.Tensor | None = None) -> torch.Tensor:
        """``content`` rendered in the style of ``style`` (B or 1 images) or of fitted references
        ``index`` (B,); ``alpha`` in [0, 1] (scalar or per image) blends with the content."""
        check_pair(content, style)
        if (style is None) == (index is None):
            raise DeepRepairError("give exactly one of style= (images) or index= (fitted references)")
        dtype = content.dtype
        x = content.float()
        if style is not None:
            st = self.stats(style.float())
            if style.shape[0] == 1 and x.shape[0] > 1:
                st = self.select(st, torch.zeros(x.shape[0], dtype=torch.long))
        else:
            if self.cached is None:
                raise DeepRepairError("call fit(references) before transfer(index=...)")
            if tuple(x.shape[1:]) != self.ref_shape:
                raise DeepRepairError(f"content is {tuple(x.shape[1:])} but the references are {self.ref_shape}")
            st = self.select(self.cached, index.to(torch.long).cpu() if not _on_same(index, self.cached) else index)
        out = to_channels(self.apply(x, st), x.shape[1])
        a = torch.as_tensor(alpha, dtype=x.dtype, device=x.device)
        if a.ndim == 1:
            a = a.view(-1, 1, 1, 1)
        if torch.any((a < 0) | (a > 1)):
            raise DeepRepairError("alpha must be in [0, 1]")
        out = x + a * (out - x)
        return out.clamp_(0, 1).to(dtype)


def _on_same(index: torch.Tensor, stats: object) -> bool:
    first = stats if isinstance(stats, torch.Tensor) else next(iter(stats))
    return index.device == first.device
