"""Kill -9 resume: ``corrupt``, ``train``, ``repair`` and ``bench`` are started in a
subprocess on tiny data, killed with SIGKILL at seeded random points, and rerun; the final outputs
must equal an uninterrupted run's (byte for byte, or bit for bit for weights, timings aside), and
no file that was finished when the kill came may be rewritten by the rerun.

With ``DEEPREPAIR_FUZZ_LOG=path`` each kill appends its outcome as one JSON line (read by
``benchmarks/robustness.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import write_tiny_workspace

TIMING = ("seconds", "wall", "img_per_s")  # keys (and *_seconds) that differ between identical runs
STATE_SUFFIXES = (".state.safetensors", ".run.json", ".tmp")


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("DEEPREPAIR_DATA", None)
    return env


def _cmd(argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "deeprepair", *argv, "--quiet"]


def _run(argv: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(_cmd(argv), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return time.perf_counter() - t0


def _snapshot(out: Path) -> frozenset:
    try:
        return frozenset((str(p), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file())
    except OSError:  # a file renamed away while listing
        return frozenset()


def _watch(argv: list[str], cwd: Path, out: Path, kill_at: tuple[int, float] | None = None) -> tuple[int, bool]:
    """Run the command while counting the changes it makes to ``out`` (files appearing, replaced or
    removed, polled every few ms). With ``kill_at = (k, delay)``: SIGKILL it ``delay`` seconds after
    the k-th change. Returns (changes seen, whether it was killed)."""
    proc = subprocess.Popen(_cmd(argv), cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen, last, t_kill = 0, _snapshot(out), None
    while proc.poll() is None:
        now = _snapshot(out)
        if now != last:
            seen, last = seen + 1, now
            if kill_at and seen == kill_at[0] and t_kill is None:
                t_kill = time.perf_counter() + kill_at[1]
        if t_kill is not None and time.perf_counter() >= t_kill:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return seen, True
        time.sleep(0.003)
    err = proc.stderr.read().decode()
    assert proc.returncode == 0, err
    return seen, False


def _finished_files(out: Path) -> dict[str, tuple[int, int, str]]:
    """Files a run has finished (not its resume state, parts or temporary files): stat and hash."""
    files = {}
    for p in sorted(out.rglob("*")):
        rel = str(p.relative_to(out))
        if not p.is_file() or ".parts" in p.parts or rel.endswith(STATE_SUFFIXES) or p.name.startswith("."):
            continue
        st = p.stat()
        files[rel] = (st.st_mtime_ns, st.st_ino, hashlib.sha256(p.read_bytes()).hexdigest())
    return files


def _rebuilt_by_design(rel: str, finished: dict) -> bool:
    """Files every run rewrites from the finished ones: corrupt's manifest, bench's profile record and
    report; and a checkpoint's JSON written before its weights (the weights mark it finished)."""
    if rel in ("manifest.json", "profile.json", "report.md", "report.html") or rel.startswith("figures/"):
        return True
    return rel.endswith(".json") and rel[:-5] + ".safetensors" not in finished and Path(rel).stem not in (
        "report", "mining") and not rel.startswith("cells/")


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items()
                if k not in TIMING and not k.endswith("_seconds") and k not in ("history", "versions")}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _content(p: Path, out: Path):
    """What must be identical between an interrupted and an uninterrupted run, for one file."""
    if p.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return {k: hashlib.sha256(v.tobytes()).hexdigest() for k, v in load_file(str(p)).items()}
    if p.suffix == ".json":
        return _strip(json.loads(p.read_text().replace(str(out), "OUT")))  # commands name their --out
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _outputs(out: Path, keep) -> dict:
    got = {}
    for p in sorted(out.rglob("*")):
        rel = str(p.relative_to(out))
        if not (p.is_file() and keep(rel)):
            continue
        content = _content(p, out)
        if rel.startswith("cells/"):  # a bench cell is named by a hash of its model file, whose metadata
            rel = rel.rsplit("__", 1)[0]  # holds its training time: compare it by what it is a cell of
            content = {k: v for k, v in content.items() if k not in ("hash", "model")}
        got[rel] = content
    return got


