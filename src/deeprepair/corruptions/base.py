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
    colour: bool = False  # needs RGB: grey images go through it as RGB (see ``apply``)
    piece: int = 2  # torch code (chunked=False): work units per piece (see ``apply``)


REGISTRY: dict[str, Corruption] = {}


def register(name: str, family: str, heldout: bool = False, chunked: bool = True, colour: bool = False,
             piece: int = 2):
    """Decorator adding a corruption function to the registry."""

    def deco(fn: CorruptionFn) -> CorruptionFn:
        REGISTRY[name] = Corruption(name, family, fn, heldout, chunked, colour, piece)
        return fn

    return deco


def to_uint8(x: np.ndarray) -> np.ndarray:
    """The recipe's ``np.uint8(np.clip(x, 0, 1) * 255)`` (truncation), robust to float32 error."""
    if x.dtype == np.uint8:
        return x
    return kernels.to_uint8(np.ascontiguousarray(x))  # adds 1e-3 before truncating


def default_threads() -> int:
    return max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1, 8))


MIN_SIZE = 8  # below this the recipes' kernels and crops stop making sense (tested from 28 px)


def check_images(images: np.ndarray) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        got = f"{getattr(images, 'dtype', type(images).__name__)} {getattr(images, 'shape', '')}"
        raise DeepRepairError(f"corruptions take uint8 images shaped (N, H, W, 3) or (N, H, W, 1); got {got}")
    if images.shape[-1] not in (1, 3):
        raise DeepRepairError(
            f"corruptions need RGB or grey images with channels last (N, H, W, 3 or 1); got shape "
            f"{images.shape} (transpose NCHW to NHWC)"
        )
    if min(images.shape[1:3]) < MIN_SIZE:
        raise DeepRepairError(f"corruptions need images of at least {MIN_SIZE}x{MIN_SIZE} px; got "
                              f"{images.shape[1]}x{images.shape[2]}")


def grey_to_rgb(x: np.ndarray) -> np.ndarray:
    """(N, H, W, 1) -> (N, H, W, 3), the grey value in every channel."""
    return np.repeat(x, 3, axis=-1)


def rgb_to_grey(x: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) -> (N, H, W, 1) with ITU-R 601 luma, as Pillow's ``convert("L")``
    (R 299 + G 587 + B 114, /1000, rounded): a grey triple (v, v, v) gives v back exactly."""
    r, g, b = (x[..., k].astype(np.uint32) for k in range(3))
    return ((19595 * r + 38470 * g + 7471 * b + 0x8000) >> 16).astype(np.uint8)[..., None]


def apply(corr: Corruption, images: np.ndarray, severity: int, seed: int, start: int, threads: int) -> np.ndarray:
    """Run ``corr`` over ``images`` (global indices ``start..``) in chunks aligned to CHUNK.

    The parameters follow the image size (``params.param``). Grey images (C = 1): corruptions
    that act on each value alike (noise, blurs, fog, contrast, elastic, pixelate) run on the
    single channel; colour ones (``colour=True``: brightness, saturate, snow, frost, spatter,
    JPEG) run on the image copied to RGB and the result goes back to grey with luma weights.
    """
    from .params import param

    p = param(corr.name, severity, min(images.shape[1:3]))
    n = len(images)
    if n == 0:
        return images.copy()
    if images.shape[-1] == 1 and corr.colour:
        return rgb_to_grey(apply(corr, grey_to_rgb(images), severity, seed, start, threads))
    pixels = images.shape[1] * images.shape[2]
    # work units hold about CHUNK 32x32 images' worth of pixels (CHUNK images up to 32x32)
    chunk = CHUNK if pixels <= 1024 else max(1, CHUNK * 1024 // pixels)
    if not corr.chunked:  # torch code, threaded itself: pieces of ``corr.piece`` work units, one after the other.
        # Speed trick: bounded pieces, not one call on the whole batch; on 10,000 CIFAR images in one
        # call elastic_transform ran 6.7k img/s against 28k in pieces of 512 (memory-bound temporaries)
        threads, chunk = 1, corr.piece * chunk
    bounds = [0]
    nxt = (start // chunk + 1) * chunk - start
    while nxt < n:
        bounds.append(nxt)
        nxt += chunk
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
