"""Matplotlib figures, the one way the tool makes and saves them: headless (the Agg backend) and
as PNG (bytes for a file, base64 for a self-contained HTML page). matplotlib is imported only when
a figure is made."""

from __future__ import annotations

import base64
import io

__all__ = ["png", "png_base64", "pyplot"]


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig, dpi: int = 100, tight: bool = False) -> bytes:
    """``fig`` as PNG bytes (``tight``: cropped to its content); the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, **({"bbox_inches": "tight"} if tight else {}))
    pyplot().close(fig)
    return buf.getvalue()


def png_base64(fig, dpi: int = 100) -> str:
    """``fig`` cropped to its content, as base64 PNG for an ``<img src="data:image/png;base64,...">``."""
    return base64.b64encode(png(fig, dpi, tight=True)).decode()
