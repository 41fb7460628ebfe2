"""Behaviour tests of the data layer on tiny synthetic data (plus one on real CIFAR-10)."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import sys
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeprepair.data import (
    ImageSet,
    atomic_save_npy,
    atomic_write_bytes,
    download_cifar10,
    list_corruptions,
    load_dataset,
    read_corruption,
    read_labels,
    resolve_data_dir,
    sha256_file,
    write_corruption,
    write_labels,
)
from deeprepair.data import download as download_mod
from deeprepair.data.io import atomic_open
from deeprepair.errors import DeepRepairError

REAL_CIFAR = Path(__file__).resolve().parents[2] / "shared/data/cifar10"
CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck"]


def images(n: int = 20, h: int = 32, w: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def labels(n: int = 20, k: int = 10) -> np.ndarray:
    return np.arange(n, dtype=np.int64) % k


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# ---------------------------------------------------------------- ImageSet


def test_imageset_basics_and_subset():
    s = ImageSet(images(), labels().astype(np.int32), ["a"] * 10)
    assert len(s) == 20 and s.num_classes == 10 and s.y.dtype == np.int64
    sub = s.subset([3, 1])
    assert np.array_equal(sub.x, s.x[[3, 1]]) and list(sub.y) == [3, 1]
    assert len(s.subset(s.y == 0)) == 2 and len(s.subset([])) == 0
    with pytest.raises(DeepRepairError):
        s.subset([99])


@pytest.mark.parametrize("x, y, classes, match", [
    (images().astype(np.float32), labels(), list("abcdefghij"), "uint8"),
    (images()[:, :, :, :2], labels(), list("abcdefghij"), "shape"),
    (images()[0], labels(32), list("abcdefghij"), "shape"),  # one RGB image, no batch axis
    (images().transpose(0, 3, 1, 2), labels(), list("abcdefghij"), "channels-first"),
    (images(), labels(19), list("abcdefghij"), "20 images but 19 labels"),
    (images(), labels(), list("abc"), "labels span"),
    (images(), labels().astype(float), list("abcdefghij"), "integer"),
])
def test_imageset_rejects_bad_arrays(x, y, classes, match):
    with pytest.raises(DeepRepairError, match=match):
        ImageSet(x, y, classes)


def test_imageset_takes_grey_with_or_without_channel_axis():
    grey = images()[..., 0]
    a, b = ImageSet(grey, labels(), list("abcdefghij")), ImageSet(grey[..., None], labels(), list("abcdefghij"))
    assert a.x.shape == b.x.shape == (20, 32, 32, 1) and np.array_equal(a.x, b.x)


# ---------------------------------------------------------------- resolve_data_dir


def test_resolve_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("DEEPREPAIR_DATA", raising=False)
    with pytest.raises(DeepRepairError, match="--data DIR or set DEEPREPAIR_DATA"):
        resolve_data_dir(None)
    monkeypatch.setenv("DEEPREPAIR_DATA", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path
    assert resolve_data_dir(tmp_path / "x") == tmp_path / "x"


# ---------------------------------------------------------------- (a) npz folder


def test_npz_roundtrip_and_class_names(tmp_path):
    x, y = images(), labels()
    np.savez_compressed(tmp_path / "test.npz", x=x, y=y)
    s = load_dataset(tmp_path)
    assert np.array_equal(s.x, x) and np.array_equal(s.y, y) and s.classes == CIFAR_NAMES
    (tmp_path / "classes.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n")
    assert load_dataset(tmp_path, "test").classes == [f"c{i}" for i in range(10)]
    with pytest.raises(DeepRepairError, match="train.npz does not exist"):
        load_dataset(tmp_path, "train")


def test_npz_not_cifar_gets_index_names(tmp_path):
    np.savez(tmp_path / "train.npz", x=images(6, 8, 8), y=labels(6, 3))
    assert load_dataset(tmp_path, "train").classes == ["0", "1", "2"]


@pytest.mark.parametrize("arrays, match", [
    ({"x": images()}, "no array 'y'"),
    ({"x": images().astype(np.float32), "y": labels()}, "uint8"),
    ({"x": images(), "y": labels(15)}, "20 images but 15 labels"),
    ({"x": images(0), "y": labels(0)}, "empty"),
])
def test_npz_bad_inputs(tmp_path, arrays, match):
    np.savez(tmp_path / "test.npz", **arrays)
    with pytest.raises(DeepRepairError, match=match):
        load_dataset(tmp_path)


def test_npz_corrupt_file_and_short_classes_txt(tmp_path):
    (tmp_path / "test.npz").write_bytes(b"not a zip")
    with pytest.raises(DeepRepairError, match="cannot read"):
        load_dataset(tmp_path)
    np.savez(tmp_path / "test.npz", x=images(), y=labels())
    (tmp_path / "classes.txt").write_text("a\nb\n")
    with pytest.raises(DeepRepairError, match="classes.txt lists 2 classes"):
        load_dataset(tmp_path)


# ---------------------------------------------------------------- (b) cifar-10-batches-py


class Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` opcodes (BINSTRING), as in the official 2009 files."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes) -> None:
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def dumps(obj: object, protocol: int | str) -> bytes:
    if protocol != "py2":
        return pickle.dumps(obj, protocol=protocol)
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    # numpy 1.x (what wrote the official files) names the helper numpy.core.multiarray
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def write_batches(folder: Path, x: np.ndarray, y: np.ndarray, protocol: int | str = 5) -> None:
    """A cifar-10-batches-py folder in the genuine structure (CHW rows, bytes keys)."""
    folder.mkdir(parents=True)
    rows = x.transpose(0, 3, 1, 2).reshape(len(x), -1)
    parts = {"test_batch": slice(None)}
    step = -(-len(x) // 5)
    parts |= {f"data_batch_{i + 1}": slice(i * step, (i + 1) * step) for i in range(5)}
    for name, part in parts.items():
        batch = {b"batch_label": b"batch " + name.encode(), b"data": rows[part],
                 b"labels": [int(v) for v in y[part]],
                 b"filenames": [f"img_{j}.png".encode() for j in range(len(y[part]))]}
        (folder / name).write_bytes(dumps(batch, protocol))
    meta = {b"num_cases_per_batch": 10000, b"num_vis": 3072,
            b"label_names": [n.encode() for n in CIFAR_NAMES]}
    (folder / "batches.meta").write_bytes(dumps(meta, protocol))


@pytest.mark.parametrize("protocol", ["py2", 2, 5])
def test_cifar_batches_roundtrip(tmp_path, protocol):
    x, y = images(), labels()
    write_batches(tmp_path / "cifar-10-batches-py", x, y, protocol)
    for root in (tmp_path, tmp_path / "cifar-10-batches-py"):
        s = load_dataset(root, "test")
        assert np.array_equal(s.x, x) and np.array_equal(s.y, y) and s.classes == CIFAR_NAMES
    train = load_dataset(tmp_path, "train")
    assert np.array_equal(train.x, x) and np.array_equal(train.y, y)


def test_cifar_batches_chw_to_hwc(tmp_path):
    """First 1024 values of a row are the red plane, then green, then blue."""
    row = np.concatenate([np.full(1024, 10), np.full(1024, 20), np.full(1024, 30)]).astype(np.uint8)
    row[0], row[1] = 7, 8  # red of pixel (0,0) and of pixel (0,1)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": row[None], b"labels": [3]}))
    s = load_dataset(folder)
    assert s.x.shape == (1, 32, 32, 3)
    assert list(s.x[0, 0, 0]) == [7, 20, 30] and list(s.x[0, 0, 1]) == [8, 20, 30]
    assert list(s.x[0, 5, 5]) == [10, 20, 30] and s.classes == CIFAR_NAMES


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_restricted_unpickler_refuses_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": [0]}))
    with pytest.raises(DeepRepairError, match="refusing to load .*system"):
        load_dataset(folder)
    assert not (tmp_path / "PWNED").exists()


def test_cifar_batches_bad_files(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_batches(folder, images(), labels())
    with pytest.raises(DeepRepairError, match="only 'train' and 'test'"):
        load_dataset(folder, "val")
    (folder / "data_batch_3").unlink()
    with pytest.raises(DeepRepairError, match="lacks data_batch_3"):
        load_dataset(folder, "train")
    (folder / "test_batch").write_bytes(b"\x80\x05garbage")
    with pytest.raises(DeepRepairError, match="cannot read"):
        load_dataset(folder)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": images()[:, :4, :4].reshape(20, -1),
                                                      b"labels": list(labels())}))
    with pytest.raises(DeepRepairError, match="expected uint8 \\(N, 3072\\)"):
        load_dataset(folder)


# ---------------------------------------------------------------- (c) ImageFolder


def write_pngs(base: Path, x: np.ndarray, y: np.ndarray, names: list[str]) -> None:
    for i, (img, label) in enumerate(zip(x, y)):
        d = base / names[label]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i:03d}.png")


def test_image_folder_with_splits(tmp_path):
    x, y = images(12, 8, 8), labels(12, 3)
    write_pngs(tmp_path / "test", x, y, ["zebra", "ant", "moth"])
    write_pngs(tmp_path / "train", x[:3], y[:3], ["zebra", "ant", "moth"])
    s = load_dataset(tmp_path, "test")
    assert s.classes == ["ant", "moth", "zebra"]  # sorted like torchvision's ImageFolder
    remap = np.array([2, 0, 1])  # zebra->2, ant->0, moth->1
    order = np.lexsort((np.arange(12), remap[y]))  # grouped by class, then by file name
    assert np.array_equal(s.x, x[order]) and np.array_equal(s.y, remap[y][order])
    assert len(load_dataset(tmp_path, "train")) == 3
    with pytest.raises(DeepRepairError, match="no 'val' folder"):
        load_dataset(tmp_path, "val")


def test_image_folder_without_splits(tmp_path):
    x, y = images(6, 8, 8), labels(6, 2)
    write_pngs(tmp_path, x, y, ["cat", "dog"])
    s = load_dataset(tmp_path, "whatever")
    assert s.classes == ["cat", "dog"] and s.x.shape == (6, 8, 8, 3)
    assert np.array_equal(s.x[s.y == 0], x[y == 0])


def test_image_folder_mixed_sizes(tmp_path):
    write_pngs(tmp_path, images(2, 8, 8), np.array([0, 0]), ["a"])
    Image.fromarray(images(1, 9, 8)[0]).save(tmp_path / "a" / "zz.png")
    with pytest.raises(DeepRepairError, match=r"zz.png is 8x9 .*resize"):
        load_dataset(tmp_path)


def test_image_folder_bad_contents(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(DeepRepairError, match="has no images"):
        load_dataset(tmp_path)
    (tmp_path / "a" / "broken.png").write_bytes(b"nope")
    with pytest.raises(DeepRepairError, match="cannot decode image"):
        load_dataset(tmp_path)


def test_missing_empty_and_unknown_folders(tmp_path):
    with pytest.raises(DeepRepairError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(DeepRepairError, match="accepted layouts"):
        load_dataset(tmp_path)  # empty
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DeepRepairError, match="accepted layouts"):
        load_dataset(tmp_path)
    with pytest.raises(DeepRepairError, match="is a file"):
        load_dataset(tmp_path / "notes.txt")


# ---------------------------------------------------------------- CIFAR-10-C files


def test_cifar_c_roundtrip_and_severities(tmp_path):
    x = images(10, 4, 4)  # 5 severities x 2 images
    write_corruption(tmp_path, "fog", x)
    write_labels(tmp_path, np.array([1, 2]))
    assert list_corruptions(tmp_path) == ["fog"]
    full = read_corruption(tmp_path, "fog")
    assert isinstance(full, np.memmap) and np.array_equal(full, x)
    block = read_corruption(tmp_path, "fog", severity=3)
    assert isinstance(block, np.memmap) and np.array_equal(block, x[4:6])
    assert list(read_labels(tmp_path, 2)) == [1, 2]
    assert np.load(tmp_path / "labels.npy").tolist() == [1, 2] * 5  # official tiled layout
    with pytest.raises(DeepRepairError, match="no severity 6"):
        read_corruption(tmp_path, "fog", severity=6)
    with pytest.raises(DeepRepairError, match=r"snow.npy does not exist .*present: fog"):
        read_corruption(tmp_path, "snow")
    assert no_temp_files(tmp_path)


def test_cifar_c_manifest_and_explicit_severities(tmp_path):
    x = images(6, 4, 4)
    write_corruption(tmp_path, "blur", x)
    atomic_write_bytes(tmp_path / "manifest.json",
                       b'{"corruptions": {"blur": {"severities": [2, 4, 5]}}}')
    assert np.array_equal(read_corruption(tmp_path, "blur", severity=4), x[2:4])
    assert np.array_equal(read_corruption(tmp_path, "blur", 1, severities=[1, 3]), x[:3])
    with pytest.raises(DeepRepairError, match="holds \\[2, 4, 5\\]"):
        read_corruption(tmp_path, "blur", severity=1)
    write_corruption(tmp_path, "odd", images(7, 4, 4))  # 7 is not divisible by 5
    with pytest.raises(DeepRepairError, match="not a multiple"):
        read_corruption(tmp_path, "odd")


def test_cifar_c_labels_formats(tmp_path):
    np.save(tmp_path / "labels.npy", np.array([4, 5, 6]))
    assert read_labels(tmp_path, 3).dtype == np.int64
    with pytest.raises(DeepRepairError, match="expected 4"):
        read_labels(tmp_path, 4)
    np.save(tmp_path / "labels.npy", np.array([1, 2, 3, 4]))
    with pytest.raises(DeepRepairError, match="not the same 2 labels"):
        read_labels(tmp_path, 2)
    with pytest.raises(DeepRepairError, match="different labels"):
        write_labels(tmp_path, np.array([1, 2]))
    write_labels(tmp_path, np.array([1, 2]), num_severities=2, overwrite=True)
    write_labels(tmp_path, np.array([1, 2]), num_severities=2)  # identical: no error
    assert list(read_labels(tmp_path, 2)) == [1, 2]


def test_cifar_c_refuses_overwrite_and_bad_arrays(tmp_path):
    write_corruption(tmp_path, "fog", images(5, 4, 4))
    with pytest.raises(DeepRepairError, match="already exists"):
        write_corruption(tmp_path, "fog", images(5, 4, 4, seed=1))
    assert np.array_equal(read_corruption(tmp_path, "fog"), images(5, 4, 4))
    write_corruption(tmp_path, "fog", images(5, 4, 4, seed=1), overwrite=True)
    assert np.array_equal(read_corruption(tmp_path, "fog"), images(5, 4, 4, seed=1))
    with pytest.raises(DeepRepairError, match="uint8"):
        write_corruption(tmp_path, "snow", images(5, 4, 4).astype(np.float32))
    with pytest.raises(DeepRepairError, match="bad corruption name"):
        write_corruption(tmp_path, "../x", images(5, 4, 4))
    with pytest.raises(DeepRepairError, match="does not exist"):
        read_corruption(tmp_path / "nope", "fog")
    assert no_temp_files(tmp_path)


# ---------------------------------------------------------------- io helpers


def test_atomic_writes_leave_no_temp_files(tmp_path):
    target = tmp_path / "sub" / "a.bin"
    atomic_write_bytes(target, b"hello")
    assert target.read_bytes() == b"hello"
    assert sha256_file(target) == hashlib.sha256(b"hello").hexdigest()
    with pytest.raises(RuntimeError):
        with atomic_open(target) as f:
            f.write(b"partial")
            raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"hello" and no_temp_files(tmp_path)
    atomic_save_npy(tmp_path / "a.npy", np.arange(3))
    assert np.load(tmp_path / "a.npy").tolist() == [0, 1, 2]
    with pytest.raises(DeepRepairError, match="object array"):
        atomic_save_npy(tmp_path / "b.npy", np.array([None]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "sub"]
    with pytest.raises(DeepRepairError, match="does not exist"):
        sha256_file(tmp_path / "missing")


# ---------------------------------------------------------------- download (offline)


def make_fake_archive(x: np.ndarray, y: np.ndarray, tmp_path: Path) -> bytes:
    src = tmp_path / "src"
    write_batches(src / "cifar-10-batches-py", x, y)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return buf.getvalue()


def fake_urlopen(payload: bytes):
    def opener(url, timeout=None):
        assert url == download_mod.CIFAR10_URL
        return io.BytesIO(payload)
    return opener


def test_download_cifar10_offline(tmp_path, monkeypatch):
    x, y = images(), labels()
    payload = make_fake_archive(x, y, tmp_path)
    monkeypatch.setitem(sys.modules, "torchvision", None)  # force the urllib path
    monkeypatch.setattr(download_mod, "CIFAR10_MD5", hashlib.md5(payload).hexdigest())
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen(payload))
    root = tmp_path / "data"
    folder = download_cifar10(root)
    assert folder == root / "cifar-10-batches-py"
    assert np.array_equal(load_dataset(root).x, x)
    assert no_temp_files(root) and not list(root.glob(".cifar10-extract*"))
    assert download_cifar10(root) == folder  # complete: no second download


def test_download_cifar10_bad_md5_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen(b"truncated"))
    root = tmp_path / "data"
    with pytest.raises(DeepRepairError, match="md5"):
        download_cifar10(root)
    assert list(root.iterdir()) == []


def test_download_refuses_unsafe_archive(tmp_path, monkeypatch):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    payload = buf.getvalue()
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setattr(download_mod, "CIFAR10_MD5", hashlib.md5(payload).hexdigest())
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen(payload))
    with pytest.raises(DeepRepairError, match="cannot extract"):
        download_cifar10(tmp_path / "data")
    assert not (tmp_path / "escape.txt").exists()


# ---------------------------------------------------------------- real CIFAR-10


@pytest.mark.cifar
def test_real_cifar10():
    if not (REAL_CIFAR / "test.npz").is_file():
        pytest.skip(f"real CIFAR-10 arrays not found at {REAL_CIFAR}")
    test = load_dataset(REAL_CIFAR, "test")
    assert test.x.shape == (10000, 32, 32, 3) and test.x.dtype == np.uint8
    assert test.classes == CIFAR_NAMES
    assert np.bincount(test.y, minlength=10).tolist() == [1000] * 10
    train = load_dataset(REAL_CIFAR, "train")
    assert train.x.shape == (50000, 32, 32, 3)
    assert np.bincount(train.y, minlength=10).tolist() == [5000] * 10


def test_bundled_digits_are_a_seeded_stratified_split():
    pytest.importorskip("sklearn")
    from deeprepair.data.digits import load_digits_dataset

    train, test = load_digits_dataset()
    assert train.x.shape[1:] == (32, 32, 3) and train.x.dtype == np.uint8
    assert len(train) + len(test) == 1797 and abs(len(test) - 0.2 * 1797) < 10
    assert np.all(np.abs(np.bincount(test.y, minlength=10) / np.bincount(train.y, minlength=10) - 0.25) < 0.03)
    again, _ = load_digits_dataset()
    assert np.array_equal(again.x, train.x) and train.x.max() > 200 and train.x.min() == 0
