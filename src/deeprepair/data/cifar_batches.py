"""Reader for torchvision's ``cifar-10-batches-py`` folder (the official python archive).

The batch files are pickles. ``pickle.load`` on a file from the internet can run any code,
so they are read with a restricted unpickler that can only build what a genuine batch
holds: dicts, lists, bytes, ints and numpy arrays.
"""

from __future__ import annotations

import importlib
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from deeprepair.errors import DeepRepairError

FOLDER_NAME = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
META_FILE = "batches.meta"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")


def _numpy_attr(submodule: str, name: str) -> Callable[[], Any]:
    """Resolve a numpy internal under its numpy 2 (``numpy._core``) or 1.x (``numpy.core``) name."""
    def resolve() -> Any:
        for prefix in ("numpy._core", "numpy.core"):
            try:
                return getattr(importlib.import_module(f"{prefix}.{submodule}"), name)
            except (ImportError, AttributeError):
                continue
        raise pickle.UnpicklingError(f"numpy has no {submodule}.{name}")
    return resolve


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """Stand-in for ``_codecs.encode``: protocol-2 pickles written by Python 3 store bytes
    as ``_codecs.encode(text, "latin1")``. Only that use is allowed."""
    if encoding.replace("_", "-").lower() not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return text.encode("latin-1")


_ALLOWED: dict[tuple[str, str], Callable[[], Any]] = {
    ("_codecs", "encode"): lambda: _latin1_encode,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}
for _prefix in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_prefix}.multiarray", "_reconstruct")] = _numpy_attr("multiarray", "_reconstruct")
    _ALLOWED[(f"{_prefix}.multiarray", "scalar")] = _numpy_attr("multiarray", "scalar")
    _ALLOWED[(f"{_prefix}.numeric", "_frombuffer")] = _numpy_attr("numeric", "_frombuffer")
for _builtins in ("builtins", "__builtin__"):  # protocol-2 pickles spell b"" as bytes()
    _ALLOWED[(_builtins, "bytes")] = lambda: bytes


class _Refused(pickle.UnpicklingError):
    """The pickle asked for a global outside the allow-list."""


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a genuine CIFAR-10 batch file needs."""

    def find_class(self, module: str, name: str) -> Any:
        resolve = _ALLOWED.get((module, name))
        if resolve is None:
            raise _Refused(f"{module}.{name}")
        return resolve()


def safe_load_pickle(path: Path) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler`; every failure is a DeepRepairError."""
    try:
        with open(path, "rb") as f:
            # latin1 is how Python 3 must read the Python 2 pickles of the official archive.
            return RestrictedUnpickler(f, encoding="latin1").load()
    except _Refused as exc:
        raise DeepRepairError(f"refusing to load {path}: it references {exc}, which a genuine "
                              "CIFAR-10 batch never does (the file may be malicious); "
                              "re-download cifar-10-python.tar.gz") from None
    except FileNotFoundError:
        raise DeepRepairError(f"{path} does not exist: the {FOLDER_NAME} folder is incomplete, "
                              "re-extract cifar-10-python.tar.gz") from None
    except Exception as exc:  # anything a corrupt pickle can raise
        raise DeepRepairError(f"cannot read {path} ({type(exc).__name__}: {exc}); it is not a "
                              "valid CIFAR-10 python batch, re-download the archive") from None


def _str_keys(obj: Any, path: Path) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise DeepRepairError(f"{path} holds a {type(obj).__name__}, expected the dict of a "
                              "CIFAR-10 batch; re-download the archive")
    return {k.decode("latin-1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def find_batches_dir(root: Path) -> Path | None:
    """``root`` itself or ``root/cifar-10-batches-py`` when either looks like the batch folder."""
    for cand in (root, root / FOLDER_NAME):
        names = (META_FILE, *TEST_FILES, *TRAIN_FILES)
        if cand.is_dir() and any((cand / n).is_file() for n in names):
            return cand
    if (root / FOLDER_NAME).is_dir():
        return root / FOLDER_NAME
    return None


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _str_keys(safe_load_pickle(path), path)
    if "data" not in batch or "labels" not in batch:
        raise DeepRepairError(f"{path} has no 'data'/'labels' entries (found: "
                              f"{', '.join(sorted(batch)) or 'nothing'}); re-download the archive")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DeepRepairError(f"{path}: 'data' is {desc}, expected uint8 (N, 3072) "
                              "(3x32x32 images, channels first); re-download the archive")
    try:
        labels = np.asarray(batch["labels"], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DeepRepairError(f"{path}: 'labels' is not a list of integers") from None
    if len(labels) != len(data):
        raise DeepRepairError(f"{path}: {len(data)} images but {len(labels)} labels")
    # rows are R(1024) G(1024) B(1024) planes: CHW -> NHWC
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), labels


def _read_classes(folder: Path) -> list[str]:
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        return list(CIFAR10_CLASSES)
    meta = _str_keys(safe_load_pickle(meta_path), meta_path)
    names = meta.get("label_names")
    if not isinstance(names, (list, tuple)) or not names:
        raise DeepRepairError(f"{meta_path} has no 'label_names' list; re-download the archive")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def load_batches(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read one split of a ``cifar-10-batches-py`` folder as (x NHWC uint8, y int64, classes)."""
    files = {"train": TRAIN_FILES, "test": TEST_FILES}.get(split)
    if files is None:
        raise DeepRepairError(f"split {split!r} does not exist in {folder}: a {FOLDER_NAME} "
                              "folder has only 'train' and 'test'")
    missing = [n for n in files if not (folder / n).is_file()]
    if missing:
        raise DeepRepairError(f"{folder} lacks {', '.join(missing)} needed for the {split} split; "
                              "re-extract cifar-10-python.tar.gz")
    parts = [_read_batch(folder / n) for n in files]
    x = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    y = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    return x, y, _read_classes(folder)
