"""Crash-safe file writing and hashing.

A run that is killed half-way must never leave a truncated ``.npy`` or JSON file that a
later run would trust. Every write therefore goes to a temporary file in the target
folder, is flushed to disk (fsync) and only then renamed over the target (``os.replace``
is atomic on POSIX and Windows within one file system).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from deeprepair.errors import DeepRepairError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files with mode 0600; give the final file the usual permissions instead.
_FILE_MODE = 0o666 & ~_current_umask()


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (best effort: not possible on every OS/file system)."""
    if os.name == "nt":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` atomically when the block ends cleanly.

    On any exception the temporary file is removed, ``path`` is left untouched and the
    exception propagates unchanged.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_orphans(path)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _write_error(path, exc) from None
    tmp = Path(tmp_name)
    f = os.fdopen(fd, "wb")
    try:
        yield f
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        try:
            f.close()  # on a full disk closing flushes and fails again: the temp file must still go
        except OSError:
            pass
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but is not ours
        return True
    return True


def remove_orphans(path: str | Path, any_name: bool = False) -> list[Path]:
    """Remove the temporary files that killed writers of ``path`` left beside it (named
    ``.<name>.<pid>.<random>.tmp``; a live process's file is kept), or with ``any_name`` those of
    every file in the folder ``path``. Returns what was removed."""
    path = Path(path)
    removed = []
    pattern = path / ".*.tmp" if any_name else path.parent / f".{glob.escape(path.name)}.*.tmp"
    for tmp in Path(pattern).parent.glob(Path(pattern).name):
        pid = tmp.name[:-len(".tmp")].rsplit(".", 2)[-2] if tmp.name.count(".") >= 4 else ""
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _write_error(path: Path | str, exc: OSError) -> DeepRepairError:
    return DeepRepairError(f"cannot write {path}: {exc.strerror or exc}; check that the folder "
                           "is writable and the disk has free space")


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename); return the path."""
    try:
        with atomic_open(path) as f:
            f.write(data)
    except OSError as exc:
        raise _write_error(path, exc) from None
    return Path(path)


def atomic_save_npy(path: str | Path, arr: np.ndarray) -> Path:
    """Save ``arr`` as a ``.npy`` file at exactly ``path``, atomically; return the path.

    Object arrays are refused (they would need pickle to load back).
    """
    arr = np.asanyarray(arr)
    if arr.dtype.hasobject:
        raise DeepRepairError(f"cannot save an object array to {path}: convert it to a numeric "
                              "dtype first")
    try:
        with atomic_open(path) as f:
            np.save(f, arr, allow_pickle=False)
    except OSError as exc:
        raise _write_error(path, exc) from None
    return Path(path)


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_figure_path(path: str | Path, flag: str) -> Path:
    """A figure's output path: a ``.png`` that is absent or a PNG (a figure made before, replaced);
    never a folder or another file (an input given by mistake would be overwritten)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise DeepRepairError(f"{flag} {path} must name a .png file")
    if path.is_dir():
        raise DeepRepairError(f"{flag} {path} is a folder: give the .png file to write")
    if path.exists():
        try:
            with open(path, "rb") as f:
                head = f.read(len(PNG_MAGIC))
        except OSError as exc:
            raise DeepRepairError(f"cannot read {path}: {exc.strerror or exc}") from None
        if head != PNG_MAGIC:
            raise DeepRepairError(f"{flag} {path} exists and is not a PNG figure: choose another path")
    return path


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks so large arrays never sit in memory twice."""
    path = Path(path)
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(chunk_size):
                digest.update(chunk)
    except FileNotFoundError:
        raise DeepRepairError(f"cannot hash {path}: the file does not exist") from None
    except OSError as exc:
        raise DeepRepairError(f"cannot read {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()
