#!/usr/bin/env python
"""Data-parallel repair: one process vs `torchrun --nproc_per_node 2` on this machine.

The same `deeprepair repair` command (ResNet-20 from checkpoints/, DeepRepair, 1 epoch over
--train-subset CIFAR-10 training images + --failures fog images, batch 128) runs as one process
with all cores, one process with one thread, and two processes of one thread each under torchrun
(gloo). Reported: the fine-tuning stage's seconds (the repair report's ``seconds``: the batch
loop and the per-epoch validation) and the whole command's wall time (start-up, data loading,
the split, k-means and, in rank 0 only, the before/after evaluation). Whether a `deeprepair
bench` was running meanwhile (the timings are then contended) is recorded with the load average.

    python benchmarks/distributed_speed.py [--data DIR] [--train-subset 2000] [--failures 200]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import DEFAULT_DATA, DEFAULT_OUT, REPO_ROOT, provenance, provenance_markdown, write_results


def other_load() -> list[str]:
    """Command lines of `deeprepair bench` processes running now (they contend for the cores)."""
    r = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True)
    return [line.strip() for line in r.stdout.splitlines() if "deeprepair bench" in line and "ps -eo" not in line]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--model", default=str(REPO_ROOT / "checkpoints/resnet-20.safetensors"))
    ap.add_argument("--train-subset", type=int, default=2000)
    ap.add_argument("--failures", type=int, default=200)
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args()

    from deeprepair.corruptions import corrupt

    prov = provenance()
    with np.load(Path(args.data) / "test.npz") as d:
        pick = np.sort(np.random.default_rng(0).choice(len(d["y"]), args.failures, replace=False))
        fx, fy = corrupt(d["x"][pick], "fog", 3, seed=0), d["y"][pick]
    limit = args.train_subset + args.train_subset // 2  # --limit: train (and test) subset; 10% of it is validation
    runs = {"1 process, all cores": ([sys.executable, "-m", "deeprepair"], {}),
            "1 process, 1 thread": ([sys.executable, "-m", "deeprepair"], {"OMP_NUM_THREADS": "1"}),
            "torchrun, 2 processes x 1 thread": ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                  "--nproc_per_node", "2", "-m", "deeprepair"],
                                                 {"OMP_NUM_THREADS": "1"})}
    rows, data = [], {}
    load_before, bench_before = os.getloadavg(), other_load()
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "fog.npz", x=fx, y=fy)
        for name, (launcher, env) in runs.items():
            out = Path(tmp) / name.replace(" ", "_").replace(",", "")
            cmd = [*launcher, "repair", "--model", args.model, "--data", args.data, "--limit", str(limit),
                   "--failures", str(Path(tmp) / "fog.npz"), "--out", str(out), "--epochs", "1",
                   "--train-subset", str(args.train_subset), "--precision", args.precision, "--quiet"]
            full_env = {**{k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}, **env}
            t = time.perf_counter()
            r = subprocess.run(cmd, env=full_env, capture_output=True, text=True)
            wall = time.perf_counter() - t
            if r.returncode:
                raise SystemExit(f"{name} failed:\n{r.stderr[-3000:]}")
            rep = json.loads((out / "report.json").read_text())["repair"]
            data[name] = {"wall_seconds": wall, "finetune_seconds": rep["seconds"], "img_per_s": rep["img_per_s"],
                          "finetune_images": rep["finetune_images"], "precision": rep["precision"],
                          "val_score": rep["history"][-1].get("val_score")}
            print(f"{name:34s} fine-tune {rep['seconds']:6.1f} s ({rep['img_per_s']:5.0f} img/s), "
                  f"command {wall:6.1f} s", flush=True)
    load_after, bench_after = os.getloadavg(), other_load()
    base = min((d for n, d in data.items() if n.startswith("1 process")), key=lambda d: d["finetune_seconds"])
    base_name = next(n for n, d in data.items() if d is base)
    for name, d in data.items():
        rows.append(f"| {name} | {d['finetune_seconds']:.1f} | {d['img_per_s']:.0f} | "
                    f"{base['finetune_seconds'] / d['finetune_seconds']:.2f}x | {d['wall_seconds']:.1f} | "
                    f"{base['wall_seconds'] / d['wall_seconds']:.2f}x |")
    contended = bool(bench_before or bench_after)
    load_note = (f"- **contended:** a `deeprepair bench` was running on this machine during the measurement "
                 f"({len(set(bench_before + bench_after))} process(es); load average {load_before[0]:.1f} before, "
                 f"{load_after[0]:.1f} after), so every timing shares the cores with it"
                 if contended else f"- no `deeprepair bench` was running (load average {load_before[0]:.1f} before, "
                                   f"{load_after[0]:.1f} after)")
    md = ["# Data-parallel repair: 1 process vs 2 (torchrun, gloo) on this machine\n", provenance_markdown(prov),
          f"- `deeprepair repair` of `{Path(args.model).name}` with DeepRepair, 1 epoch over {args.train_subset} "
          f"CIFAR-10 training images + {args.failures} fog (severity 3) images, batch 128, precision "
          f"{base['precision']}; each run is one command from start to exit",
          load_note, "",
          f"Speed-ups are against the faster one-process run ({base_name}).", "",
          "| run | fine-tune s | img/s | speed-up | command s | speed-up |",
          "|---|---:|---:|---:|---:|---:|", *rows, "",
          "Two processes split each batch of 128 into two halves of 64 (one thread each) and all-reduce the",
          "gradients and every BatchNorm layer's statistics; the augmentation of the whole batch runs on both.",
          "On two cores this is the same compute as one process with two threads, plus the communication, so it",
          "cannot pay here; it pays when one machine is too slow (docs/models.md, docs/repair.md)."]
    write_results(args.out, "distributed_speed", "\n".join(md),
                  {"provenance": prov, "runs": data, "contended_by_bench": contended,
                   "bench_processes": sorted(set(bench_before + bench_after)),
                   "load_average_before": load_before, "load_average_after": load_after,
                   "train_subset": args.train_subset, "failures": args.failures})


if __name__ == "__main__":
    main()
