"""Failure mining: which corrupted images a model gets wrong, split into collected Dc and held-out De."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data.io import atomic_write_bytes
from .errors import DeepRepairError
from .tables import markdown_table


def stratified_quota(counts: np.ndarray, total: int) -> np.ndarray:
    """How many to take from each class: ``total // K`` each, a short class's shortfall spread
    over the classes that still have images (water-filling), never more than a class has."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(min(total, counts.sum()))
    quota = np.zeros_like(counts)
    left = total
    while left > 0:
        open_ = np.flatnonzero(quota < counts)
        share = max(left // len(open_), 1)
        for k in open_:
            take = min(share, counts[k] - quota[k], left)
            quota[k] += take
            left -= take
            if left == 0:
                break
    return quota


SPLITS = ("image", "failure")


def split_collected(labels: np.ndarray, n_collect: int, num_classes: int, seed: int = 0,
                    groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the collected failures (Dc) and of the held-out ones (De), stratified by class.

    Dc takes ``n_collect // num_classes`` failures per class when a class has that many (the
    authors' 100 per class); the draw within a class is uniform and seeded. Both index arrays
    are sorted.

    ``groups`` (e.g. the source photo of each failure) makes the split leak-free: whole groups
    are drawn, in a seeded random order, until the class's quota is filled, and De keeps only
    failures whose group has no member in Dc. The members of the last group drawn that do not
    fit the quota are dropped from both sides. Without ``groups`` every failure is its own group
    (the paper's split) and the two arrays cover every position exactly once.
    """
    labels = np.asarray(labels)
    if n_collect < 0:
        raise DeepRepairError(f"the number of failures to collect must be >= 0, got {n_collect}")
    rng = np.random.default_rng(seed)
    counts = np.bincount(labels, minlength=num_classes)
    quota = stratified_quota(counts, n_collect)
    chosen = []
    for k, q in enumerate(quota):
        if not q:
            continue
        members = np.flatnonzero(labels == k)
        if groups is None:
            chosen.append(rng.choice(members, size=q, replace=False))
            continue
        g = np.asarray(groups)[members]
        uniq = np.unique(g)
        rank = np.empty(len(uniq), np.int64)
        rank[rng.permutation(len(uniq))] = np.arange(len(uniq))  # a seeded random order of the groups
        chosen.append(members[np.argsort(rank[np.searchsorted(uniq, g)], kind="stable")][:q])
    dc = np.sort(np.concatenate(chosen)).astype(np.int64) if chosen else np.zeros(0, np.int64)
    rest = np.setdiff1d(np.arange(len(labels)), dc)
    if groups is not None:
        rest = rest[~np.isin(np.asarray(groups)[rest], np.asarray(groups)[dc])]
    return dc, rest.astype(np.int64)


@dataclass
class FailureSplit:
    """One corruption's failures. ``index`` counts into the 5-severity stack (severity s, image i
    -> ``(s - 1) * n + i``); ``dc`` and ``de`` are positions into the failure arrays."""

    name: str
    index: np.ndarray
    y: np.ndarray
    pred: np.ndarray
    severity: np.ndarray
    dc: np.ndarray
    de: np.ndarray
    n_images: int
    n_severities: int = 5
    settings: str = ""  # what it was mined with (mine's record, as JSON): a rerun refuses another model's split

    @property
    def source(self) -> np.ndarray:
        """The test image (photo) each failure was rendered from."""
        return self.index % self.n_images

    def dc_sources(self) -> np.ndarray:
        """Sorted test images with at least one collected failure: never evaluation images."""
        return np.unique(self.source[self.dc])

    def unseen(self) -> np.ndarray:
        """Positions in the 5-severity stack whose photo is not a source of Dc: the shifted
        distribution the repair never saw (every severity, failures or not)."""
        keep = ~np.isin(np.arange(self.n_images), self.dc_sources())
        return np.flatnonzero(np.tile(keep, self.n_severities))

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, index=self.index, y=self.y, pred=self.pred, severity=self.severity,
                 dc=self.dc, de=self.de, n_images=np.int64(self.n_images),
                 n_severities=np.int64(self.n_severities), settings=np.str_(self.settings))
        return atomic_write_bytes(folder / f"{self.name}.split.npz", buf.getvalue())

    @classmethod
    def load(cls, folder: Path, name: str) -> FailureSplit:
        path = Path(folder) / f"{name}.split.npz"
        if not path.is_file():
            raise DeepRepairError(f"{path} not found: run `deeprepair mine` first")
        with np.load(path, allow_pickle=False) as f:
            return cls(name, f["index"], f["y"], f["pred"], f["severity"], f["dc"], f["de"],
                       int(f["n_images"]), int(f["n_severities"]),
                       str(f["settings"]) if "settings" in f.files else "")  # files from before it was recorded: ""


def find_failures(name: str, preds: list[np.ndarray], y: np.ndarray, n_collect: int,
                  num_classes: int, seed: int, split_by: str = "image") -> FailureSplit:
    """Misclassified images over all severities (``preds[s-1]`` for severity s), split Dc/De.

    ``split_by="image"`` (the default) keeps every severity of one photo on one side, so no
    held-out failure is a collected one at another severity; ``"failure"`` draws failures
    independently, as the paper's protocol does (De then shares photos with Dc).
    """
    if split_by not in SPLITS:
        raise DeepRepairError(f"split_by must be one of {SPLITS}, got {split_by!r}")
    n = len(y)
    pred = np.concatenate(preds)
    yy = np.tile(y, len(preds))
    index = np.flatnonzero(pred != yy)
    dc, de = split_collected(yy[index], n_collect, num_classes, seed,
                             groups=index % n if split_by == "image" else None)
    return FailureSplit(name, index, yy[index], pred[index], index // n + 1, dc, de, n, len(preds))


def split_real(pred: np.ndarray, y: np.ndarray, n_collect: int, num_classes: int, seed: int,
               field_fraction: float = 0.0) -> dict[str, np.ndarray]:
    """Real field photos (no corruption, one image per photo): the model's failures, ``n_collect``
    of them collected (Dc, stratified by class, seeded), and every other photo ``unseen``; with
    ``field_fraction`` the unseen photos are split (seeded) into an unlabelled ``field`` share,
    for ``repair --field``, and an ``eval`` share that no repair sees. Indices into the photos."""
    if not 0 <= field_fraction < 1:
        raise DeepRepairError(f"the field fraction must be in [0, 1), got {field_fraction}")
    wrong = np.flatnonzero(pred != y)
    pos, rest = split_collected(y[wrong], n_collect, num_classes, seed=seed)
    dc = wrong[pos]
    unseen = np.setdiff1d(np.arange(len(y)), dc)
    perm = np.random.default_rng(1000 + seed).permutation(unseen)
    half = int(round(len(perm) * field_fraction))
    return {"failures": wrong, "dc": dc, "de": wrong[rest], "unseen": unseen,
            "field": np.sort(perm[:half]), "eval": np.sort(perm[half:])}


def export_collected(split: FailureSplit, images: np.ndarray, classes: list[str], path: Path,
                     part: str = "dc") -> Path:
    """Dc (or De with ``part="de"``) as a failure set ``repair`` reads: npz with ``x``, ``y``,
    plus ``severity`` and ``index`` into the 5-severity stack for breakdowns."""
    pos = split.dc if part == "dc" else split.de
    sel = split.index[pos]
    buf = io.BytesIO()
    np.savez(buf, x=images[sel], y=split.y[pos], severity=split.severity[pos],
             index=sel, classes=np.array(classes))
    return atomic_write_bytes(path, buf.getvalue())


def table1(splits: dict[str, FailureSplit], n_collect: int) -> tuple[str, str]:
    """Table 1 (|Dc+De|, |Dc|, |De| per corruption) as Markdown and CSV."""
    rows = [(n, len(s.index), len(s.dc), len(s.de), s.n_severities * s.n_images) for n, s in splits.items()]
    md = [[n, f"{f:,}", f"{c:,}" + (" (short)" if c < n_collect else ""), f"{e:,}", f"{total:,}", f"{f / total:.1%}"]
          for n, f, c, e, total in rows]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["corruption", "failures", "collected", "held_out", "images"])
    w.writerows(rows)
    head = ["corruption", "failures", "Dc (collected)", "De (held out; other photos)", "images", "failure rate"]
    return markdown_table(head, md) + "\n", buf.getvalue()


def write_mining(out: Path, splits: dict[str, FailureSplit], info: dict, n_collect: int) -> None:
    md, csv_text = table1(splits, n_collect)
    atomic_write_bytes(out / "table1.md", md.encode())
    atomic_write_bytes(out / "table1.csv", csv_text.encode())
    atomic_write_bytes(out / "mining.json", json.dumps(info, indent=2).encode())


__all__ = ["SPLITS", "FailureSplit", "export_collected", "find_failures", "split_collected", "split_real", "stratified_quota",
           "table1", "write_mining"]
