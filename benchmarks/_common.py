"""Helpers shared by the benchmark scripts: data loading, provenance header, atomic result files."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "cifar10"
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"

if str(REPO_ROOT / "src") not in sys.path:  # works from a checkout even without `pip install -e .`
    try:
        import deeprepair  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(REPO_ROOT / "src"))

from deeprepair.heap import keep_heap  # noqa: E402

keep_heap()  # as the `deeprepair` command does: big tensors without mmap/munmap on every step


def import_corruptions():
    """Return ``(corrupt, CORRUPTIONS, HELDOUT_CORRUPTIONS)`` from ``deeprepair.corruptions``."""
    try:
        from deeprepair.corruptions import CORRUPTIONS, HELDOUT_CORRUPTIONS, corrupt
    except ImportError as exc:
        raise SystemExit(f"cannot import deeprepair.corruptions ({exc}); is the package installed?") from exc
    return corrupt, tuple(CORRUPTIONS), tuple(HELDOUT_CORRUPTIONS)


def select_corruptions(spec: str | None, main: tuple[str, ...], heldout: tuple[str, ...]) -> list[str]:
    """``None``/"all" -> main + held-out; "main"/"heldout"; or a comma-separated list of names."""
    if spec in (None, "", "all"):
        return list(main) + list(heldout)
    if spec == "main":
        return list(main)
    if spec == "heldout":
        return list(heldout)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in main and n not in heldout]
    if unknown:
        raise SystemExit(f"unknown corruption(s): {', '.join(unknown)}; known: {', '.join(main + heldout)}")
    return names


def load_test_images(data_dir: str | os.PathLike, n: int) -> tuple[np.ndarray, str]:
    """``n`` images of ``<data_dir>/test.npz`` (uint8 NHWC) and a path label: a fixed random
    subset (seed 0, in index order), because the local test set is sorted by class and its
    first 1,000 images are all airplanes."""
    path = Path(data_dir) / "test.npz"
    if not path.is_file():
        raise SystemExit(f"CIFAR-10 test set not found: {path} (pass --data DIR holding test.npz)")
    with np.load(path) as d:
        x = d["x"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3):
        raise SystemExit(f"{path}: expected x uint8 (N,32,32,3), got {x.dtype} {x.shape}")
    if n > len(x):
        raise SystemExit(f"--n {n} > {len(x)} images in {path}")
    idx = np.sort(np.random.default_rng(0).choice(len(x), n, replace=False)) if n < len(x) else np.arange(n)
    return np.ascontiguousarray(x[idx]), str(path)


def _git(*args: str) -> str | None:
    try:
        r = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def _cpu_model() -> str:
    from deeprepair.engine import cpu_model

    return cpu_model()


def dist_versions(names) -> dict:
    """Installed versions of the given distributions ('not installed' when absent)."""
    from importlib import metadata

    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = "not installed"
    return out


def provenance(argv: list[str] | None = None, extra_dists=()) -> dict:
    """Command line, code version, date and machine, for the header of a results file."""
    argv = list(sys.argv if argv is None else argv)
    script = argv[0] if argv else ""
    try:
        script = os.path.relpath(os.path.abspath(script), REPO_ROOT)
    except ValueError:
        pass
    commit = _git("rev-parse", "--short", "HEAD") or "uncommitted"
    status = _git("status", "--porcelain", "--untracked-files=no") if commit != "uncommitted" else None
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    versions.update(dist_versions(extra_dists))
    threads = {}
    try:
        import torch

        versions["torch"] = torch.__version__
        threads["torch"] = torch.get_num_threads()
    except ImportError:
        versions["torch"] = "not installed"
    try:
        import cv2

        versions["opencv"] = cv2.__version__
        threads["opencv"] = cv2.getNumThreads()
    except ImportError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {
        "command": "python " + shlex.join([script, *argv[1:]]),
        "commit": commit,
        "tracked_changes": bool(status) if status is not None else None,
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "cores_usable": affinity,
            "platform": platform.platform(),
        },
        "versions": versions,
        "threads": threads,
    }


def provenance_markdown(p: dict) -> str:
    m, v = p["machine"], p["versions"]
    commit = p["commit"] + (" (with uncommitted changes)" if p.get("tracked_changes") else "")
    vers = ", ".join(f"{k} {val}" for k, val in v.items())
    thr = ", ".join(f"{k} {val}" for k, val in p.get("threads", {}).items())
    lines = [
        f"- command: `{p['command']}`",
        f"- commit: {commit}",
        f"- date (UTC): {p['date']}",
        f"- machine: {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable by this process), {m['platform']}",
        f"- versions: {vers}",
    ]
    if thr:
        lines.append(f"- threads: {thr}")
    return "\n".join(lines)


def images_digest(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()[:16]


def image_settings(data_path: str, x: np.ndarray) -> dict:
    """The images a benchmark ran on, for its ``settings``: file, count and digest."""
    return {"data": data_path, "n_images": len(x), "images_sha256_16": images_digest(x)}


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (the package's temp file + fsync + os.replace)."""
    from deeprepair.data.io import atomic_write_bytes

    atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _finite_or_none(o):
    """JSON has no inf/nan: map them to None (recursively)."""
    if isinstance(o, float) and not np.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _finite_or_none(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite_or_none(v) for v in o]
    return o


def report(out_dir: str | os.PathLike, stem: str, res: dict, to_markdown, quiet: bool) -> dict:
    """Write ``res`` (and its Markdown, ``to_markdown(res)``) as ``<stem>.md/.json`` in ``out_dir``;
    print the table and the paths unless ``quiet``. Returns ``res["summary"]``."""
    md = to_markdown(res)
    md_path, js_path = write_results(out_dir, stem, md, res)
    if not quiet:
        print(md)
        print(f"wrote {md_path} and {js_path}")
    return res["summary"]


def write_results(out_dir: str | os.PathLike, stem: str, markdown: str, data: dict) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    md, js = out_dir / f"{stem}.md", out_dir / f"{stem}.json"
    payload = json.loads(json.dumps(data, default=_json_default))  # numpy -> python first
    atomic_write_text(js, json.dumps(_finite_or_none(payload), indent=2, allow_nan=False) + "\n")
    atomic_write_text(md, markdown if markdown.endswith("\n") else markdown + "\n")
    return md, js
