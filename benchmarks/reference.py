"""Per-image reference implementations of the corruptions, from PyPI, for speed comparisons.

The reference is the ImageNet-C code as packaged on PyPI:

* ``imagecorruptions==1.1.2`` -- primary reference for every corruption it can still run;
* ``corrupt-tta==0.1.7`` (a modernised ImageNet-C port) -- fallback for the ones that no
  longer run in ``imagecorruptions`` on the current scientific stack.

Neither library's code is modified. Both declare ``opencv-python`` as a dependency, which would
install a second ``cv2`` over ``opencv-python-headless``; install them *without* dependencies and
add what they import by hand::

    .venv/bin/pip install scikit-image                      # skimage (imports imageio, tifffile, lazy_loader)
    .venv/bin/pip install --no-deps imagecorruptions==1.1.2 corrupt-tta==0.1.7

(offline: ``--no-deps /tmp/wheels/imagecorruptions-1.1.2-py3-none-any.whl
/tmp/wheels/corrupt_tta-0.1.7-py3-none-any.whl``). ``pip check`` then reports that both "require
opencv-python, which is not installed": expected, ``opencv-python-headless`` provides ``cv2``.

``imagecorruptions`` does ``from pkg_resources import resource_filename`` at import time (to find
its frost textures). ``pkg_resources`` was removed from setuptools >= 81 and is not a declared
dependency, so when it is missing :func:`_import_imagecorruptions` puts a minimal stand-in module in
``sys.modules`` for the duration of that import only: ``resource_filename(module, path)`` returning
``<directory of module>/<path>``, which is what ``pkg_resources`` returns for a module installed as
plain files. Installing ``"setuptools<81"`` instead makes the stand-in unnecessary (it is then not
used).

Corruption -> reference (see ``REFERENCES``; measured with numpy 2.4, scipy 1.17, scikit-image 0.26):

* imagecorruptions 1.1.2 runs 16 of the 19: all except
  ``glass_blur`` and ``gaussian_blur`` (``skimage.filters.gaussian(..., multichannel=True)``:
  the ``multichannel`` argument was removed from scikit-image) and ``fog``
  (``np.float_``, removed in NumPy 2.0);
* those three run in corrupt-tta 0.1.7, same ImageNet-C parameters and algorithm (its ``fog`` always
  uses ``wibbledecay=3`` instead of the per-severity value: same cost, slightly different texture).

Caveats for anyone reading the numbers:

* both libraries use the ImageNet-C severity parameters (tuned for 224x224 images), not the
  CIFAR-10-C ones, so their outputs at a given severity are not the CIFAR-10-C images; this is fine
  for a throughput comparison (per-image cost hardly depends on the parameters), not for fidelity;
* both draw from NumPy's global RNG; callers seed it (``np.random.seed``) before a timed loop;
* ``corrupt-tta`` returns float arrays; the callables here convert to ``uint8`` the way
  ``imagecorruptions`` does (``np.uint8`` of the value clipped to [0, 255]), inside the timed call.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
import warnings
from typing import Callable

import numpy as np

IMAGECORRUPTIONS = "imagecorruptions 1.1.2"
CORRUPT_TTA = "corrupt-tta 0.1.7"

#: corruption name -> (library label, note). Every one of the 15 CIFAR-10-C corruptions and the 4
#: held-out ones has a runnable per-image reference.
REFERENCES: dict[str, tuple[str, str]] = {
    "gaussian_noise": (IMAGECORRUPTIONS, ""),
    "shot_noise": (IMAGECORRUPTIONS, ""),
    "impulse_noise": (IMAGECORRUPTIONS, ""),
    "defocus_blur": (IMAGECORRUPTIONS, ""),
    "glass_blur": (CORRUPT_TTA, "imagecorruptions fails: skimage gaussian() no longer accepts multichannel="),
    "motion_blur": (IMAGECORRUPTIONS, ""),
    "zoom_blur": (IMAGECORRUPTIONS, ""),
    "snow": (IMAGECORRUPTIONS, ""),
    "frost": (IMAGECORRUPTIONS, ""),
    "fog": (CORRUPT_TTA, "imagecorruptions fails: np.float_ removed in NumPy 2"),
    "brightness": (IMAGECORRUPTIONS, ""),
    "contrast": (IMAGECORRUPTIONS, ""),
    "elastic_transform": (IMAGECORRUPTIONS, ""),
    "pixelate": (IMAGECORRUPTIONS, ""),
    "jpeg_compression": (IMAGECORRUPTIONS, ""),
    "speckle_noise": (IMAGECORRUPTIONS, ""),
    "gaussian_blur": (CORRUPT_TTA, "imagecorruptions fails: skimage gaussian() no longer accepts multichannel="),
    "spatter": (IMAGECORRUPTIONS, ""),
    "saturate": (IMAGECORRUPTIONS, ""),
}

#: Install commands, also printed in the benchmark reports.
INSTALL_COMMANDS = (
    ".venv/bin/pip install scikit-image",
    ".venv/bin/pip install --no-deps imagecorruptions==1.1.2 corrupt-tta==0.1.7",
)

_modules: dict[str, types.ModuleType] = {}


def _resource_filename(module_name: str, resource: str) -> str:
    """Stand-in for ``pkg_resources.resource_filename`` for modules installed as plain files."""
    module = importlib.import_module(module_name)
    return os.path.normpath(os.path.join(os.path.dirname(module.__file__), resource))


def _import_imagecorruptions() -> types.ModuleType:
    if "imagecorruptions" in _modules:
        return _modules["imagecorruptions"]
    stub_installed = False
    try:
        import pkg_resources  # noqa: F401  (setuptools < 81)
    except ImportError:
        stub = types.ModuleType("pkg_resources")
        stub.resource_filename = _resource_filename
        sys.modules["pkg_resources"] = stub
        stub_installed = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy.ndimage.interpolation / pkg_resources deprecations
            mod = importlib.import_module("imagecorruptions")
    finally:
        if stub_installed:
            # imagecorruptions bound resource_filename at import; nothing else should see the stand-in
            sys.modules.pop("pkg_resources", None)
    _modules["imagecorruptions"] = mod
    return mod


def _import_corrupt_tta() -> types.ModuleType:
    if "corrupt_tta" not in _modules:
        _modules["corrupt_tta"] = importlib.import_module("corrupt_tta")
    return _modules["corrupt_tta"]


def _to_uint8(out) -> np.ndarray:
    return np.uint8(np.clip(np.asarray(out), 0, 255))


#: corruptions that corrupt-tta implements with a different algorithm than ImageNet-C
CORRUPT_TTA_DIFFERENT = {
    "spatter": "corrupt-tta's spatter is a simple brown-mask blend, not ImageNet-C's water/mud spatter",
    "motion_blur": "corrupt-tta blurs with a rotated line kernel in cv2.filter2D (ImageNet-C: shifted copies)",
    "fog": "corrupt-tta's fog ignores the per-severity wibbledecay (always 3)",
}

PREFER_CHOICES = ("imagecorruptions", "corrupt-tta")


def reference_fn(
    name: str, prefer: str = "imagecorruptions"
) -> tuple[Callable[[np.ndarray, int], np.ndarray], str] | None:
    """Return ``(fn, library_label)`` for corruption ``name``, or ``None`` if none runs.

    ``fn(img, severity)`` takes one ``uint8`` HWC RGB image (32x32x3 works) and an int severity in
    1..5 and returns a ``uint8`` image of the same shape. Raises ``ImportError`` (with the install
    commands) when the library it needs is not installed.

    ``prefer="imagecorruptions"`` (default) gives the mapping in ``REFERENCES``: imagecorruptions
    wherever it runs, corrupt-tta for the rest. ``prefer="corrupt-tta"`` uses corrupt-tta for all 19
    (it runs them all; it is faster than imagecorruptions for several, e.g. brightness and saturate
    via OpenCV instead of scikit-image HSV; see ``CORRUPT_TTA_DIFFERENT`` for the ones it computes
    differently).
    """
    if prefer not in PREFER_CHOICES:
        raise ValueError(f"prefer must be one of {PREFER_CHOICES}, got {prefer!r}")
    if name not in REFERENCES:
        return None
    label, _ = REFERENCES[name]
    if prefer == "corrupt-tta":
        label = CORRUPT_TTA
    try:
        if label == IMAGECORRUPTIONS:
            lib = _import_imagecorruptions()
        else:
            lib = _import_corrupt_tta()
    except ImportError as exc:
        raise ImportError(
            f"reference for {name!r} needs {label}; install with:\n  " + "\n  ".join(INSTALL_COMMANDS)
        ) from exc

    corrupt = lib.corrupt

    def fn(img: np.ndarray, severity: int) -> np.ndarray:
        return _to_uint8(corrupt(img, severity=int(severity), corruption_name=name))

    fn.__name__ = f"reference_{name}"
    return fn, label


def available(prefer: str = "imagecorruptions") -> dict[str, str]:
    """Map each corruption name to its reference label, or to the reason it cannot run here."""
    out = {}
    for name in REFERENCES:
        try:
            r = reference_fn(name, prefer)
            out[name] = r[1] if r else "no runnable reference"
        except ImportError as exc:
            out[name] = f"not installed ({exc.__cause__})"
    return out


if __name__ == "__main__":  # self-check: python benchmarks/reference.py [imagecorruptions|corrupt-tta]
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    np.random.seed(0)
    prefer = sys.argv[1] if len(sys.argv) > 1 else "imagecorruptions"
    for name in REFERENCES:
        r = reference_fn(name, prefer)
        if r is None:
            print(f"{name:18s} no runnable reference")
            continue
        fn, label = r
        out = fn(img, 3)
        assert out.shape == img.shape and out.dtype == np.uint8, (name, out.shape, out.dtype)
        print(f"{name:18s} ok  ({label})")
