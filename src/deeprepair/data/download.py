"""Download the official CIFAR-10 python archive (for users who are online).

Uses torchvision when it is installed; otherwise a small urllib downloader that checks the
published md5, writes to a temporary file first and extracts with tarfile's "data" filter
(no absolute paths, no ``..``, no links out of the folder).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from deeprepair.data.cifar_batches import FOLDER_NAME, TEST_FILES, TRAIN_FILES
from deeprepair.data.io import atomic_open
from deeprepair.errors import DeepRepairError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_NAME = "cifar-10-python.tar.gz"


def _md5_file(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _is_complete(folder: Path) -> bool:
    return all((folder / n).is_file() for n in (*TRAIN_FILES, *TEST_FILES))


def _fetch(url: str, dest: Path) -> None:
    """Stream ``url`` into ``dest`` atomically and check the md5; a bad download leaves nothing."""
    hint = f"download {url} by hand and extract it into {dest.parent}"
    digest = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, atomic_open(dest) as out:
            while chunk := resp.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
            if digest.hexdigest() != CIFAR10_MD5:
                raise DeepRepairError(f"downloaded {url} has md5 {digest.hexdigest()}, expected "
                                      f"{CIFAR10_MD5} (corrupt or truncated); retry, or {hint}")
    except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets
        reason = getattr(exc, "reason", exc)
        raise DeepRepairError(f"cannot download {url}: {reason}; check the connection, "
                              f"or {hint}") from None


def _extract(archive: Path, root: Path) -> None:
    """Extract into a temp folder beside the target, then move the batch folder into place."""
    tmp = Path(tempfile.mkdtemp(prefix=".cifar10-extract.", dir=root))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DeepRepairError(f"cannot extract {archive}: {exc}; delete it and download "
                                  "again") from None
        extracted = tmp / FOLDER_NAME
        if not _is_complete(extracted):
            raise DeepRepairError(f"{archive} does not contain a complete {FOLDER_NAME} folder; "
                                  "delete it and download again")
        target = root / FOLDER_NAME
        if target.exists():
            shutil.rmtree(target)
        os.replace(extracted, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def download_cifar10(root: str | Path) -> Path:
    """Download and extract CIFAR-10 into ``root``; return ``root/cifar-10-batches-py``.

    Does nothing when the folder is already complete; reuses a verified archive in ``root``.
    """
    root = Path(root).expanduser()
    target = root / FOLDER_NAME
    if _is_complete(target):
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeepRepairError(f"cannot create {root}: {exc.strerror or exc}") from None
    try:
        import torchvision  # noqa: F401  (optional dependency)
    except ImportError:
        pass
    else:
        from torchvision.datasets import CIFAR10
        try:
            CIFAR10(str(root), train=True, download=True)
        except Exception as exc:  # network / checksum errors, surfaced as one line
            raise DeepRepairError(f"torchvision could not download CIFAR-10 into {root}: "
                                  f"{exc}; or download {CIFAR10_URL} by hand and extract it "
                                  "there") from None
        return target
    archive = root / ARCHIVE_NAME
    if not (archive.is_file() and _md5_file(archive) == CIFAR10_MD5):
        _fetch(CIFAR10_URL, archive)
    _extract(archive, root)
    return target
