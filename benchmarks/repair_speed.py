#!/usr/bin/env python
"""Wall time of a repair against the plain PyTorch loop a user would write, in the same run.

Issue 34's targets (benchmarks, not timed tests):

- the default recipe (fine-tune + focal distillation + weight-mix selection; with ``--average K``
  or RepairConfig's ``average`` field, K repairs averaged) costs <= 2x one plain fine-tune of the
  same length: 3 epochs over 10,000 training images + 1,000 failures;
- one repair of a method costs <= 1.2x the plain loop of equal work: ``finetune`` (no protection)
  against the plain loop over the same images, and (``--methods ... deeprepair``) DeepRepair
  (3 views per image) against the plain loop over 3 crop/flip views per image.

The plain loop (``plain_loop``) is the loop a user would write: the same model, batch size (128),
images x views, precision (bf16 autocast where ``auto`` picks it), crop/flip, optimizer (SGD,
Nesterov momentum 0.9, weight decay 5e-4, per-step cosine) and number of steps; cross-entropy,
no validation, no selection. Every variant runs ``--repeats`` times, interleaved (A B C, C B A,
...), and each ratio uses the fastest run of each side, so a machine shared with other jobs
slows both sides alike. Then one repair step is profiled (``profile_step``): data movement
(crop/flip, uint8 -> float), augmentation/style ops, forward, teacher forward, loss, backward,
optimizer step, and the repair's evaluation/selection (per-epoch validation, the weight-mix grid).

    python benchmarks/repair_speed.py [--corruption fog] [--repeats 1] [--average K]
        [--methods default finetune] [--device cpu|cuda] [--profile-steps 12] [--render JSON]
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from dataclasses import fields

from _common import DEFAULT_DATA, DEFAULT_OUT, REPO_ROOT, provenance, provenance_markdown, write_results

PLAIN = {"default": 1, "finetune": 1, "deeprepair": 3, "augmix": 3}  # views per image of each method's plain peer


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_crop_flip(xb, gen, pad: int = 4):
    """Random 4-pixel zero-padded crop + horizontal flip of a uint8 NHWC batch, as a user would
    write it with tensor ops (one padded copy, one gather)."""
    import torch
    import torch.nn.functional as F

    n, h, w, _ = xb.shape
    padded = F.pad(xb, (0, 0, pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n, 1), generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (n, 1), generator=gen)
    flip = torch.rand(n, 1, generator=gen) < 0.5
    cols = torch.arange(w).expand(n, w)
    cols = torch.where(flip, w - 1 - cols, cols) + ox
    rows = torch.arange(h) + oy
    return padded[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def plain_loop(model, x, y, *, epochs: int, views: int, batch_size: int, precision: str, device,
               lr: float = 0.01, seed: int = 0) -> float:
    """Seconds of the loop a user would write: ``epochs`` over (x, y), each batch as ``views``
    crop/flip views, SGD with per-step cosine, cross-entropy; no validation."""
    import torch
    import torch.nn.functional as F

    model = copy.deepcopy(model).to(device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    n = len(xt)
    per_epoch = math.ceil(n / batch_size)
    steps = per_epoch * epochs
    gen = torch.Generator().manual_seed(seed)
    cast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision == "bf16" else None
    _sync(device)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            xb = torch.cat([plain_crop_flip(xt[idx], gen) for _ in range(views)])
            xb = xb.to(device).permute(0, 3, 1, 2).float().div_(255)
            yb = yt[idx].to(device).repeat(views)
            for g in opt.param_groups:
                g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * (epoch * per_epoch + i) / steps))
            if cast:
                with cast():
                    loss = F.cross_entropy(model(xb).float(), yb)
            else:
                loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    _sync(device)
    return time.perf_counter() - t0


def recipe(name: str, average: int | None):
    """The RepairConfig of a benchmarked variant, and how many repairs it stands for. ``average``:
    K repairs averaged (None: the default's own); RepairConfig's ``average`` field where it has one,
    else K repairs with seeds 0..K-1 whose times are summed."""
    from deeprepair.repair import RepairConfig
    from deeprepair.repair_config import PRESETS

    has_avg = any(f.name == "average" for f in fields(RepairConfig))
    one = {"average": 1} if has_avg else {}
    if name == "default":
        if average is None:
            return RepairConfig(), 1
        return (RepairConfig(average=average), 1) if has_avg else (RepairConfig(), average)
    if name == "finetune":  # the method alone: no distillation, no weight mix, no averaging
        return RepairConfig(method="finetune", distill=0.0, interpolate=False, **one), 1
    paper = "deeprepair-paper" if "deeprepair-paper" in PRESETS else "paper"  # renamed in issue 33
    return RepairConfig.preset(paper, method=name, **one), 1


def run_ours(model, train, dc, cfg, copies: int, device) -> dict:
    from deeprepair.repair import repair

    wall = train_s = 0.0
    for k in range(copies):
        _sync(device)
        t0 = time.perf_counter()
        _, rep = repair(model, train, dc, _with_seed(cfg, cfg.seed + k), device=device)
        _sync(device)
        wall += time.perf_counter() - t0
        train_s += rep["seconds"]
    return {"wall_s": wall, "train_s": train_s, "precision": rep["precision"], "finetune_images": rep["finetune_images"],
            "epochs": len(rep["history"])}


def _with_seed(cfg, seed):
    out = copy.deepcopy(cfg)
    out.seed = seed
    return out


def profile_step(model, train, dc, cfg, device, steps: int) -> dict:
    """Seconds per phase of ``steps`` fine-tuning steps of the repair ``cfg`` (built from the
    repair's own parts), and of its evaluation/selection, scaled to one whole repair."""
    import numpy as np
    import torch

    from deeprepair.engine import autocast, batches, predict, resolve_precision, to_float
    from deeprepair.repair.core import (Regularisers, build_objective, make_split, regression_control,
                                        validation_score)
    from deeprepair.repair.tuning import Tuning
    from deeprepair.train import crop_flip

    precision = resolve_precision(cfg.precision, device)
    model = copy.deepcopy(model).to(device).to(memory_format=torch.channels_last)
    original = copy.deepcopy(model).eval()
    split = make_split(train, dc, cfg)
    objective, _ = build_objective(cfg, split.dc_fit, len(split.x), lambda: autocast(device, precision))
    tuning = Tuning(model, cfg.tune, train.x.shape[1:])
    reg = Regularisers(model, cfg, tuning, None, device, precision)
    opt = torch.optim.SGD(tuning.params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True,
                          foreach=True)  # as fine_tune makes it
    xt, yt = torch.from_numpy(np.ascontiguousarray(split.x)), torch.from_numpy(split.y)
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    order = torch.randperm(len(xt), generator=gen)
    tuning.train(model)
    t = dict.fromkeys(["data movement (crop/flip, uint8->float)", "augmentation/style ops", "forward",
                       "teacher forward (distillation)", "loss terms", "backward", "optimizer step"], 0.0)
    keys = list(t)

    def clock():
        _sync(device)
        return time.perf_counter()

    for i, s in enumerate(batches(len(xt), cfg.batch_size)):
        if i >= steps + 2:
            break
        warm = i < 2  # the first two steps warm caches and allocators
        idx = order[s]
        c0 = clock()
        x = to_float(crop_flip(xt[idx], gen)).to(device)
        yb = yt[idx].to(device)
        c1 = clock()
        views = x
        if hasattr(objective, "aug"):
            views = torch.cat([x, objective.aug(x, rng), objective.aug(x, rng)])
        c2 = clock()
        out = objective.forward(model, views)
        c3 = clock()
        keep = torch.from_numpy(~split.is_failure[idx.numpy()])
        t_logits = reg._teacher(x[keep]) if reg.teacher is not None and keep.any() else None
        c4 = clock()
        import torch.nn.functional as F

        from deeprepair.augment import jsd_loss
        from deeprepair.repair.losses import distill_loss, focal_weights

        if hasattr(objective, "aug"):
            l0, l1, l2 = out.split(len(x))
            loss = F.cross_entropy(l0, yb) + objective.weight * jsd_loss(l0, l1, l2)
        else:
            l0 = out
            loss = F.cross_entropy(l0, yb)
        if t_logits is not None:
            w = focal_weights(t_logits, yb[keep]) if cfg.distill_focus == "right" else None
            loss = loss + cfg.distill * distill_loss(l0[keep], t_logits, cfg.distill_t, w)
        c5 = clock()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        c6 = clock()
        opt.step()
        c7 = clock()
        if not warm:
            for k, a, b in zip(keys, (c0, c1, c2, c3, c4, c5, c6), (c1, c2, c3, c4, c5, c6, c7)):
                t[k] += b - a
    total_steps = math.ceil(len(xt) / cfg.batch_size) * cfg.epochs
    per_repair = {k: v / steps * total_steps for k, v in t.items()}
    model.eval()
    c0 = clock()
    validation_score(model, split, device, precision)
    c1 = clock()
    evals = (cfg.epochs + 1) * (c1 - c0)  # before fine-tuning and after each epoch
    if cfg.interpolate or cfg.gate:
        c0 = clock()
        right0 = predict(original, split.val_train.x, device=device, precision=precision) == split.val_train.y
        regression_control(original, model, split, cfg, device, precision, None, right0)
        evals += clock() - c0 + (c1 - c0)  # + the final validation
    per_repair["evaluation/selection (validation, weight-mix grid)"] = evals
    return {"steps_timed": steps, "steps_per_repair": total_steps, "seconds_per_repair": per_repair}


def render(d: dict) -> str:
    """The Markdown of a results dict (``main``'s JSON): ``--render FILE.json`` redraws it."""
    lines = [f"# Repair wall time against the plain PyTorch loop ({d['corruption']}, 1,000 failures)\n",
             provenance_markdown(d['provenance']),
             f"- device: {d['device']} ({d['provenance']['machine']['device']}), precision {d['precision']}",
             f"- load: the machine was {'shared with other jobs' if d['shared_machine'] else 'not checked for other jobs'} "
             "while this ran; ratios come from the fastest of interleaved repeats, so both sides saw the same load\n",
             "The plain loop is the loop a user would write (same model, batch size 128, images x views, precision, "
             "crop/flip, SGD Nesterov + per-step cosine; cross-entropy; no validation or selection), over "
             f"{d['plain_images']:,} images (10,000 training images + {d['failures']:,} failures) x {d['epochs']} epochs. Ours = the whole "
             "`repair()` call (split, fine-tuning, per-epoch validation, weight-mix grid), which fine-tunes on "
             "10,000 training images + the 90% of the failures not held out for validation.\n"]
    if d['average'] > 1:
        lines.append(f"`default` stands for {d['average']} averaged repairs ("
                     + ("RepairConfig.average" if d['average_field']
                        else "RepairConfig has no `average` field yet: K repairs with seeds 0..K-1, their times summed")
                     + ").\n")
    lines += [f"- note: {n}" for n in d.get("notes", [])] + ([""] if d.get("notes") else [])
    lines += ["| ours | plain peer | ours (s) | plain (s) | ratio | target |", "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {m} | {r['plain']} | {r['ours_s']:.1f} | {r['plain_s']:.1f} | **{r['ratio']:.2f}x** | <= {r['target']:.1f}x |"
              for m, r in d['ratios'].items()]
    if "default" in d['best_wall_s'] and "deeprepair" in d['best_wall_s']:  # issue 22's target: the default <= the paper's recipe
        lines += ["", f"The default recipe against the paper's (`--preset paper`, DeepRepair): "
                  f"**{d['best_wall_s']['default'] / d['best_wall_s']['deeprepair']:.2f}x** (target <= 1.00x)."]
    lines += ["", "## Every run", "", "| variant | repeat | wall (s) | train (s) | images trained |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['variant']} | {r['repeat']} | {r['wall_s']:.1f} | {r['train_s']:.1f} | {r['images']:,} |" for r in d['runs']]
    for name, p in d['profiles'].items():
        tot = sum(p["seconds_per_repair"].values())
        lines += ["", f"## Where one `{name}` repair's time goes", "",
                  f"{p['steps_timed']} fine-tuning steps timed phase by phase (each phase synchronised), scaled to the "
                  f"{p['steps_per_repair']} steps of one repair; evaluation/selection timed once per call it makes.", "",
                  "| phase | s per repair | share |", "|---|---:|---:|"]
        lines += [f"| {k} | {v:.1f} | {v / tot * 100:.0f}% |" for k, v in p["seconds_per_repair"].items()]
        lines.append(f"| total | {tot:.1f} | 100% |")
        sp = p["seconds_per_repair"]
        share = lambda *ks: sum(v for k, v in sp.items() if k.startswith(ks)) / tot * 100  # noqa: E731
        lines += ["", f"Forward + backward + optimizer step (the plain loop's own work): {share('forward', 'backward', 'optimizer'):.0f}%; "
                  f"beyond it: teacher forward {share('teacher'):.0f}%, augmentation/style ops {share('augmentation'):.0f}%, "
                  f"data movement {share('data'):.0f}%, evaluation/selection {share('evaluation'):.0f}%, loss terms "
                  f"{share('loss'):.0f}%."]
        r = d['ratios'].get(name)
        if name == "default" and d['average'] > 1 and r:  # what K runs cost at the least, phase by phase
            own = sum(v for k, v in sp.items() if k.startswith(("forward", "backward", "optimizer"))) / r['plain_s']
            rest = (tot / r['plain_s']) - own
            lines += ["", f"Against the plain loop ({r['plain_s']:.1f} s): one run's own forward + backward + optimizer "
                      f"step is {own:.2f}x it, so {d['average']} runs cost **{d['average'] * own:.2f}x** before anything "
                      f"else; teacher, data movement, loss terms and evaluation (the weight-mix grid counted per "
                      f"run) add {d['average'] * rest:.2f}x, "
                      f"about {d['average'] * (own + rest):.2f}x in all by this profile (measured above: {r['ratio']:.2f}x)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(REPO_ROOT / "checkpoints" / "resnet-20.safetensors"))
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--corruption", default="fog")
    ap.add_argument("--repeats", type=int, default=1,
                    help="runs of each variant, interleaved (1 keeps the default under 5 minutes alone; use 2+ on a "
                         "shared machine, where the fastest run of each side is compared)")
    ap.add_argument("--methods", nargs="+", default=["default", "finetune"], choices=sorted(PLAIN),
                    help="our variants: default (the default recipe), finetune (the method alone), deeprepair, augmix")
    ap.add_argument("--average", type=int, default=None,
                    help="K: the default recipe averages K repairs (RepairConfig.average; default: the default "
                         "recipe's own; without that field, K repairs with seeds 0..K-1, times summed)")
    ap.add_argument("--profile", nargs="*", default=["default"], choices=sorted(PLAIN),
                    help="variants whose repair step is profiled (none: skip)")
    ap.add_argument("--profile-steps", type=int, default=12)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the same script on a lent GPU)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs of every variant (3: the default's)")
    ap.add_argument("--shared", action="store_true", help="say in the results that other jobs shared the machine")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--render", metavar="JSON", help="only redraw the Markdown beside a results JSON of this script")
    args = ap.parse_args()
    if args.render:
        import json
        from pathlib import Path

        from _common import atomic_write_text

        atomic_write_text(Path(args.render).with_suffix(".md"), render(json.loads(Path(args.render).read_text())))
        return

    import numpy as np

    from deeprepair.corruptions import corrupt
    from deeprepair.data import ImageSet, load_dataset
    from deeprepair.engine import machine, pick_device, predict, resolve_precision, set_threads
    from deeprepair.mining import find_failures
    from deeprepair.models.checkpoint import load_checkpoint

    set_threads(args.threads)
    device = pick_device(args.device)
    prov = provenance()
    prov["machine"]["device"] = machine()["gpu"] if device.type == "cuda" else "cpu"
    model, _ = load_checkpoint(args.model)
    train, test = load_dataset(args.data, "train"), load_dataset(args.data, "test")
    stack = [corrupt(test.x, args.corruption, s, seed=0) for s in range(1, 6)]
    preds = [predict(model, x, device=device) for x in stack]
    split = find_failures(args.corruption, preds, test.y, 1000, test.num_classes, seed=0, split_by="image")
    flat = np.concatenate(stack)  # severity blocks in order, as split.index counts them
    dc = ImageSet(flat[split.index[split.dc]], split.y[split.dc], train.classes)
    precision = resolve_precision("auto", device)

    # the plain loop's data: 10,000 training images (a fixed random subset) + the 1,000 failures
    pick = np.sort(np.random.default_rng(0).permutation(len(train))[:10000])
    px = np.ascontiguousarray(np.concatenate([train.x[pick], dc.x]))
    py = np.concatenate([train.y[pick], dc.y]).astype(np.int64)
    epochs = args.epochs
    variants = [f"plain x{v}" for v in sorted({PLAIN[m] for m in args.methods})] + list(args.methods)
    runs = []
    for i in range(args.repeats):
        for name in (variants if i % 2 == 0 else variants[::-1]):
            if name.startswith("plain"):
                views = int(name.split("x")[1])
                wall = plain_loop(model, px, py, epochs=epochs, views=views, batch_size=128, precision=precision,
                                  device=device)
                row = {"variant": name, "repeat": i, "wall_s": wall, "train_s": wall, "images": len(px) * epochs}
            else:
                cfg, copies = recipe(name, args.average if name == "default" else None)
                cfg.precision, cfg.epochs = precision, epochs
                r = run_ours(model, train, dc, cfg, copies, device)
                row = {"variant": name, "repeat": i, "copies": copies, **r, "images": r["finetune_images"] * r["epochs"]}
            runs.append(row)
            print(row, flush=True)
    best = {v: min(r["wall_s"] for r in runs if r["variant"] == v) for v in variants}
    ratios = {m: {"ours_s": best[m], "plain": f"plain x{PLAIN[m]}", "plain_s": best[f"plain x{PLAIN[m]}"],
                  "ratio": best[m] / best[f"plain x{PLAIN[m]}"],
                  "target": 2.0 if m == "default" else 1.2} for m in args.methods}

    profiles = {}
    for name in args.profile or []:
        cfg, _ = recipe(name, None)
        cfg.precision, cfg.epochs = precision, epochs
        profiles[name] = profile_step(model, train, dc, cfg, device, args.profile_steps)
        print(name, profiles[name], flush=True)

    default_cfg, default_copies = recipe("default", args.average)
    data = {"provenance": prov, "device": str(device), "precision": precision, "runs": runs, "best_wall_s": best,
            "ratios": ratios, "average": getattr(default_cfg, "average", 1) * default_copies,
            "average_field": default_copies == 1,
            "profiles": profiles, "shared_machine": args.shared, "corruption": args.corruption,
            "plain_images": len(px), "failures": len(dc), "epochs": epochs}
    write_results(args.out, "repair_speed", render(data), data)

if __name__ == "__main__":
    main()
