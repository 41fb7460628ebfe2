"""Render a corrupted test set in the official CIFAR-10-C layout, resumably.

Each (corruption, severity) block is saved atomically under ``OUT/.parts/`` as soon as it is
done; when a corruption's blocks are all there they are joined into ``OUT/<name>.npy``
(atomic), its sha256 goes into ``OUT/manifest.json`` and the parts are removed. A rerun of
the same command skips complete files and finished blocks, so an interrupted run loses at
most the block in flight. A file that exists but was made differently is never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..data.cifar_c import LABELS_FILE, MANIFEST_FILE, write_labels
from ..data.io import atomic_save_npy, atomic_write_bytes, remove_orphans, sha256_file
from ..errors import DeepRepairError
from ..figures import png, pyplot
from . import SEVERITIES, corrupt, get_corruption
from .params import PARAMS, size_weight, table

BATCH = 2048  # images per corrupt() call: bounds memory, keeps progress bars moving


def _versions() -> dict[str, str]:
    import cv2
    import PIL
    import scipy
    import torch

    return {
        "deeprepair": __version__, "python": platform.python_version(), "numpy": np.__version__,
        "scipy": scipy.__version__, "torch": torch.__version__, "opencv": cv2.__version__,
        "pillow": PIL.__version__,
    }  # fmt: skip


def _config_key(name: str, severities: Sequence[int], seed: int, source_sha: str) -> str:
    blob = json.dumps([name, list(severities), seed, source_sha, PARAMS[name], __version__])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _load_manifest(out: Path) -> dict[str, Any]:
    path = out / MANIFEST_FILE
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DeepRepairError(f"{path} is unreadable ({e}); move it away or choose another --out") from e
    if not isinstance(manifest, dict) or not isinstance(manifest.get("corruptions", {}), dict):
        raise DeepRepairError(f"{path} is not a manifest of `deeprepair corrupt`; move it away or choose another --out")
    return manifest


def _side(images: np.ndarray) -> int:
    """The shorter side of the images: the size the corruption parameters follow (``params.param``)."""
    return int(min(images.shape[1:3]))


def _entry(name: str, target: Path, severities: list[int], seed: int, key: str, seconds: float,
           side: int) -> dict[str, Any]:
    """The manifest's record of one finished ``<name>.npy``; ``params`` are those its images were
    rendered with at their shorter ``side`` (the CIFAR-10-C row up to 32 px)."""
    row = table(name, side)
    return {
        "file": target.name, "severities": severities, "seed": seed, "config": key,
        "params": {str(s): row[s - 1] for s in severities},
        "heldout": get_corruption(name).heldout, "sha256": sha256_file(target), "seconds": round(seconds, 2),
    }  # fmt: skip


def _joined_from(target: Path, parts: list[Path]) -> bool:
    """Whether ``target`` is byte for byte the join of these finished blocks (all present)."""
    import io

    if not all(p.is_file() for p in parts):
        return False
    buf = io.BytesIO()
    np.save(buf, np.concatenate([np.load(p, allow_pickle=False) for p in parts]), allow_pickle=False)
    return hashlib.sha256(buf.getvalue()).hexdigest() == sha256_file(target)


def _check_request(images: np.ndarray, corruptions: Sequence[str], severities: Sequence[int]) -> list[int]:
    """The sorted severities, after checking that there are images and every name and severity exists."""
    if len(images) == 0:
        raise DeepRepairError("no images to corrupt: the dataset split is empty")
    for name in corruptions:
        get_corruption(name)
    severities = sorted(set(int(s) for s in severities))
    if not severities or any(s not in SEVERITIES for s in severities):
        raise DeepRepairError(f"severities must be within 1..5; got {severities}")
    return severities


def _open_out(out: Path) -> Path:
    """Create ``out``; clear temporary files of killed writes from it and its ``.parts``; return ``.parts``."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DeepRepairError(f"cannot create the output folder {out} ({e.strerror}); choose another --out") from e
    parts = out / ".parts"
    for folder in (out, parts):  # temporary files of killed writes: never trusted, never left to pile up
        remove_orphans(folder, any_name=True)
    return parts


def _start_manifest(out: Path, images: np.ndarray, source: dict[str, Any] | None) -> tuple[dict[str, Any], str]:
    """(manifest, sha256 of the images): the folder's manifest, refused if made from other images."""
    source_sha = hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()
    manifest = _load_manifest(out)
    if manifest and manifest.get("source_sha256") not in (None, source_sha):
        raise DeepRepairError(f"{out} holds corruptions of other images; choose another --out")
    h, w = images.shape[1:3]
    recipe = "CIFAR-10-C (Hendrycks & Dietterich 2019), CIFAR parameters"
    if size_weight(_side(images)) > 0:  # the size rule of params.param (docs/corruptions.md, "Any image size")
        recipe = (f"CIFAR-10-C (Hendrycks & Dietterich 2019), parameters for {h}x{w} px by the size rule "
                  "(CIFAR-10-C's at 32 px, ImageNet-C's from 224 px; docs/corruptions.md)")
    manifest.update({
        "format": "cifar-10-c", "recipe": recipe,
        "n_images": len(images), "image_shape": list(images.shape[1:]), "source_sha256": source_sha,
        "source": source or manifest.get("source", {}), "versions": _versions(),
    })  # fmt: skip
    manifest.setdefault("corruptions", {})
    return manifest, source_sha


