#!/usr/bin/env python
"""Can the K averaged runs, or one run, go faster on this machine? Two candidates, measured alone.

1. K runs in one batched pass. ``torch.func.stack_module_state`` + ``vmap`` over K networks lowers
   each convolution to one grouped convolution (K groups); the same holds for a K-wide network
   built with ``groups=K``. Timed here: K separate conv + BatchNorm + ReLU layers against one
   grouped layer of K times the channels, forward + backward in bf16 autocast, at ResNet-20's
   three stage shapes (batch 128). A speed-up above 1x would make averaging cheaper than K loops.
2. ``torch.compile`` of ResNet-20's training step (SGD Nesterov, cross-entropy, bf16 autocast,
   channels_last, batch 128) and of the frozen teacher's forward, against eager, the compile
   time reported apart.

    python benchmarks/batched_runs.py [--steps 30]
"""

from __future__ import annotations

import argparse
import time

from _common import DEFAULT_OUT, provenance, provenance_markdown, write_results


def per_call_ms(fn, steps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t) / steps * 1e3


def grouped_rows(steps: int) -> list[dict]:
    import torch
    import torch.nn as nn

    def layer(c: int, groups: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False, groups=groups), nn.BatchNorm2d(c),
                             nn.ReLU()).to(memory_format=torch.channels_last)

    def fwd_bwd(m, x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = m(x)
        y.float().sum().backward()

    rows = []
    for c, hw in ((16, 32), (32, 16), (64, 8)):  # ResNet-20's three stages
        for k in (2, 3):
            torch.manual_seed(0)
            one, grouped = layer(c, 1), layer(k * c, k)
            x1 = torch.randn(128, c, hw, hw).to(memory_format=torch.channels_last).requires_grad_()
            xk = torch.randn(128, k * c, hw, hw).to(memory_format=torch.channels_last).requires_grad_()
            sep = k * per_call_ms(lambda: fwd_bwd(one, x1), steps)
            grp = per_call_ms(lambda: fwd_bwd(grouped, xk), steps)
            rows.append({"channels": c, "size": hw, "k": k, "separate_ms": sep, "grouped_ms": grp})
            print(rows[-1], flush=True)
    return rows


def compile_rows(steps: int) -> list[dict]:
    import torch
    import torch.nn.functional as F

    from deeprepair.models import Classifier, create_model

    torch.manual_seed(0)
    student = Classifier(create_model("resnet-20", 10)).to(memory_format=torch.channels_last).train()
    teacher = Classifier(create_model("resnet-20", 10)).to(memory_format=torch.channels_last).eval()
    opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(128, 3, 32, 32).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (128,))

    def step(net):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def infer(net):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            net(x)

    rows = []
    for what, net, fn in (("training step", student, step), ("teacher forward", teacher, infer)):
        eager = per_call_ms(lambda: fn(net), steps)
        t = time.perf_counter()
        compiled = torch.compile(net)
        fn(compiled)
        fn(compiled)
        compile_s = time.perf_counter() - t
        rows.append({"what": what, "eager_ms": eager, "compiled_ms": per_call_ms(lambda: fn(compiled), steps, 1),
                     "compile_s": compile_s})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args()
    prov = provenance()
    grouped, compiled = grouped_rows(args.steps), compile_rows(args.steps)
    lines = ["# K runs in one batched pass, and torch.compile, against eager loops\n", provenance_markdown(prov),
             f"- bf16 autocast, channels_last, batch 128, forward + backward; mean of {args.steps} calls after warm-up\n",
             "## K separate layers against one grouped layer (what vmap over K stacked networks runs)\n",
             "| stage (channels, size) | K | K separate (ms) | one grouped (ms) | speed-up |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['channels']}, {r['size']}x{r['size']} | {r['k']} | {r['separate_ms']:.1f} | {r['grouped_ms']:.1f} | "
              f"{r['separate_ms'] / r['grouped_ms']:.2f}x |" for r in grouped]
    lines += ["", "## torch.compile (ResNet-20)\n", "| what | eager (ms) | compiled (ms) | speed-up | compile (s) |",
              "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['what']} | {r['eager_ms']:.1f} | {r['compiled_ms']:.1f} | {r['eager_ms'] / r['compiled_ms']:.2f}x | "
              f"{r['compile_s']:.0f} |" for r in compiled]
    write_results(args.out, "batched_runs", "\n".join(lines) + "\n",
                  {"provenance": prov, "grouped": grouped, "compile": compiled})


if __name__ == "__main__":
    main()
