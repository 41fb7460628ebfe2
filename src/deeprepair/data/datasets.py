"""Image datasets as uint8 NHWC arrays, loaded from the three folder layouts users have.

Accepted layouts (auto-detected by :func:`load_dataset`):

(a) npz folder: ``train.npz`` / ``test.npz`` with arrays ``x`` (uint8 NHWC) and ``y``,
    optional ``classes.txt`` (one class name per line);
(b) torchvision's ``cifar-10-batches-py`` folder (the folder itself or its parent);
(c) ImageFolder tree: ``<split>/<class>/*.png`` or just ``<class>/*.png``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deeprepair.data.cifar_batches import CIFAR10_CLASSES, find_batches_dir, load_batches
from deeprepair.data.download import download_cifar10
from deeprepair.errors import DeepRepairError

__all__ = ["ImageSet", "resolve_data_dir", "load_dataset", "download_cifar10", "IMAGE_EXTENSIONS"]

ENV_VAR = "DEEPREPAIR_DATA"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SPLIT_NAMES = ("train", "test", "val", "valid", "validation")
LAYOUTS = ("train.npz/test.npz with arrays x (uint8 NHWC) and y; "
           "a cifar-10-batches-py folder; "
           "or an ImageFolder tree <split>/<class>/*.png (or <class>/*.png)")


@dataclass(eq=False)
class ImageSet:
    """Labelled images: ``x`` uint8 (N,H,W,C) RGB (C=1 grey allowed; grey (N,H,W) gets the
    channel axis), ``y`` int64 (N,)."""

    x: np.ndarray
    y: np.ndarray
    classes: list[str]

    def __post_init__(self) -> None:
        x, y = self.x, np.asarray(self.y)
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8:
            got = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
            raise DeepRepairError(f"images must be uint8 (0..255), got {got}; convert with "
                                  "np.clip(x * 255, 0, 255).round().astype(np.uint8) if in [0,1]")
        if x.ndim == 3 and x.shape[2] not in (1, 3):  # grey images without a channel axis
            x = self.x = x[..., None]
        if x.ndim != 4 or x.shape[3] not in (1, 3):
            hint = ("; it looks channels-first, use x.transpose(0, 2, 3, 1)"
                    if x.ndim == 4 and x.shape[1] in (1, 3) else "")
            raise DeepRepairError(f"images must have shape (N, H, W, C) with C 1 or 3, got "
                                  f"{x.shape}{hint}")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DeepRepairError(f"labels must be a 1-D integer array, got {y.dtype} {y.shape}")
        if len(y) != len(x):
            raise DeepRepairError(f"{len(x)} images but {len(y)} labels: they must match "
                                  "one to one")
        self.classes = [str(c) for c in self.classes]
        if not self.classes:
            raise DeepRepairError("the class list is empty: give at least one class name")
        k = len(self.classes)
        if len(y) and (y.min() < 0 or y.max() >= k):
            raise DeepRepairError(f"labels span {y.min()}..{y.max()} but there are {k} classes "
                                  f"(labels must be 0..{k - 1})")
        self.y = y.astype(np.int64, copy=False)

    def __len__(self) -> int:
        return len(self.x)

    def __repr__(self) -> str:
        shape = tuple(self.x.shape[1:])
        return f"ImageSet(n={len(self)}, shape={shape}, classes={self.num_classes})"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, indices: np.ndarray | list[int] | slice) -> ImageSet:
        """A new ImageSet with the selected images (index array, boolean mask or slice)."""
        if not isinstance(indices, slice):
            indices = np.asarray(indices)
            if indices.dtype != bool and not np.issubdtype(indices.dtype, np.integer):
                if indices.size:
                    raise DeepRepairError(f"subset indices must be integers or a boolean mask, "
                                          f"got {indices.dtype}")
                indices = indices.astype(np.int64)
        try:
            return ImageSet(self.x[indices], self.y[indices], list(self.classes))
        except IndexError as exc:
            raise DeepRepairError(f"bad subset of {len(self)} images: {exc}") from None


def resolve_data_dir(arg: str | Path | None) -> Path:
    """The dataset folder: ``arg`` if given, else ``$DEEPREPAIR_DATA``, else a DeepRepairError."""
    if arg is not None and str(arg) != "":
        return Path(arg).expanduser()
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    raise DeepRepairError(f"no dataset given: pass --data DIR or set {ENV_VAR}=DIR "
                          f"(accepted: {LAYOUTS})")


def _build(x: np.ndarray, y: np.ndarray, classes: list[str], source: Path) -> ImageSet:
    """Make an ImageSet, prefixing validation errors with the file they came from."""
    if len(x) == 0:
        raise DeepRepairError(f"{source} holds no images: the dataset is empty")
    try:
        return ImageSet(x, y, classes)
    except DeepRepairError as exc:
        raise DeepRepairError(f"{source}: {exc}") from None


def read_npz(path: str | Path, required: Sequence[str], optional: Sequence[str] = (),
             save_hint: str = "np.savez(path, x=images, y=labels)") -> dict[str, np.ndarray]:
    """The arrays ``required`` (and those of ``optional`` that are there) of an ``.npz``, never
    unpickling: a missing array, an object array or a file that is not an .npz is a one-line error.
    The one place user .npz files are opened."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise DeepRepairError(f"cannot read {path}: {exc.strerror or exc}") from None
    if head not in (b"PK\x03\x04", b"PK\x05\x06"):  # np.savez writes a zip archive (an empty one: PK\x05\x06)
        raise DeepRepairError(f"cannot read {path}: it is not an .npz file (not a zip archive); save it with {save_hint}")
    try:
        with np.load(path, allow_pickle=False) as d:
            missing = [k for k in required if k not in d.files]
            if missing:
                raise DeepRepairError(f"{path} has no array {' or '.join(map(repr, missing))} "
                                      f"(found: {', '.join(d.files) or 'nothing'}); save it with {save_hint}")
            return {k: d[k] for k in (*required, *optional) if k in d.files}
    except DeepRepairError:
        raise
    except Exception as exc:  # BadZipFile, ValueError (pickled objects), OSError, not an .npz at all
        first = (str(exc).splitlines() or [""])[0][:160]
        raise DeepRepairError(f"cannot read {path} ({type(exc).__name__}: {first}); expected an .npz "
                              f"written by {save_hint}") from None


