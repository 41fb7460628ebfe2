#!/usr/bin/env python
"""Throughput of the batched AugMix ops vs a per-image PIL reference, and the style ops' share of
a DeepRepair training step.

(1) AugMix (width 3, depth 1-3, severity 3) on N test images: batched `StyleAug()` on one
    tensor batch vs the per-image PIL loop in tests/_pil_augmix.py, same process, img/s.
(2) A DeepRepair step on ResNet-20 (batch 128, bf16 + channels_last): time of the two StyleAug
    calls with style ops (wavelet, 5 clusters over 1,000 references), of the two AugMix calls
    without them, and of the JSD forward/backward; the style ops' share of the step is
    (t_styleaug - t_augmix) / (t_styleaug + t_model). Medians over --steps.

    python benchmarks/augment_speed.py [--n 1024] [--steps 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from _common import DEFAULT_OUT, REPO_ROOT, load_test_images, provenance, provenance_markdown, write_results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(REPO_ROOT.parent / "shared" / "data" / "cifar10"))
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args()

    import numpy as np
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from _pil_augmix import augmix as pil_augmix

    from deeprepair.augment import StyleAug, StyleOps, jsd_loss
    from deeprepair.cluster import ReferenceSampler
    from deeprepair.engine import autocast, keep_heap
    from deeprepair.models import Classifier, create_model
    from deeprepair.style import create_style

    keep_heap()
    prov = provenance()
    x, src = load_test_images(args.data, args.n + 1000)
    imgs, refs = x[: args.n], x[args.n:]
    xt = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    rng = np.random.default_rng(0)
    aug = StyleAug()
    aug(xt[:64], rng)
    t = time.perf_counter()
    aug(xt, rng)
    batched = args.n / (time.perf_counter() - t)
    m = min(args.n, 512)
    t = time.perf_counter()
    for im in imgs[:m]:
        pil_augmix(im, rng)
    per_image = m / (time.perf_counter() - t)

    rt = torch.from_numpy(refs).permute(0, 3, 1, 2).float() / 255
    ops = StyleOps(create_style("wavelet"), rt, ReferenceSampler("eq4", 5).fit(refs))
    styleaug = StyleAug(ops)
    model = Classifier(create_model("resnet-20")).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    dev = torch.device("cpu")
    b = xt[:128].contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (128,))
    t_sa, t_am, t_model = [], [], []
    for i in range(args.steps + 2):
        t0 = time.perf_counter()
        v1, v2 = styleaug(b, rng), styleaug(b, rng)
        t1 = time.perf_counter()
        aug(b, rng), aug(b, rng)
        t2 = time.perf_counter()
        allv = torch.cat([b, v1, v2]).contiguous(memory_format=torch.channels_last)
        with autocast(dev, "bf16"):
            logits = model(allv).float()
        l0, l1, l2 = logits.split(128)
        loss = F.cross_entropy(l0, y) + 12 * jsd_loss(l0, l1, l2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        t3 = time.perf_counter()
        if i >= 2:
            t_sa.append(t1 - t0)
            t_am.append(t2 - t1)
            t_model.append(t3 - t2)
    sa, am, mo = (statistics.median(v) for v in (t_sa, t_am, t_model))
    share = (sa - am) / (sa + mo)
    md = ["# Augmentation throughput and the style ops' share of a training step\n", provenance_markdown(prov),
          f"- data: {args.n:,} test images from `{src}` (fixed random subset); references: 1,000 others\n",
          "| measure | value |", "|---|---:|",
          f"| AugMix, batched (one call on {args.n:,} images) | {batched:,.0f} img/s |",
          f"| AugMix, per-image PIL reference ({m} images) | {per_image:,.0f} img/s |",
          f"| speed-up | {batched / per_image:.1f}x |",
          f"| DeepRepair step, batch 128: two StyleAug calls with style ops | {sa * 1000:.0f} ms |",
          f"| same, two AugMix calls without style ops | {am * 1000:.0f} ms |",
          f"| JSD forward + backward + update (ResNet-20, bf16 + channels_last, 3 x 128 images) | {mo * 1000:.0f} ms |",
          f"| **style ops' share of the step** (target <= 10%) | **{share * 100:.1f}%** |",
          f"| all augmentation's share of the step | {sa / (sa + mo) * 100:.1f}% |"]
    write_results(args.out, "augment_speed", "\n".join(md), {"provenance": prov, "batched": batched, "per_image": per_image,
                                                            "styleaug_s": sa, "augmix_s": am, "model_s": mo, "style_share": share})


if __name__ == "__main__":
    main()
