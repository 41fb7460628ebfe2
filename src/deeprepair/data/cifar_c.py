"""The official CIFAR-10-C folder layout: one ``<corruption>.npy`` per corruption.

Each file is uint8 (S*N, H, W, C): severity blocks of N images one after another
(S=5, severities 1..5, in the official release). ``labels.npy`` holds the N labels,
either once or tiled S times as in the official release. An optional ``manifest.json``
(``{"corruptions": {name: {"severities": [...]}}}``) says when a file holds other severities.
Files are read memory-mapped, so a 5*10000*32*32*3 array costs no RAM until touched.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deeprepair.data.io import atomic_save_npy
from deeprepair.errors import DeepRepairError

LABELS_FILE = "labels.npy"
MANIFEST_FILE = "manifest.json"
DEFAULT_SEVERITIES = (1, 2, 3, 4, 5)


def _check_name(name: str) -> None:
    if not name or "/" in name or "\\" in name or name.startswith(".") or name == "labels":
        raise DeepRepairError(f"bad corruption name {name!r}: use a plain name like 'fog' "
                              "(not 'labels', no path separators)")


def _check_images(arr: np.ndarray, what: str) -> None:
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[3] not in (1, 3):
        raise DeepRepairError(f"{what} is {arr.dtype} {arr.shape}, expected uint8 "
                              "(S*N, H, W, C) with C 1 or 3")


def write_corruption(out_dir: str | Path, name: str, blocks: np.ndarray,
                     overwrite: bool = False) -> Path:
    """Save ``blocks`` (uint8, severity blocks stacked) as ``out_dir/<name>.npy``, atomically.

    An existing file is kept (DeepRepairError) unless ``overwrite=True``, so a rerun never
    silently replaces results.
    """
    _check_name(name)
    blocks = np.asarray(blocks)
    _check_images(blocks, f"corruption {name!r}")
    path = Path(out_dir) / f"{name}.npy"
    if path.exists() and not overwrite:
        raise DeepRepairError(f"{path} already exists: pass overwrite=True (Python API) or "
                              "choose another output folder")
    return atomic_save_npy(path, blocks)


def write_labels(out_dir: str | Path, y: np.ndarray, num_severities: int = 5,
                 overwrite: bool = False) -> Path:
    """Save ``y`` tiled ``num_severities`` times as ``out_dir/labels.npy`` (official layout).

    An identical existing file is left alone; a different one needs ``overwrite=True``.
    """
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or len(y) == 0:
        raise DeepRepairError(f"labels must be a non-empty 1-D integer array, "
                              f"got {y.dtype} {y.shape}")
    if num_severities < 1:
        raise DeepRepairError(f"num_severities must be at least 1, got {num_severities}")
    tiled = np.tile(y.astype(np.int64), num_severities)
    path = Path(out_dir) / LABELS_FILE
    if path.exists() and not overwrite:
        try:
            same = np.array_equal(np.load(path, allow_pickle=False), tiled)
        except Exception:
            same = False
        if same:
            return path
        raise DeepRepairError(f"{path} already exists with different labels: pass overwrite=True "
                              "(Python API) or choose another output folder")
    return atomic_save_npy(path, tiled)


def list_corruptions(root: str | Path) -> list[str]:
    """Sorted names of the corruption files (``*.npy`` except ``labels.npy``) in ``root``."""
    root = _existing_dir(root)
    return sorted(p.stem for p in root.glob("*.npy")
                  if p.name != LABELS_FILE and not p.name.startswith(".") and p.is_file())


def load_manifest(root: str | Path) -> dict[str, Any] | None:
    """The parsed ``manifest.json`` of ``root``, or None when there is none."""
    path = Path(root) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DeepRepairError(f"cannot read {path}: {exc}; fix or delete the file") from None
    if not isinstance(data, dict):
        raise DeepRepairError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def _manifest_severities(root: Path, name: str) -> list[int] | None:
    manifest = load_manifest(root)
    entry = (manifest or {}).get("corruptions", {})
    entry = entry.get(name) if isinstance(entry, dict) else None
    if not isinstance(entry, dict) or "severities" not in entry:
        return None
    sev = entry["severities"]
    if (not isinstance(sev, list) or not sev or len(set(sev)) != len(sev)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sev)):
        raise DeepRepairError(f"{root / MANIFEST_FILE}: severities of {name!r} must be a list of "
                              f"distinct positive integers, got {sev!r}")
    return sev


def _existing_dir(root: str | Path) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DeepRepairError(f"corruption folder {root} does not exist: check the path")
    return root


def _load_npy(path: Path, mmap_mode: str | None = None) -> np.ndarray:
    """A ``.npy`` array, never unpickled: anything else (random bytes, a pickle, a truncated or
    object array) is a one-line error."""
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic != b"\x93NUMPY":
            raise ValueError("not a .npy file")
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except Exception as exc:  # truncated header, object array, ...
        raise DeepRepairError(f"cannot read {path} ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}); "
                              "regenerate or re-download it") from None


def read_corruption(root: str | Path, name: str, severity: int | None = None,
                    severities: Sequence[int] | None = None) -> np.ndarray:
    """Memory-mapped images of corruption ``name``: one severity's block, or all when None.

    Which severities the file holds, in order: ``severities`` if given, else the manifest's
    list, else 1..5.
    """
    root = _existing_dir(root)
    _check_name(name)
    path = root / f"{name}.npy"
    if not path.is_file():
        present = ", ".join(list_corruptions(root)) or "none"
        raise DeepRepairError(f"{path} does not exist (corruptions present: {present})")
    arr = _load_npy(path, mmap_mode="r")
    _check_images(arr, str(path))
    held = list(severities) if severities is not None else _manifest_severities(root, name)
    held = held or list(DEFAULT_SEVERITIES)
    if len(arr) % len(held):
        raise DeepRepairError(f"{path} has {len(arr)} images, not a multiple of its "
                              f"{len(held)} severities {held}: the file is incomplete")
    if severity is None:
        return arr
    if severity not in held:
        raise DeepRepairError(f"{path} has no severity {severity} (it holds {held})")
    n = len(arr) // len(held)
    i = held.index(severity)
    return arr[i * n:(i + 1) * n]


def read_labels(root: str | Path, n: int) -> np.ndarray:
    """The ``n`` labels (int64) of a CIFAR-C folder, from a length-n or tiled length-k*n file."""
    root = _existing_dir(root)
    path = root / LABELS_FILE
    if not path.is_file():
        raise DeepRepairError(f"{path} does not exist: a CIFAR-C folder needs labels.npy")
    y = _load_npy(path)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DeepRepairError(f"{path} is {y.dtype} {y.shape}, expected 1-D integer labels")
    if n <= 0 or len(y) % n:
        raise DeepRepairError(f"{path} has {len(y)} labels, expected {n} (or {n} tiled per "
                              "severity, e.g. 5*n): images and labels do not match")
    tiles = y.reshape(-1, n)
    if not (tiles == tiles[0]).all():
        raise DeepRepairError(f"{path} has {len(y)} labels that are not the same {n} labels "
                              "repeated per severity: images and labels do not match")
    return tiles[0].astype(np.int64)
