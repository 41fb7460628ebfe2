#!/usr/bin/env python
"""Does bf16 autocast training lose accuracy? Short pre-training runs in fp32 and in bf16.

Runs `deeprepair train` (channels_last, the standard recipe) for --epochs epochs per precision
and seed, and tabulates the clean test accuracy after each epoch and the wall-clock. Each run's
checkpoint under --work is reused, so an interrupted benchmark resumes where it stopped.

    python benchmarks/train_precision.py [--arch resnet-20] [--epochs 4] [--seeds 0,1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from _common import DEFAULT_DATA, DEFAULT_OUT, REPO_ROOT, provenance, provenance_markdown, write_results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="resnet-20")
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--work", default=str(REPO_ROOT / "runs" / "train_precision"))
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args()

    prov = provenance()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for prec in ("fp32", "bf16"):
            ckpt = work / f"{args.arch}-{prec}-e{args.epochs}-s{seed}.safetensors"
            if not ckpt.with_suffix(".json").is_file():
                subprocess.run([sys.executable, "-m", "deeprepair", "train", "--arch", args.arch, "--data", args.data,
                                "--out", str(ckpt), "--epochs", str(args.epochs), "--seed", str(seed),
                                "--precision", prec, "--resume", "--quiet"], check=True)
            meta = json.loads(ckpt.with_suffix(".json").read_text())
            runs.append({"precision": prec, "seed": seed, "accuracy": meta["clean_accuracy"],
                         "per_epoch": [h["test_acc"] for h in meta["history"]],
                         "epoch_seconds": statistics.median(h["seconds"] for h in meta["history"])})
            print(runs[-1], flush=True)

    lines = [f"# bf16 vs fp32 pre-training accuracy ({args.arch}, {args.epochs} epochs)\n", provenance_markdown(prov),
             "Same recipe, seed and data order; only the autocast precision differs. Clean CIFAR-10 test accuracy "
             "after each epoch; the last column is the median wall-clock of an epoch on this machine.\n",
             "| precision | seed | " + " | ".join(f"epoch {i + 1}" for i in range(args.epochs)) + " | s/epoch |",
             "|---|---:|" + "---:|" * (args.epochs + 1)]
    for r in runs:
        lines.append(f"| {r['precision']} | {r['seed']} | " + " | ".join(f"{a * 100:.2f}" for a in r["per_epoch"])
                     + f" | {r['epoch_seconds']:.0f} |")
    by = {p: [r["accuracy"] for r in runs if r["precision"] == p] for p in ("fp32", "bf16")}
    lines.append("")
    for p, accs in by.items():
        sd = f" ± {statistics.stdev(accs) * 100:.2f}" if len(accs) > 1 else ""
        lines.append(f"- {p}: final accuracy {statistics.mean(accs) * 100:.2f}{sd} over {len(accs)} seed(s)")
    diffs = [b["accuracy"] - f["accuracy"] for f, b in zip(runs[0::2], runs[1::2])]
    lines.append(f"- bf16 - fp32 per seed: {', '.join(f'{d * 100:+.2f}' for d in diffs)} points")
    write_results(args.out, "train_precision", "\n".join(lines), {"provenance": prov, "runs": runs})


if __name__ == "__main__":
    main()
