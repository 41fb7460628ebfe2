#!/usr/bin/env python
"""Training throughput (img/s) per model: fp32 vs bf16 autocast, contiguous vs channels_last.

One SGD step = forward + backward + update at batch 128 on random 32x32 inputs; a JSD step
(AugMix / DeepRepair) forwards 3 x 128 images. Median of --steps timed steps after 2 warm-up
steps, in one process, one configuration after the other.

    python benchmarks/train_speed.py [--models resnet-20,wrn-16-2,...] [--steps 8]
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import DEFAULT_OUT, provenance, provenance_markdown, write_results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="resnet-20,wrn-16-2,allconvnet-s,densenet-bc-40-12,wrn-40-2,allconvnet,densenet-bc-100-12")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F

    from deeprepair.engine import autocast, keep_heap
    from deeprepair.models import Classifier, create_model

    heap = keep_heap()
    prov = provenance()
    configs = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]
    rows, data = [], {}
    for name in args.models.split(","):
        data[name] = {}
        for prec, cl in configs:
            for jsd in (False, True):
                torch.manual_seed(0)
                m = Classifier(create_model(name))
                if cl:
                    m = m.to(memory_format=torch.channels_last)
                opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
                n = args.batch * (3 if jsd else 1)
                x = torch.rand(n, 32, 32, 3).permute(0, 3, 1, 2) if cl else torch.rand(n, 3, 32, 32)
                y = torch.randint(0, 10, (n,))

                def step():
                    with autocast(torch.device("cpu"), prec):
                        out = m(x)
                    loss = F.cross_entropy(out.float(), y)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()

                for _ in range(2):
                    step()
                times = []
                for _ in range(args.steps):
                    t = time.perf_counter()
                    step()
                    times.append(time.perf_counter() - t)
                ips = args.batch / statistics.median(times)  # training images per second (JSD: 3 views each)
                key = f"{prec}{'+cl' if cl else ''}{' jsd' if jsd else ''}"
                data[name][key] = ips
                print(f"{name:20s} {key:14s} {ips:8.0f} img/s", flush=True)
        d = data[name]
        keys = [p + ("+cl" if c else "") for p, c in configs]
        rows.append(f"| {name} | " + " | ".join(f"{d[k]:.0f}" for k in keys)
                    + f" | {d['bf16+cl'] / d['fp32']:.2f}x | " + " | ".join(f"{d[k + ' jsd']:.0f}" for k in keys)
                    + f" | {50000 / d['bf16+cl']:.0f} / {50000 / d['bf16+cl jsd']:.0f} |")
    md = ["# Training throughput on this machine: precision and memory format\n", provenance_markdown(prov),
          f"- batch {args.batch}, median of {args.steps} steps after 2 warm-up steps; glibc heap kept (`keep_heap`): {heap}",
          "- img/s counts training images; a JSD step forwards each image 3 times (clean + 2 augmented views)\n",
          "| model | fp32 | fp32 + channels_last | bf16 | bf16 + channels_last | speed-up bf16+cl vs fp32 "
          "| JSD fp32 | JSD fp32+cl | JSD bf16 | JSD bf16+cl | s per 50k epoch (plain / JSD), bf16+cl |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|", *rows]
    write_results(args.out, "train_speed", "\n".join(md), {"provenance": prov, "img_per_s": data})


if __name__ == "__main__":
    main()
