#!/usr/bin/env python
"""RQ2-style comparison at equal budget: repair methods x corruptions x seeds on one model.

For each corruption, Dc (collected failures) and De (held-out failures) come from
`benchmarks/rq1_table1.py` (--mine-dir). Every method fine-tunes the same pre-trained model
for the same number of epochs over the same Dt subset + Dc; model selection uses only a
validation split of Dt and Dc. Reported per cell: De accuracy (= repair rate, De was all
wrong before), clean test accuracy, break rate, wall time; mean and sample std over seeds.
Each finished run is stored in --cache, so an interrupted benchmark resumes.

    python benchmarks/repair.py [--seeds 0,1,2] [--variants augmix,dr-eq4,...] [--corruptions ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import DEFAULT_DATA, DEFAULT_OUT, REPO_ROOT, atomic_write_text, provenance, provenance_markdown, write_results

VARIANTS = {
    "finetune": dict(method="finetune"),
    "augmix": dict(method="augmix"),
    "dr-uniform": dict(method="deeprepair", sampling="uniform"),
    "dr-eq4": dict(method="deeprepair", sampling="eq4"),
    "dr-per-class": dict(method="deeprepair", sampling="per-class"),
    "dr-eq4-fourier": dict(method="deeprepair", sampling="eq4", style="fourier"),
    "dr-eq4-adain": dict(method="deeprepair", sampling="eq4", style="adain",  # decoder from benchmarks/style.py
                         style_options={"checkpoint": str(REPO_ROOT / "checkpoints" / "style-resnet-20.safetensors")}),
    "dr-eq4-meanstd": dict(method="deeprepair", sampling="eq4", style_options={"mode": "meanstd"}),
}
FIVE = "gaussian_noise,motion_blur,fog,contrast,jpeg_compression"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(REPO_ROOT / "checkpoints" / "resnet-20.safetensors"))
    ap.add_argument("--mine-dir", default=None, help="default: runs/mine/<model name>")
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--corruptions", default=FIVE)
    ap.add_argument("--variants", default="finetune,augmix,dr-uniform,dr-eq4,dr-eq4-fourier")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train-subset", type=int, default=5000)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--cache", default=str(REPO_ROOT / "runs" / "bench_repair"))
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--stem", default="repair")
    ap.add_argument("--no-run", action="store_true", help="only summarise the cells already in --cache")
    args = ap.parse_args()

    import numpy as np
    import torch

    from deeprepair.data import ImageSet, load_dataset, load_failure_set
    from deeprepair.models.checkpoint import load_checkpoint
    from deeprepair.repair import RepairConfig, compare, repair

    prov = provenance()
    device = torch.device("cpu")
    model, meta = load_checkpoint(args.model, device)
    mname = Path(args.model).stem
    mine = Path(args.mine_dir or REPO_ROOT / "runs" / "mine" / mname)
    train, test = load_dataset(args.data, "train"), load_dataset(args.data, "test")
    cache = Path(args.cache) / mname
    cache.mkdir(parents=True, exist_ok=True)
    corruptions, variants = args.corruptions.split(","), args.variants.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    for v in variants:
        if v not in VARIANTS:
            raise SystemExit(f"unknown variant {v}; known: {', '.join(VARIANTS)}")
    results: dict = {}
    for c in corruptions:
        dc = load_failure_set(mine / f"{c}.dc.npz", train.classes)
        de = load_failure_set(mine / f"{c}.de.npz", train.classes)
        with np.load(mine / f"{c}.de.npz") as f:
            sev = f["severity"]
        groups = {f"severity {s}": sev == s for s in range(1, 6)}
        before_cache: dict = {}
        for v in variants:
            for seed in seeds:
                key = f"{c}__{v}__{args.epochs}ep_{args.train_subset}_lr{args.lr}__s{seed}"
                path = cache / f"{key}.json"
                if path.is_file():
                    results[key] = json.loads(path.read_text())
                    continue
                if args.no_run:
                    continue
                cfg = RepairConfig(epochs=args.epochs, train_subset=args.train_subset, lr=args.lr, seed=seed,
                                   **VARIANTS[v])
                torch.manual_seed(seed)
                t0 = time.perf_counter()
                repaired, rep = repair(model, train, dc, cfg, device=device)
                cmp = compare(model, repaired, test, failures=dc, heldout=de, heldout_groups=groups, device=device,
                              cache=before_cache)
                row = {"corruption": c, "variant": v, "seed": seed, "compare": cmp,
                       "repair": {k: rep[k] for k in ("config", "history", "best_epoch", "seconds", "img_per_s", "aug_share", "clusters")},
                       "wall": time.perf_counter() - t0}
                atomic_write_text(path, json.dumps(row))
                results[key] = row
                print(f"{c:18s} {v:16s} seed {seed}: De {cmp['de_after']:.4f} clean {cmp['clean_after']:.4f} "
                      f"break {cmp['break_rate']:.4f} ({rep['seconds']:.0f} s)", flush=True)
    # summary
    def stats(vals):
        a = np.array(vals, float)
        return a.mean(), (a.std(ddof=1) if len(a) > 1 else float("nan")), len(a)

    lines = ["| corruption | method | De acc. (%) | clean acc. (%) | break rate (%) | Dc acc. (%) | time (s) | seeds |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    summary = {}
    for c in corruptions:
        rows = [r for r in results.values() if r["corruption"] == c]
        if not rows:
            continue
        cb = rows[0]["compare"]
        lines.append(f"| {c} | original | {cb['de_before'] * 100:.2f} | {cb['clean_before'] * 100:.2f} | - | "
                     f"{cb['dc_before'] * 100:.2f} | - | - |")
        for v in variants:
            rv = [r for r in rows if r["variant"] == v]
            if not rv:
                continue
            de, cl, br, dcs = (stats([r["compare"][k] * 100 for r in rv])
                               for k in ("de_after", "clean_after", "break_rate", "dc_after"))
            t = stats([r["repair"]["seconds"] for r in rv])
            summary[f"{c}/{v}"] = {"de": de[:2], "clean": cl[:2], "break": br[:2], "dc": dcs[:2], "seconds": t[0], "n": de[2]}
            fmt = lambda s: f"{s[0]:.2f} ± {s[1]:.2f}" if s[2] > 1 else f"{s[0]:.2f}"  # noqa: E731
            lines.append(f"| {c} | {v} | {fmt(de)} | {fmt(cl)} | {fmt(br)} | {fmt(dcs)} | {t[0]:.0f} | {de[2]} |")
    avg = ["", "## Mean over the corruptions (each seed's mean over corruptions, then mean ± std over seeds)", "",
           "| method | De acc. (%) | clean acc. (%) | break rate (%) | corruptions |", "|---|---:|---:|---:|---:|"]
    for v in variants:
        per_seed = {}
        for r in results.values():
            if r["variant"] == v:
                per_seed.setdefault(r["seed"], []).append(r)
        full = {s: rs for s, rs in per_seed.items() if len(rs) == len(corruptions)}
        if not full:
            continue
        de = stats([np.mean([r["compare"]["de_after"] * 100 for r in rs]) for rs in full.values()])
        cl = stats([np.mean([r["compare"]["clean_after"] * 100 for r in rs]) for rs in full.values()])
        br = stats([np.mean([r["compare"]["break_rate"] * 100 for r in rs]) for rs in full.values()])
        fmt = lambda s: f"{s[0]:.2f} ± {s[1]:.2f} (n={s[2]})" if s[2] > 1 else f"{s[0]:.2f} (n=1)"  # noqa: E731
        avg.append(f"| {v} | {fmt(de)} | {fmt(cl)} | {fmt(br)} | {len(corruptions)} |")
    cfg_line = (f"- model `{args.model}` ({meta['arch']}, clean {meta['clean_accuracy'] * 100:.2f}%); budget: {args.epochs} epochs "
                f"over {args.train_subset:,} training images + Dc, lr {args.lr}, batch 128, cosine; Dc/De from `{mine}`")
    md = "\n".join([f"# Repair at equal budget: {mname}\n", provenance_markdown(prov), cfg_line,
                    "- ± is the sample standard deviation over seeds (seed = Dt subset, validation split, augmentation, order)\n",
                    *lines, *avg])
    write_results(args.out, args.stem, md, {"provenance": prov, "summary": summary, "runs": results})


if __name__ == "__main__":
    main()