def _load_npz(root: Path, split: str) -> ImageSet:
    path = root / f"{split}.npz"
    if not path.is_file():
        have = ", ".join(sorted(p.name for p in root.glob("*.npz")))
        raise DeepRepairError(f"{path} does not exist (this folder has: {have}); "
                              f"pick another split or add {split}.npz")
    d = read_npz(path, ("x", "y"))
    x, y = d["x"], d["y"]
    if not (y.ndim == 1 and np.issubdtype(y.dtype, np.integer)):
        raise DeepRepairError(f"{path}: y must be a 1-D integer array, got {y.dtype} {y.shape}")
    classes = _read_classes_txt(root)
    k = int(y.max()) + 1 if len(y) else 1
    if classes is not None and len(classes) < k:
        raise DeepRepairError(f"{root / 'classes.txt'} lists {len(classes)} classes but {path} "
                              f"has labels up to {k - 1}: add the missing class names")
    if classes is None:
        looks_cifar = k == 10 and x.ndim == 4 and x.shape[1:] == (32, 32, 3)
        classes = list(CIFAR10_CLASSES) if looks_cifar else [str(i) for i in range(k)]
    return _build(x, y, classes, path)


def _read_classes_txt(root: Path) -> list[str] | None:
    path = root / "classes.txt"
    if not path.is_file():
        return None
    try:
        names = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DeepRepairError(f"cannot read {path}: {exc}; it must be UTF-8 text") from None
    while names and not names[-1]:
        names.pop()
    if not names or "" in names:
        raise DeepRepairError(f"{path} must list one non-empty class name per line")
    if len(set(names)) != len(names):
        raise DeepRepairError(f"{path} lists a class name twice: names must be unique")
    return names


