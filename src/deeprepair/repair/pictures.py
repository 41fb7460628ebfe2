"""A repair folder's pictures: one self-contained report.html (PNG figures inlined as base64)
beside report.md, for what people would rather look at than read:

- the validation frontier: for each weight mix, the break bound on the calibration images against
  the validation repair, with the chosen mix marked and the limit drawn;
- a gallery of the clean test images the repair broke and of held-out failures it fixed, each
  with its label before and after;
- accuracy per class, before and after, on the clean test images the repair never saw.
"""

from __future__ import annotations

import html

import numpy as np

from ..figures import png_base64, pyplot

GALLERY = 24  # images per gallery


def _frontier(mix: dict) -> str | None:
    """Break bound against validation repair per mix; against the mix weight itself when no
    failures were held out for validation (fewer than 200 collected)."""
    plt = pyplot()

    rows = mix.get("grid") or []
    if not rows:
        return None
    bound = [100 * r.get("break_bound", r["val_break"]) for r in rows]
    has_fix = rows[0].get("val_failures_acc") is not None
    ys = [100 * r["val_failures_acc"] for r in rows] if has_fix else [r["alpha"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    walk = f"mix a = 0, {1 / mix.get('steps', 10):g}, ... (up to the first over the limit)"
    ax.plot(bound, ys, "o-", color="#4477aa", label=walk)
    for r, b, f in zip(rows, bound, ys):
        ax.annotate(f"{r['alpha']:g}", (b, f), textcoords="offset points", xytext=(4, -10), fontsize=7)
    chosen = next(i for i, r in enumerate(rows) if r["alpha"] == mix["alpha"])
    ax.plot([bound[chosen]], [ys[chosen]], "*", ms=16, color="#cc3311", label=f"chosen (a = {mix['alpha']:g})")
    ax.axvline(100 * mix["max_break"], ls="--", color="grey", label=f"limit {100 * mix['max_break']:.1f}%")
    what = "break bound" if mix.get("bound", "point") != "point" else "break (point estimate)"
    ax.set_xlabel(f"validation {what} (%)")
    ax.set_ylabel("validation failures repaired (%)" if has_fix else "mix weight a (no failures held out)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return png_base64(fig, dpi=110)


def _gallery(x: np.ndarray, before: np.ndarray, after: np.ndarray, y: np.ndarray, classes: list[str],
             title: str) -> str | None:
    plt = pyplot()

    n = min(len(x), GALLERY)
    if not n:
        return None
    cols = 8
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.25, rows * 1.55), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            img = x[i]
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
            ax.set_title(f"{classes[before[i]]}\n-> {classes[after[i]]}\n(true {classes[y[i]]})", fontsize=6)
    fig.suptitle(title, fontsize=9)
    return png_base64(fig, dpi=110)


def _per_class(y: np.ndarray, before: np.ndarray, after: np.ndarray, classes: list[str]) -> str:
    plt = pyplot()

    k = len(classes)
    acc_b = [100 * float((before[y == c] == c).mean()) if (y == c).any() else 0.0 for c in range(k)]
    acc_a = [100 * float((after[y == c] == c).mean()) if (y == c).any() else 0.0 for c in range(k)]
    fig, ax = plt.subplots(figsize=(max(5, 0.55 * k), 3.4))
    pos = np.arange(k)
    ax.bar(pos - 0.2, acc_b, 0.4, label="before", color="#bbbbbb")
    ax.bar(pos + 0.2, acc_a, 0.4, label="after", color="#4477aa")
    ax.set_xticks(pos, classes, rotation=45, ha="right", fontsize=7)
    ax.set_ylim(min(acc_b + acc_a) - 5, 100)
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return png_base64(fig, dpi=110)


def repair_html(title: str, markdown: str, report: dict, classes: list[str], *, test_x: np.ndarray,
                test_y: np.ndarray, test_before: np.ndarray, test_after: np.ndarray, unseen: np.ndarray | None,
                heldout_x: np.ndarray | None = None, heldout_y: np.ndarray | None = None,
                heldout_before: np.ndarray | None = None, heldout_after: np.ndarray | None = None) -> str:
    """The page: the Markdown report as preformatted text, then the three figures. ``unseen``: a
    mask of the test images the repair never saw (None: all of them)."""
    keep = np.ones(len(test_y), bool) if unseen is None else unseen
    broke = np.flatnonzero(keep & (test_before == test_y) & (test_after != test_y))
    parts = [f"<h1>{html.escape(title)}</h1>", f"<pre>{html.escape(markdown)}</pre>"]
    figs = []
    if report.get("interpolation") and report["interpolation"].get("grid"):
        figs.append(("The validation frontier: each weight mix's break bound against its validation repair",
                     _frontier(report["interpolation"])))
    figs.append((f"Clean test images the repair broke ({len(broke):,}; the first {min(len(broke), GALLERY)})",
                 _gallery(test_x[broke], test_before[broke], test_after[broke], test_y[broke], classes,
                          "label before -> after (true label)")))
    if heldout_x is not None:
        fixed = np.flatnonzero((heldout_before != heldout_y) & (heldout_after == heldout_y))
        figs.append((f"Held-out failures the repair fixed ({len(fixed):,}; the first {min(len(fixed), GALLERY)})",
                     _gallery(heldout_x[fixed], heldout_before[fixed], heldout_after[fixed], heldout_y[fixed],
                              classes, "label before -> after (true label)")))
    figs.append(("Accuracy per class on the clean test images the repair never saw",
                 _per_class(test_y[keep], test_before[keep], test_after[keep], classes)))
    for caption, png in figs:
        parts.append(f"<h2>{html.escape(caption)}</h2>")
        parts.append(f'<img alt="{html.escape(caption)}" src="data:image/png;base64,{png}">' if png else "<p>none</p>")
    style = "body{font-family:sans-serif;max-width:60em;margin:2em auto}pre{white-space:pre-wrap;font-size:0.85em}"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")
