"""Registry, per-image random streams and the batched driver shared by all corruptions.

Determinism: image ``i`` of a dataset (its global index ``start + k``) draws its randomness
from a stream keyed by ``(seed, corruption, severity, i // BLOCK, tag)``; a block's stream
always draws for all ``BLOCK`` images and each image takes its own row. The output is
therefore byte-identical whatever the batch size or the split of a dataset into batches.
"""

from __future__ import annotations

import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import DeepRepairError
from . import kernels

BLOCK = 64  # images per random stream
CHUNK = 256  # images per work unit: keeps the arrays of one unit in the CPU cache


class RandomStream:
    """Per-image random numbers for images ``start .. start + n - 1`` of a dataset."""

    def __init__(self, seed: int, name: str, severity: int, start: int, n: int) -> None:
        self.key = (int(seed), zlib.crc32(name.encode()), int(severity))
        self.start, self.n = int(start), int(n)

    def draw(self, fn: Callable[[np.random.Generator, int], np.ndarray], tag: int = 0) -> np.ndarray:
        """Stack ``fn(rng, BLOCK)[row]`` over this range's images; ``fn`` draws for a whole block."""
        lo, hi = self.start, self.start + self.n
        parts = []
        for b in range(lo // BLOCK, (hi - 1) // BLOCK + 1):
            seq = np.random.SeedSequence([*self.key, b, tag])
            block = fn(np.random.Generator(np.random.SFC64(seq)), BLOCK)
            parts.append(block[max(lo, b * BLOCK) - b * BLOCK : min(hi, (b + 1) * BLOCK) - b * BLOCK])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def bits16(self, shape: tuple[int, ...], tag: int = 0) -> np.ndarray:
        """Uniform uint16 array of shape ``(n, *shape)`` (16 random bits per value)."""
        per = int(np.prod(shape))
        words = (per + 3) // 4

        def fn(rng: np.random.Generator, k: int) -> np.ndarray:
            return rng.bit_generator.random_raw(k * words).view(np.uint16).reshape(k, words * 4)

        return self.draw(fn, tag)[:, :per].reshape(self.n, *shape)


# A corruption function maps (uint8 NHWC chunk, severity parameters, random stream) to either a
# float array in [0, 1] scale (converted like the recipe: clip, x255, truncate) or a uint8 array.
CorruptionFn = Callable[[np.ndarray, tuple, RandomStream], np.ndarray]


@dataclass(frozen=True)
class Corruption:
    name: str
    family: str  # noise | blur | weather | digital
    fn: CorruptionFn
    heldout: bool = False  # one of the 4 extra CIFAR-10-C corruptions, kept apart
    chunked: bool = True  # run in cache-sized chunks on a thread pool (numpy code)


REGISTRY: dict[str, Corruption] = {}


def register(name: str, family: str, heldout: bool = False, chunked: bool = True):
    """Decorator adding a corruption function to the registry."""

    def deco(fn: CorruptionFn) -> CorruptionFn:
        REGISTRY[name] = Corruption(name, family, fn, heldout, chunked)
        return fn

    return deco


def to_uint8(x: np.ndarray) -> np.ndarray:
    """The recipe's ``np.uint8(np.clip(x, 0, 1) * 255)`` (truncation), robust to float32 error."""
    if x.dtype == np.uint8:
        return x
    return kernels.to_uint8(np.ascontiguousarray(x))  # adds 1e-3 before truncating


def default_threads() -> int:
    return max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1, 8))


def check_images(images: np.ndarray) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        got = f"{getattr(images, 'dtype', type(images).__name__)} {getattr(images, 'shape', '')}"
        raise DeepRepairError(f"corruptions take uint8 images shaped (N, H, W, 3); got {got}")
    if images.shape[-1] != 3:
        raise DeepRepairError(
            f"corruptions need RGB images with 3 channels last (N, H, W, 3); got shape {images.shape}"
            " (convert grey images to RGB, or transpose NCHW to NHWC)"
        )


def apply(corr: Corruption, images: np.ndarray, severity: int, seed: int, start: int, threads: int) -> np.ndarray:
    """Run ``corr`` over ``images`` (global indices ``start..``) in chunks aligned to CHUNK."""
    from .params import param

    p = param(corr.name, severity)
    n = len(images)
    if n == 0:
        return images.copy()
    if not corr.chunked:
        out = to_uint8(corr.fn(images, p, RandomStream(seed, corr.name, severity, start, n)))
        return out
    bounds = [0]
    nxt = (start // CHUNK + 1) * CHUNK - start
    while nxt < n:
        bounds.append(nxt)
        nxt += CHUNK
    bounds.append(n)
    out = np.empty_like(images)

    def work(i: int) -> None:
        a, b = bounds[i], bounds[i + 1]
        out[a:b] = to_uint8(corr.fn(images[a:b], p, RandomStream(seed, corr.name, severity, start + a, b - a)))

    if threads <= 1 or len(bounds) <= 2:
        for i in range(len(bounds) - 1):
            work(i)
    else:
        with ThreadPoolExecutor(threads) as ex:
            list(ex.map(work, range(len(bounds) - 1)))
    return out
