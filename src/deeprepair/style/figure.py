"""Figures for people: a content/style/output strip and the Fig. 1-style grid."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from ..data.io import atomic_write_bytes
from ..engine import to_float
from ..figures import png, pyplot

if TYPE_CHECKING:  # annotations only
    from .base import StyleTransfer


def _u8(t: torch.Tensor) -> np.ndarray:
    return (t.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _show(ax, img: np.ndarray) -> None:
    """One uint8 HWC image; a grey one (one channel) in grey levels, not in a colour map."""
    if img.shape[-1] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(img, interpolation="nearest")


def render(content: np.ndarray, style: np.ndarray, st: StyleTransfer, alpha: float = 1.0) -> np.ndarray:
    """uint8 NHWC in, uint8 NHWC out (style: N images or 1)."""
    c = to_float(torch.from_numpy(np.ascontiguousarray(content))).contiguous()
    s = to_float(torch.from_numpy(np.ascontiguousarray(style))).contiguous()
    return _u8(st.transfer(c, s, alpha=alpha))


def _save(fig, path: Path) -> Path:
    return atomic_write_bytes(path, png(fig, dpi=100))


def strip_figure(content: np.ndarray, style: np.ndarray, output: np.ndarray, path: str | Path) -> Path:
    """One row per image: content | style reference | output."""
    plt = pyplot()

    n = len(content)
    fig, axes = plt.subplots(n, 3, figsize=(4.5, 1.6 * n), squeeze=False)
    for i in range(n):
        for j, (img, title) in enumerate(((content[i], "content"), (style[min(i, len(style) - 1)], "style"),
                                          (output[i], "output"))):
            _show(axes[i, j], img)
            axes[i, j].axis("off")
            if i == 0:
                axes[i, j].set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, Path(path))


def grid_figure(content: np.ndarray, references: dict[str, np.ndarray], backends: dict[str, StyleTransfer],
                path: str | Path) -> Path:
    """Fig. 1 style: for each corruption, its failure reference, then each clean image rendered
    in that reference's style by each backend."""
    plt = pyplot()

    names = list(references)
    cols = 1 + len(content) * (1 + len(backends))
    fig, axes = plt.subplots(len(names) + 1, cols, figsize=(0.95 * cols, 1.05 * (len(names) + 1)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes[0, 0].set_title("reference", fontsize=7)
    for k, img in enumerate(content):
        base = 1 + k * (1 + len(backends))
        _show(axes[0, base], img)
        axes[0, base].set_title("clean", fontsize=7)
        for b, bname in enumerate(backends):
            axes[0, base + 1 + b].set_title(bname, fontsize=6)
    for r, name in enumerate(names, start=1):
        ref = references[name]
        _show(axes[r, 0], ref[0])
        axes[r, 0].text(-2, ref.shape[1] / 2, name.replace("_", "\n"), fontsize=6, ha="right", va="center")
        for b, (bname, st) in enumerate(backends.items()):
            out = render(content, np.repeat(ref[:1], len(content), 0), st)
            for k in range(len(content)):
                _show(axes[r, 1 + k * (1 + len(backends)) + 1 + b], out[k])
    fig.subplots_adjust(left=0.07, right=0.99, top=0.95, bottom=0.01, wspace=0.05, hspace=0.08)
    return _save(fig, Path(path))


def load_images(path: str | Path, index: Sequence[int] | None = None) -> np.ndarray:
    """uint8 NHWC from an image file or an ``.npz`` with ``x`` (optionally a few ``index``)."""
    from ..errors import DeepRepairError

    path = Path(path)
    if not path.is_file():
        raise DeepRepairError(f"{path} not found: give an image file or an .npz with x")
    if path.suffix == ".npz":
        from ..data import ImageSet
        from ..data.datasets import read_npz

        x = read_npz(path, ("x",), save_hint="np.savez(path, x=images)")["x"]

        if len(x) == 0:
            raise DeepRepairError(f"{path} holds no images")
        try:  # the data layer's checks: uint8, (N, H, W, C)
            x = ImageSet(x, np.zeros(len(x), np.int64), ["image"]).x  # grey (N, H, W) gains its axis
        except DeepRepairError as exc:
            raise DeepRepairError(f"{path}: {exc}") from None
        if x.shape[3] != 3:
            raise DeepRepairError(f"{path}: style transfer needs RGB images (N, H, W, 3), got {x.shape}")
        if index is not None:
            bad = [i for i in index if not 0 <= i < len(x)]
            if bad:
                raise DeepRepairError(f"index {bad[0]} out of range: {path} holds {len(x)} images")
            x = x[list(index)]
        return np.ascontiguousarray(x)
    from ..data.datasets import decode_image

    return decode_image(path)[None]  # 16-bit images scaled to 8 bits, as everywhere