def _log(row: dict) -> None:
    path = os.environ.get("DEEPREPAIR_FUZZ_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """40 training and 20 test images (32x32), a failure set of 8 and a random-init model."""
    return write_tiny_workspace(tmp_path_factory.mktemp("kill"))


COMMANDS = {  # name -> (argv with OUT, the outputs compared, argv added on the rerun, kill points)
    "corrupt": (["corrupt", "--data", "data", "--out", "OUT", "--corruptions", "fog", "contrast", "gaussian_noise",
                 "glass_blur"],
                lambda rel: rel.endswith(".npy") or rel == "manifest.json", [], 3),
    "train": (["train", "--arch", "resnet-20", "--data", "data", "--out", "OUT/m.safetensors", "--epochs", "3",
               "--batch-size", "16", "--precision", "fp32"],
              lambda rel: rel == "m.safetensors", ["--resume"], 3),
    "repair": (["repair", "--model", "model.safetensors", "--data", "data", "--failures", "fail.npz", "--out", "OUT",
                "--method", "finetune", "--epochs", "3", "--batch-size", "16", "--precision", "fp32"],
               lambda rel: rel in ("model.safetensors", "report.json"), [], 2),
    "bench": (["bench", "--profile", "smoke", "--data", "data", "--out", "OUT", "--methods", "original", "finetune"],
              lambda rel: rel.startswith(("cells/", "models/")) and rel.endswith((".json", ".safetensors"))
              or rel.startswith("mine/") and rel.endswith(".npz"), [], 2),
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_kill_9_then_rerun_gives_the_uninterrupted_result(name, tiny, tmp_path):
    argv, keep, again, points = COMMANDS[name]
    inputs = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(tiny.rglob("*")) if p.is_file()}
    ref = tmp_path / "ref"
    ref.mkdir()
    events, _ = _watch([a.replace("OUT", str(ref)) for a in argv], tiny, ref)
    want = _outputs(ref, keep)
    assert want and events >= 2, "the uninterrupted run wrote nothing to compare"
    rng = np.random.default_rng(24 + len(name))
    # seeded kill points: just after a random one of the changes the run makes to its folder
    ks = np.sort(rng.choice(np.arange(1, events), size=min(points, events - 1), replace=False))
    kills = 0
    for i, k in enumerate(ks):
        delay = float(rng.uniform(0, 0.02))
        out = tmp_path / f"k{i}"
        out.mkdir()
        _, killed = _watch([a.replace("OUT", str(out)) for a in argv], tiny, out, kill_at=(int(k), delay))
        before = _finished_files(out) if out.exists() else {}
        _run([a.replace("OUT", str(out)) for a in argv] + again, tiny)
        got = _outputs(out, keep)
        after = _finished_files(out)
        rewritten = sorted(rel for rel, (mtime, ino, sha) in before.items()
                           if not _rebuilt_by_design(rel, before) and after.get(rel, (None, None, None))[:2] != (mtime, ino))
        leftovers = sorted(str(p.relative_to(out)) for p in out.rglob("*")
                           if p.is_file() and (p.name.endswith(STATE_SUFFIXES) or ".parts" in p.parts))
        row = {"class": "kill -9 resume", "case": f"{name}-kill-{i}-after-change-{k}-of-{events}", "killed": killed,
               "identical": got == want, "rewritten": rewritten, "leftovers": leftovers,
               "finished_at_kill": len(before)}
        _log(row)
        kills += killed
        assert got == want, f"{name}: the rerun after a kill after change {k} differs from an uninterrupted run"
        assert not rewritten, f"{name}: finished files rewritten by the rerun: {rewritten}"
        assert not leftovers, f"{name}: state or parts left after the run finished: {leftovers}"
    assert kills, f"{name}: every run finished before its kill point: nothing was resumed"
    assert inputs == {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in inputs}, "an input file changed"


def test_corrupt_killed_between_its_file_and_the_manifest_resumes(tiny, tmp_path, monkeypatch, capsys):
    """The window the issue found: ``<name>.npy`` written, the manifest not yet updated. The rerun
    recognises the file as its own (it is the join of its finished blocks) instead of refusing it."""
    import deeprepair.corruptions.generate as gen
    from deeprepair.cli import main

    argv = ["corrupt", "--data", str(tiny / "data"), "--corruptions", "fog", "contrast", "--quiet"]
    assert main(argv + ["--out", str(tmp_path / "ref")]) == 0
    real = gen._entry

    def killed(name, *a, **k):  # the process dies right after contrast.npy is in place
        if name == "contrast":
            raise KeyboardInterrupt
        return real(name, *a, **k)

    monkeypatch.setattr(gen, "_entry", killed)
    assert main(argv + ["--out", str(tmp_path / "k")]) == 130
    monkeypatch.setattr(gen, "_entry", real)
    assert (tmp_path / "k" / "contrast.npy").is_file()
    assert "contrast" not in json.loads((tmp_path / "k" / "manifest.json").read_text())["corruptions"]
    stamp = (tmp_path / "k" / "contrast.npy").stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv + ["--out", str(tmp_path / "k")]) == 0, capsys.readouterr().err
    for f in ("fog.npy", "contrast.npy", "labels.npy"):
        assert (tmp_path / "k" / f).read_bytes() == (tmp_path / "ref" / f).read_bytes()
    assert (tmp_path / "k" / "contrast.npy").stat().st_mtime_ns == stamp  # adopted, not rewritten
    assert not (tmp_path / "k" / ".parts").exists()
    # a file that is not the join of this run's blocks is still refused
    (tmp_path / "k" / "contrast.npy").write_bytes((tmp_path / "ref" / "fog.npy").read_bytes())
    assert main(argv + ["--out", str(tmp_path / "k")]) == 2
    assert "not made by this command" in capsys.readouterr().err


def test_temporary_files_of_killed_writers_are_removed(tiny, tmp_path, capsys):
    """``.tmp`` files that a killed process left (its pid is dead) go on the next run; a live
    process's are kept."""
    from deeprepair.cli import main

    out = tmp_path / "out"
    (out / ".parts").mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphans = [out / ".parts" / f".fog-s1-0123456789abcdef.npy.{dead.pid}.k2j3h4.tmp",
               out / f".manifest.json.{dead.pid}.a1b2c3.tmp", out / f".fog.npy.{dead.pid}.zz_9.tmp"]
    alive = out / f".fog.npy.{os.getppid()}.keep1.tmp"
    for p in [*orphans, alive]:
        p.write_bytes(b"half")
    assert main(["corrupt", "--data", str(tiny / "data"), "--out", str(out), "--corruptions", "fog", "--quiet"]) == 0
    assert not any(p.exists() for p in orphans)
    assert alive.exists()