def _image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (symlinked folders followed; a link back into the tree is an error,
    since following it would load the same images again under other labels)."""
    files, seen = [], set()
    for d, dirs, fs in os.walk(folder, followlinks=True):
        real = os.path.realpath(d)
        if real in seen:
            raise DeepRepairError(f"{d} is a symbolic link back into {folder} (a link loop or a second path to "
                                  "the same images): remove the link")
        seen.add(real)
        dirs.sort()
        files += [Path(d) / f for f in fs if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
    return sorted(files)


def decode_image(path: Path) -> np.ndarray:
    """One image file as uint8 (H, W, 3) RGB; 16-bit images are scaled to 8 bits, not clipped."""
    return _decode(Path(path))


def _decode(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):  # 16-bit grey: scale, never clip
                grey = np.asarray(im, dtype=np.int64)
                if grey.min() < 0 or grey.max() > 65535:
                    raise ValueError(f"{im.mode} pixel values outside 0..65535")
                return np.repeat(((grey * 255 + 32767) // 65535).astype(np.uint8)[..., None], 3, axis=2)
            if im.mode == "F":
                raise ValueError("floating-point pixels; save it as an 8-bit (or 16-bit) PNG")
            return np.array(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DeepRepairError(f"cannot decode image {path}: {exc}; remove or replace it") from None


def _load_image_folder(base: Path) -> ImageSet:
    """torchvision ImageFolder semantics: classes are the sorted sub-folder names."""
    class_dirs = sorted((d for d in base.iterdir() if d.is_dir() and not d.name.startswith(".")),
                        key=lambda d: d.name)
    if not class_dirs:
        raise DeepRepairError(f"{base} has no class sub-folders; accepted layouts: {LAYOUTS}")
    files: list[tuple[Path, int]] = []
    for label, d in enumerate(class_dirs):
        found = _image_files(d)
        if not found:
            raise DeepRepairError(f"class folder {d} has no images ({'/'.join(IMAGE_EXTENSIONS)}); "
                                  "add images or remove the folder")
        files += [(f, label) for f in found]
    x = _decode_all([f for f, _ in files])
    y = np.array([label for _, label in files], dtype=np.int64)
    return _build(x, y, [d.name for d in class_dirs], base)


def _decode_all(files: list[Path]) -> np.ndarray:
    """The image files as one uint8 (N, H, W, 3) array; they must share one size."""
    first = _decode(files[0])
    x = np.empty((len(files), *first.shape), dtype=np.uint8)
    for i, f in enumerate(files):
        img = first if i == 0 else _decode(f)
        if img.shape != first.shape:
            raise DeepRepairError(f"{f} is {img.shape[1]}x{img.shape[0]} but {files[0]} is "
                                  f"{first.shape[1]}x{first.shape[0]}: all images must share one "
                                  "size, resize them first")
        x[i] = img
    return x


def load_dataset(root: str | Path, split: str = "test") -> ImageSet:
    """Load one split of the dataset in ``root``, auto-detecting its layout (see module doc)."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DeepRepairError(f"data folder {root} does not exist: check --data or {ENV_VAR}")
    if not root.is_dir():
        raise DeepRepairError(f"{root} is a file, expected a dataset folder ({LAYOUTS})")
    if not split or "/" in split or "\\" in split or split.startswith("."):
        raise DeepRepairError(f"bad split name {split!r}: use e.g. 'train' or 'test'")
    if (root / "train.npz").is_file() or (root / "test.npz").is_file():
        return _load_npz(root, split)
    batches = find_batches_dir(root)
    if batches is not None:
        x, y, classes = load_batches(batches, split)
        return _build(x, y, classes, batches)
    if (root / split).is_dir():
        return _load_image_folder(root / split)
    splits = sorted(d.name for d in root.iterdir() if d.is_dir() and d.name in SPLIT_NAMES)
    if splits:
        raise DeepRepairError(f"{root} has no '{split}' folder (found splits: "
                              f"{', '.join(splits)}); pick one of those")
    if any(d.is_dir() and not d.name.startswith(".") for d in root.iterdir()):
        return _load_image_folder(root)
    raise DeepRepairError(f"{root} is not a dataset folder I recognise; "
                          f"accepted layouts: {LAYOUTS}")


def load_failure_set(path: str | Path, classes: list[str]) -> ImageSet:
    """Labelled failure images a user collected: an ``.npz`` with ``x`` (N,H,W,C uint8) and ``y``,
    or a folder with one sub-folder per class (named as in ``classes``; labels follow ``classes``)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DeepRepairError(f"failure set {path} does not exist: give an .npz (x, y) or a "
                              "folder of class sub-folders")
    if path.is_dir():
        ds = _load_image_folder(path)
        unknown = [c for c in ds.classes if c not in classes]
        if unknown:
            raise DeepRepairError(f"{path} has class folders {unknown} that the model does not "
                                  f"know (its classes: {', '.join(classes)})")
        remap = np.array([classes.index(c) for c in ds.classes])
        return ImageSet(ds.x, remap[ds.y], list(classes))
    d = read_npz(path, ("x", "y"), ("severity", "index"))
    x, y = d["x"], d["y"]
    for key in ("severity", "index"):  # written by `deeprepair mine`; read later by repair's report
        if key in d and (d[key].shape != (len(x),) or not np.issubdtype(d[key].dtype, np.integer)):
            raise DeepRepairError(f"{path}: {key} must be one integer per image, got {d[key].dtype} {d[key].shape}")
    if len(x) == 0:
        raise DeepRepairError(f"{path} holds no failure images: collect at least one")
    if np.asarray(y).ndim == 1 and len(y) and (np.min(y) < 0 or np.max(y) >= len(classes)):
        raise DeepRepairError(f"{path} has labels {int(np.min(y))}..{int(np.max(y))} but the model "
                              f"has {len(classes)} classes (0..{len(classes) - 1})")
    try:
        return ImageSet(x, y, list(classes))
    except DeepRepairError as exc:
        raise DeepRepairError(f"{path}: {exc}") from None


def load_unlabelled(path: str | Path) -> np.ndarray:
    """Unlabelled images (``repair --field``): an ``.npz`` with ``x`` (any ``y`` is ignored) or a
    folder of images, searched recursively (sub-folder names are ignored: no labels are needed)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DeepRepairError(f"{path} does not exist: give an .npz with x or a folder of images")
    if path.is_dir():
        files = _image_files(path)
        if not files:
            raise DeepRepairError(f"{path} holds no images ({'/'.join(IMAGE_EXTENSIONS)})")
        return _decode_all(files)
    x = read_npz(path, ("x",), save_hint="np.savez(path, x=images)")["x"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] not in (1, 3) or not len(x):
        raise DeepRepairError(f"{path}: x must be a non-empty uint8 array (N, H, W, 3), got {x.dtype} {x.shape}")
    return x
