"""Figures (deeprepair.figures): headless matplotlib, saved as PNG and closed."""

import base64

from deeprepair.figures import png, png_base64, pyplot


def test_figures_are_png_made_without_a_display_and_closed():
    plt = pyplot()
    assert plt.get_backend().lower() == "agg"
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [1, 0])
    before = len(plt.get_fignums())
    data = png(fig, dpi=50)
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(plt.get_fignums()) == before - 1
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.set_title("cropped")
    cropped = base64.b64decode(png_base64(fig, dpi=50))
    assert cropped.startswith(b"\x89PNG") and len(plt.get_fignums()) == before - 1
