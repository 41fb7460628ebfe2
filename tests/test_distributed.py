"""Data-parallel train and repair (``deeprepair/distributed.py``): two CPU processes under torchrun
compute what one process computes.

Two comparisons, each one process against ``torchrun --standalone --nproc_per_node 2``:

- the arithmetic, exactly: ``tests/_distributed_job.py`` runs ``fit`` and a DeepRepair
  ``repair`` (style ops, JSD, distillation, L2 pull, uneven last batches) with the network in
  float64; trained and repaired weights agree to 1e-10 (measured: ~5e-15).
- the commands, in float32: ``python -m deeprepair train`` (2 epochs; the 2-process run is killed
  with SIGKILL after epoch 1 and resumed) and ``repair`` against the same commands under torchrun.
  In float32 one process does not agree with itself across thread counts either: rounding noise
  flips a few ReLU gates and the difference grows step by step. Measured on this data: 2
  processes vs 1 differ by 1.4e-3 (train, 1 epoch) and 5.4e-4 (repair) of the size of the update
  ||w - w_start||; one process with 2 threads vs 1 thread by 8.7e-4 and 6.2e-4. The bound, 5e-2
  of the update, stays far above that noise and far below what a missing piece gives (per-rank
  BatchNorm statistics alone put the first gradient 30% off).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("this torch build has no torch.distributed with gloo", allow_module_level=True)

HERE = Path(__file__).resolve().parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR",
                                                           "MASTER_PORT")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "CUDA_VISIBLE_DEVICES": ""}


def _run(cmd: list[str], cwd: Path) -> None:
    r = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"


def _load(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _max_abs(a: dict, b: dict, prefix: str = "") -> float:
    keys = [k for k in a if k.startswith(prefix) and a[k].is_floating_point()]
    assert keys and set(a) == set(b)
    for k in a:
        if not a[k].is_floating_point():
            assert torch.equal(a[k], b[k]), k  # BatchNorm's step counters
    return max((a[k].double() - b[k].double()).abs().max().item() for k in keys)


def _relative_to_update(one: dict, two: dict, start: dict) -> float:
    """||two - one|| / ||one - start|| over every float tensor of the state dict."""
    keys = [k for k in one if one[k].is_floating_point()]
    diff = sum(float((two[k].double() - one[k].double()).pow(2).sum()) for k in keys) ** 0.5
    step = sum(float((one[k].double() - start[k].double()).pow(2).sum()) for k in keys) ** 0.5
    return diff / step


def test_fit_and_repair_match_one_process_in_float64(tmp_path):
    job = str(HERE / "_distributed_job.py")
    _run([sys.executable, job, str(tmp_path / "one.safetensors"), "fp64"], tmp_path)
    _run([*TORCHRUN, job, str(tmp_path / "two.safetensors"), "fp64"], tmp_path)
    one, two = _load(tmp_path / "one.safetensors"), _load(tmp_path / "two.safetensors")
    assert _max_abs(one, two, "train.") < 1e-10
    assert _max_abs(one, two, "repair.") < 1e-10


def test_torchrun_train_and_repair_match_one_process(tmp_path):
    """The issue's check: `torchrun --standalone --nproc_per_node 2 -m deeprepair repair ...`
    (and `train`) against the single-process command, fp32, on 2 CPU processes."""
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (91, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 3, 91)
    data = tmp_path / "data"
    data.mkdir()
    np.savez(data / "train.npz", x=x[:53], y=y[:53])  # batches 16, 16, 16, 5: the last splits 2 + 3
    np.savez(data / "test.npz", x=x[53:80], y=y[53:80])
    np.savez(tmp_path / "failures.npz", x=x[80:], y=(y[80:] + 1) % 3)
    common = ["--data", str(data), "--batch-size", "16", "--precision", "fp32", "--device", "cpu", "--quiet"]
    train = ["train", "--arch", "resnet-20", "--epochs", "2", "--lr", "0.02", *common]
    _run([sys.executable, "-m", "deeprepair", *train, "--out", "one.safetensors"], tmp_path)
    # the 2-process run is killed (SIGKILL, every process) once epoch 1's state is on disk, then resumed
    job = subprocess.Popen([*TORCHRUN, "-m", "deeprepair", *train, "--out", "two.safetensors"], cwd=tmp_path,
                           env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    state = tmp_path / "two.state.safetensors"
    deadline = time.monotonic() + 120
    while job.poll() is None and not state.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    if job.poll() is None:
        os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    assert state.exists() and not (tmp_path / "two.safetensors").exists(), "the kill came too late to test a resume"
    _run([*TORCHRUN, "-m", "deeprepair", *train, "--out", "two.safetensors", "--resume"], tmp_path)

    from deeprepair.models import Classifier, create_model

    torch.manual_seed(0)  # the train command's initialisation (--seed 0)
    init = Classifier(create_model("resnet-20", 3)).state_dict()
    one, two = _load(tmp_path / "one.safetensors"), _load(tmp_path / "two.safetensors")
    assert _relative_to_update(one, two, init) < 0.05
    assert not list(tmp_path.glob("*.state.safetensors"))  # rank 0 removed the resumable state

    repair = ["repair", "--model", "one.safetensors", "--failures", "failures.npz", "--epochs", "1",
              "--train-subset", "40", "--distill", "0.5", "--preset", "finetune+focal+mix",  # tiny: no certified limit
              *common]  # 40 + 11 failures: 16, 16, 16, 3
    _run([sys.executable, "-m", "deeprepair", *repair, "--out", "r1"], tmp_path)
    _run([*TORCHRUN, "-m", "deeprepair", *repair, "--out", "r2"], tmp_path)
    r1, r2 = _load(tmp_path / "r1/model.safetensors"), _load(tmp_path / "r2/model.safetensors")
    assert _relative_to_update(r1, r2, one) < 0.05
    assert sorted(p.name for p in (tmp_path / "r2").iterdir()) == sorted(p.name for p in (tmp_path / "r1").iterdir())
    rep1, rep2 = (json.loads((tmp_path / d / "report.json").read_text())["repair"] for d in ("r1", "r2"))
    assert rep1["finetune_images"] == rep2["finetune_images"] == 51
    assert rep2["history"][0]["loss"] == pytest.approx(rep1["history"][0]["loss"], rel=1e-3)


def test_shard_covers_the_batch_once():
    from deeprepair.distributed import shard

    for n in (1, 2, 5, 16, 17):
        for w in (1, 2, 3, 4):
            parts = [shard(n, r, w) for r in range(w)]
            assert [i for p in parts for i in range(n)[p]] == list(range(n))
            assert max(p.stop - p.start for p in parts) - min(p.stop - p.start for p in parts) <= 1
