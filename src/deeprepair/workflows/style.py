"""``deeprepair style``: render images in the degradation style of a reference (a strip of
content | style | output rows), or the docs/style_transfer.png grid from a test split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DeepRepairError
from .inputs import Outcome, load_split, style_options

FIGURE_CORRUPTIONS = ("gaussian_noise", "defocus_blur", "motion_blur", "fog", "contrast", "brightness",
                      "jpeg_compression", "pixelate", "snow", "frost")


def style_figure(data: str | None, figure: str, *, checkpoint: str | None = None, seed: int = 0,
                 limit: int = 0, out: str | None = None) -> Outcome:
    """The Fig. 1-style grid: 3 test images in the style of a 4th under each corruption, per backend
    (adain too with its ``checkpoint``)."""
    from ..corruptions import corrupt
    from ..style import create_style
    from ..data.io import check_figure_path
    from ..style.figure import grid_figure

    check_figure_path(figure, "--figure")

    _, test = load_split(data, "test", limit, out)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(test), 4, replace=False)
    content, ref_src = test.x[pick[:3]], test.x[pick[3:]]
    refs = {n: corrupt(ref_src, n, 5, seed=seed) for n in FIGURE_CORRUPTIONS}
    backends = {"wavelet": create_style("wavelet"), "fourier": create_style("fourier")}
    if checkpoint:
        backends["adain"] = create_style("adain", **style_options("adain", None, checkpoint))
    path = grid_figure(content, refs, backends, figure)
    return Outcome({"figure": str(path)}, [f"wrote {path}"])


def style_strip(content: str | None, style: str | None, out: str | None, *, backend: str = "wavelet",
                mode: str | None = None, checkpoint: str | None = None, index: list[int] | None = None,
                style_index: list[int] | None = None, alpha: float = 1.0, force: bool = False) -> Outcome:
    """Render ``content`` in the style of ``style`` with ``backend``; save content | style | output rows to ``out``."""
    from ..style import create_style
    from ..style.figure import load_images, render, strip_figure

    if not (content and style and out):
        raise DeepRepairError("give --content, --style and --out (or --figure PNG with --data)")
    if Path(out).exists() and not force:
        raise DeepRepairError(f"{out} exists; choose another --out or pass --force to replace it")
    st = create_style(backend, **style_options(backend, mode, checkpoint, flag="--checkpoint"))
    images = load_images(content, index)
    refs = load_images(style, style_index)
    if len(refs) not in (1, len(images)):
        refs = refs[:1]
    rendered = render(images, refs, st, alpha=alpha)
    path = strip_figure(images, refs, rendered, out)
    return Outcome({"out": str(path), "images": len(images)},
                   [f"wrote {path} ({len(images)} rows: content | style | output)"])
