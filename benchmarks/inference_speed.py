#!/usr/bin/env python
"""Batched inference speed (img/s) per model, with and without the glibc heap setting.

`deeprepair.engine.predict` (bf16 autocast where supported, batch 500) on --images clean test
images, after one warm-up batch. ``keep_heap`` changes the whole process, so each
configuration runs in a fresh subprocess (this script with --child).

    python benchmarks/inference_speed.py [--models resnet-20,densenet-bc-40-12] [--images 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from _common import DEFAULT_DATA, DEFAULT_OUT, REPO_ROOT, provenance, provenance_markdown, write_results


def child(model: str, data: str, images: int) -> None:
    import numpy as np

    from deeprepair.engine import predict
    from deeprepair.models.checkpoint import load_checkpoint

    m, _ = load_checkpoint(REPO_ROOT / "checkpoints" / f"{model}.safetensors")
    x = np.load(os.path.join(data, "test.npz"))["x"]
    x = x[np.random.default_rng(0).choice(len(x), images, replace=False)]
    predict(m, x[:500])
    t = time.perf_counter()
    predict(m, x)
    print(json.dumps({"img_per_s": images / (time.perf_counter() - t)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="resnet-20,wrn-16-2,allconvnet-s,densenet-bc-40-12")
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:  # _common already applied keep_heap unless DEEPREPAIR_KEEP_HEAP=0
        child(args.child, args.data, args.images)
        return

    prov = provenance()
    rows = []
    for model in args.models.split(","):
        row = {"model": model}
        for heap in ("0", "1"):
            env = {**os.environ, "DEEPREPAIR_KEEP_HEAP": heap}
            out = subprocess.run([sys.executable, __file__, "--child", model, "--data", args.data, "--images",
                                  str(args.images)], env=env, check=True, capture_output=True, text=True).stdout
            row["keep_heap" if heap == "1" else "default_heap"] = json.loads(out.strip().splitlines()[-1])["img_per_s"]
        rows.append(row)
        print(row, flush=True)
    lines = ["# Batched inference speed, with and without `keep_heap`\n", provenance_markdown(prov),
             f"- `deeprepair.engine.predict`, batch 500, precision auto (bf16 here), {args.images:,} random clean "
             "test images after one warm-up batch; each cell a fresh process\n",
             "| model | glibc default (img/s) | keep_heap (img/s) | speed-up |", "|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['default_heap']:,.0f} | {r['keep_heap']:,.0f} | "
                     f"{r['keep_heap'] / r['default_heap']:.2f}x |")
    write_results(args.out, "inference_speed", "\n".join(lines), {"provenance": prov, "rows": rows})


if __name__ == "__main__":
    main()
