"""Accuracy on clean data and on every corruption x severity (the paper's RQ1, Fig. 2)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn

from .corruptions import CORRUPTIONS, SEVERITIES, corrupt
from .data import list_corruptions, read_corruption, read_labels
from .data.io import atomic_write_bytes
from .engine import predict
from .errors import DeepRepairError
from .figures import png, pyplot
from .tables import markdown_table


@dataclass
class CorruptedSource:
    """Corrupted copies of a clean set: read from a CIFAR-10-C folder, or rendered on the fly.

    Rendering is deterministic (``seed``) and takes ~35 s for the full 15 x 5 x 10k set here,
    so nothing needs to be stored; a folder written by ``deeprepair corrupt`` (or the official
    CIFAR-10-C files) gives the same interface.
    """

    x: np.ndarray
    y: np.ndarray
    folder: Path | None = None
    seed: int = 0

    def names(self) -> list[str]:
        return list_corruptions(self.folder) if self.folder else list(CORRUPTIONS)

    def images(self, name: str, severity: int) -> np.ndarray:
        if self.folder is None:
            return corrupt(self.x, name, severity, seed=self.seed)
        block = np.asarray(read_corruption(self.folder, name, severity))
        if len(block) != len(self.y):
            raise DeepRepairError(f"{self.folder}/{name}.npy holds {len(block)} images per severity "
                                  f"but the clean test set has {len(self.y)}: use the matching data")
        if block.shape[1:] != self.x.shape[1:]:
            raise DeepRepairError(f"{self.folder}/{name}.npy holds {block.shape[2]}x{block.shape[1]} images but the "
                                  f"clean test images are {self.x.shape[2]}x{self.x.shape[1]}: use the corrupted "
                                  "set made from this data")
        return block

    def labels(self) -> np.ndarray:
        if self.folder is None:
            return self.y
        y = read_labels(self.folder, len(self.y))
        if not np.array_equal(y, self.y):
            raise DeepRepairError(f"labels in {self.folder} differ from the clean test labels: "
                                  "the corrupted set was made from other data")
        return y

    def describe(self) -> dict:
        return {"folder": str(self.folder)} if self.folder else {"rendered": True, "seed": self.seed}


def iter_predictions(model: nn.Module, source: CorruptedSource, names: Sequence[str],
                     severities: Sequence[int] = SEVERITIES, *, device: torch.device,
                     precision: str = "auto", batch_size: int = 500,
                     progress: Callable[[int], None] | None = None) -> Iterator[tuple[str, int, np.ndarray, np.ndarray]]:
    """Yield ``(name, severity, images, predictions)`` for each corruption and severity."""
    for name in names:
        for s in severities:
            imgs = source.images(name, s)
            pred = predict(model, imgs, device=device, precision=precision, batch_size=batch_size)
            if progress is not None:
                progress(len(imgs))
            yield name, s, imgs, pred


def predict_corrupted(model: nn.Module, source: CorruptedSource, name: str, *, device: torch.device,
                      precision: str = "auto", progress: Callable[[int], None] | None = None
                      ) -> tuple[list[np.ndarray], np.ndarray]:
    """(predictions per severity, the images of every severity stacked, severity-major): what mining
    a corruption reads (``deeprepair mine``, the demo, bench)."""
    preds, stack = [], []
    for _, _, imgs, pred in iter_predictions(model, source, [name], device=device, precision=precision,
                                             progress=progress):
        preds.append(pred)
        stack.append(imgs)
    return preds, np.concatenate(stack)


def evaluate_model(model: nn.Module, source: CorruptedSource, names: Sequence[str] | None = None, *,
                   device: torch.device, precision: str = "auto",
                   progress: Callable[[int], None] | None = None) -> dict:
    """Clean accuracy and accuracy per corruption and severity (fractions in [0, 1])."""
    names = list(names or source.names())
    y = source.labels()
    clean = float((predict(model, source.x, device=device, precision=precision) == source.y).mean())
    if progress is not None:
        progress(len(source.y))
    table: dict[str, list[float]] = {}
    for name, s, _, pred in iter_predictions(model, source, names, device=device,
                                             precision=precision, progress=progress):
        table.setdefault(name, []).append(float((pred == y).mean()))
    main = [n for n in names if n in CORRUPTIONS]
    return {
        "clean": clean,
        "corruptions": {n: {"severity": v, "mean": float(np.mean(v))} for n, v in table.items()},
        "mean_corrupted": float(np.mean([table[n] for n in main])) if main else None,
        "per_severity": [float(np.mean([table[n][i] for n in main])) for i in range(5)] if main else None,
        "main_corruptions": len(main),
        "images": len(y),
        "source": source.describe(),
    }


def accuracy_table(results: dict[str, dict], title: str = "") -> str:
    """RQ1 table: one column per model, rows clean / each corruption (pooled) / mean; accuracy %."""
    models = list(results)
    names = list(next(iter(results.values()))["corruptions"])
    rows = [["clean"] + [f"{results[m]['clean'] * 100:.2f}" for m in models]]
    rows += [[n] + [f"{results[m]['corruptions'][n]['mean'] * 100:.2f}" for m in models] for n in names]
    if all(results[m]["mean_corrupted"] is not None for m in models):
        k = results[models[0]]["main_corruptions"]
        rows.append([f"**mean of {k}**"] + [f"**{results[m]['mean_corrupted'] * 100:.2f}**" for m in models])
        rows += [[f"severity {i + 1} (mean of {k})"] + [f"{results[m]['per_severity'][i] * 100:.2f}" for m in models]
                 for i in range(5)]
    return (f"{title}\n\n" if title else "") + markdown_table(["corruption", *models], rows) + "\n"


def severity_table(result: dict) -> str:
    """One model: accuracy (%) per corruption and severity."""
    rows = [[n] + [f"{a * 100:.2f}" for a in v["severity"]] + [f"{v['mean'] * 100:.2f}"]
            for n, v in result["corruptions"].items()]
    return markdown_table(["corruption", "s1", "s2", "s3", "s4", "s5", "pooled"], rows) + "\n"


def plot_accuracy(results: dict[str, dict], path: str | Path) -> Path:
    """Fig. 2 style: per corruption, accuracy at each severity (bars) for each model, clean as a line."""
    plt = pyplot()

    models = list(results)
    names = list(next(iter(results.values()))["corruptions"])
    fig, axes = plt.subplots(len(models), 1, figsize=(max(8, 0.7 * len(names) + 2), 2.6 * len(models)),
                             squeeze=False, sharex=True)
    width = 0.16
    colors = plt.cm.viridis(np.linspace(0.1, 0.9, 5))
    for ax, m in zip(axes[:, 0], models):
        for s in range(5):
            vals = [results[m]["corruptions"][n]["severity"][s] * 100 for n in names]
            ax.bar(np.arange(len(names)) + (s - 2) * width, vals, width, color=colors[s],
                   label=f"severity {s + 1}")
        ax.axhline(results[m]["clean"] * 100, color="k", lw=1, ls="--", label="clean")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"{m}: clean {results[m]['clean'] * 100:.1f}%", fontsize=10)
    axes[-1, 0].set_xticks(np.arange(len(names)), names, rotation=45, ha="right")
    handles, labels = axes[0, 0].get_legend_handles_labels()  # one legend above all panels, clear of the bars
    fig.legend(handles, labels, ncol=6, fontsize=8, loc="upper center", frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    path = Path(path)
    atomic_write_bytes(path, png(fig, dpi=110))
    return path


def write_report(results: dict[str, dict], out: str | Path, stem: str = "rq1", extra: dict | None = None) -> list[Path]:
    """``stem.json``, ``stem.md`` and ``stem.png`` in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md = accuracy_table(results, "# Accuracy (%) on clean and corrupted test images")
    for m, r in results.items():
        md += f"\n## {m}: per severity\n\n" + severity_table(r)
    # the JSON (the record a finished report is known by) goes last: a failed write leaves none
    paths = [plot_accuracy(results, out / f"{stem}.png"), atomic_write_bytes(out / f"{stem}.md", md.encode()),
             atomic_write_bytes(out / f"{stem}.json", json.dumps({"results": results, **(extra or {})},
                                                                  indent=2).encode())]
    return paths[::-1]
