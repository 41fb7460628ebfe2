"""Shared fixtures: seeded synthetic "natural-looking" images and the real CIFAR-10 test set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REAL_CIFAR_DIR = Path(__file__).resolve().parents[2] / "shared/data/cifar10"


def _smooth_images(n: int, seed: int = 0, size: int = 32) -> np.ndarray:
    """``n`` smooth RGB images: a coloured linear gradient plus a disc and a rectangle.

    Values stay inside 20..235 so nothing is saturated; edges give blur/JPEG/pixelate work.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / (size - 1)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        c0, c1 = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
        a = rng.uniform(0, 2 * np.pi)
        t = np.cos(a) * xx + np.sin(a) * yy
        t = (t - t.min()) / (t.max() - t.min())
        img = c0 + (c1 - c0) * t[..., None]
        cy, cx = rng.uniform(6, size - 6, 2)
        r = rng.uniform(3, 9)
        disc = ((yy * (size - 1) - cy) ** 2 + (xx * (size - 1) - cx) ** 2) <= r**2
        img[disc] = 0.35 * img[disc] + 0.65 * rng.uniform(20, 235, 3)
        y0, x0 = rng.integers(0, size - 10, 2)
        hh, ww = rng.integers(4, 10, 2)
        img[y0 : y0 + hh, x0 : x0 + ww] = rng.uniform(20, 235, 3)
        out[i] = np.clip(np.rint(img), 20, 235).astype(np.uint8)
    return out


def write_tiny_workspace(root: Path) -> Path:
    """Under ``root``: 40 training and 20 test images (32x32, ``data/``), a failure set of 8
    (``fail.npz``) and a random-init resnet-20 (``model.safetensors``)."""
    import torch

    from deeprepair.models import Classifier, create_model
    from deeprepair.models.checkpoint import save_checkpoint

    (root / "data").mkdir()
    np.savez(root / "data" / "train.npz", x=_smooth_images(40, 1), y=np.arange(40) % 10)
    np.savez(root / "data" / "test.npz", x=_smooth_images(20, 2), y=np.arange(20) % 10)
    np.savez(root / "fail.npz", x=_smooth_images(8, 3), y=np.arange(8) % 10)
    torch.manual_seed(0)
    save_checkpoint(Classifier(create_model("resnet-20", 10)), root / "model.safetensors",
                    {"arch": "resnet-20", "num_classes": 10})
    return root


@pytest.fixture(scope="session")
def smooth_images():
    """Factory ``smooth_images(n, seed=0)`` -> uint8 (n, 32, 32, 3); cached and read-only."""
    cache: dict[tuple[int, int], np.ndarray] = {}

    def make(n: int, seed: int = 0) -> np.ndarray:
        if (n, seed) not in cache:
            arr = _smooth_images(n, seed)
            arr.setflags(write=False)
            cache[(n, seed)] = arr
        return cache[(n, seed)]

    return make


@pytest.fixture
def data_dir(tmp_path, smooth_images) -> Path:
    """A data folder of 60 training and 30 test images (train.npz, test.npz), 10 classes."""
    d = tmp_path / "data"
    d.mkdir()
    for split, seed, n in (("train", 1, 60), ("test", 2, 30)):
        np.savez(d / f"{split}.npz", x=smooth_images(n, seed=seed), y=np.arange(n, dtype=np.int64) % 10)
    return d


@pytest.fixture(scope="session")
def cifar_test_x() -> np.ndarray:
    """The first 64 real CIFAR-10 test images (read-only); skips when the data is absent."""
    path = REAL_CIFAR_DIR / "test.npz"
    if not path.is_file():
        pytest.skip(f"real CIFAR-10 not found at {path}")
    with np.load(path) as d:
        x = np.ascontiguousarray(d["x"][:64])
    x.setflags(write=False)
    return x