def _already_made(name: str, target: Path, parts: Path, key: str, severities: list[int], seed: int, side: int,
                  manifest: dict[str, Any], save_manifest: Callable[[], None]) -> bool:
    """Whether the existing ``target`` is this run's (recorded, or joined from its blocks before a
    kill); a file made otherwise is refused."""
    entry = manifest["corruptions"].get(name)
    done = entry and entry.get("config") == key and entry.get("sha256") == sha256_file(target)
    if not done and _joined_from(target, [parts / f"{name}-s{s}-{key}.npy" for s in severities]):
        # killed after the file was written, before the manifest recorded it: it is this run's
        manifest["corruptions"][name] = _entry(name, target, severities, seed, key, 0.0, side)
        save_manifest()
        done = True
    if not done:
        raise DeepRepairError(
            f"{target} exists but was not made by this command (other seed, severities or images); "
            "choose another --out or move it away"
        )
    row = table(name, side)  # a manifest written before the parameters followed the image size is corrected
    manifest["corruptions"][name]["params"] = {str(s): row[s - 1] for s in severities}
    for s in severities:  # a kill can come while a finished file's blocks are being removed
        (parts / f"{name}-s{s}-{key}.npy").unlink(missing_ok=True)
    return True


def _render_blocks(images: np.ndarray, name: str, severities: list[int], seed: int, parts: Path, key: str,
                   threads: int | None, progress: Callable[[int], None] | None) -> list[np.ndarray]:
    """One block of ``len(images)`` per severity: a finished block is read back from ``parts``, a
    missing one is rendered and saved there first."""
    blocks = []
    for s in severities:
        part = parts / f"{name}-s{s}-{key}.npy"
        if part.exists():
            blocks.append(np.load(part, mmap_mode="r"))
            if progress:
                progress(len(images))
            continue
        block = np.empty_like(images)
        for a in range(0, len(images), BATCH):
            b = min(a + BATCH, len(images))
            block[a:b] = corrupt(images[a:b], name, s, seed=seed, start=a, threads=threads)
            if progress:
                progress(b - a)
        atomic_save_npy(part, block)
        blocks.append(block)
    return blocks


def generate(
    images: np.ndarray,
    labels: np.ndarray,
    out: str | Path,
    corruptions: Sequence[str],
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    source: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Write ``<name>.npy`` for each corruption (severity blocks of ``len(images)``) into ``out``.

    Returns the manifest. ``progress(k)`` is called after every ``k`` images rendered.
    """
    severities = _check_request(images, corruptions, severities)
    out = Path(out)
    parts = _open_out(out)
    manifest, source_sha = _start_manifest(out, images, source)
    write_labels(out, labels, num_severities=len(severities))

    def save_manifest() -> None:
        atomic_write_bytes(out / MANIFEST_FILE, (json.dumps(manifest, indent=2) + "\n").encode())

    side = _side(images)
    for name in corruptions:
        key = _config_key(name, severities, seed, source_sha)
        target = out / f"{name}.npy"
        if target.exists() and _already_made(name, target, parts, key, severities, seed, side, manifest, save_manifest):
            if progress:
                progress(len(images) * len(severities))
            continue
        t0 = time.perf_counter()
        blocks = _render_blocks(images, name, severities, seed, parts, key, threads, progress)
        atomic_save_npy(target, np.concatenate(blocks))
        manifest["corruptions"][name] = _entry(name, target, severities, seed, key, time.perf_counter() - t0, side)
        save_manifest()
        for s in severities:
            (parts / f"{name}-s{s}-{key}.npy").unlink(missing_ok=True)
    manifest["labels"] = {"file": LABELS_FILE, "sha256": sha256_file(out / LABELS_FILE)}
    save_manifest()
    if parts.exists() and not any(parts.iterdir()):
        parts.rmdir()
    return manifest


def grid_figure(image: np.ndarray, corruptions: Sequence[str], path: str | Path, seed: int = 0) -> Path:
    """Save a (corruptions x 5 severities) grid of one image, with the clean image first."""
    plt = pyplot()

    rows = len(corruptions)
    fig, axes = plt.subplots(rows, 6, figsize=(6 * 1.1, rows * 1.1 + 0.4), squeeze=False)
    for r, name in enumerate(corruptions):
        cells = [image] + [corrupt(image[None], name, s, seed=seed)[0] for s in SEVERITIES]
        for c, cell in enumerate(cells):
            ax = axes[r, c]
            if cell.shape[-1] == 1:  # grey: grey levels, not an auto-scaled colour map
                ax.imshow(cell[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            else:
                ax.imshow(cell, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("clean" if c == 0 else f"severity {c}", fontsize=8)
        label = name + (" *" if get_corruption(name).heldout else "")
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    h, w = image.shape[:2]
    recipe = "CIFAR-10-C recipe" if min(h, w) <= 32 else f"parameters for {h}x{w} px, docs/corruptions.md"
    fig.suptitle(f"deeprepair corruptions ({recipe}); * = held-out extra", fontsize=9)
    fig.tight_layout()
    return atomic_write_bytes(Path(path), png(fig, dpi=110))  # never a half-written figure
