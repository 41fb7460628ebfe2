#!/usr/bin/env python
"""Repair that breaks nothing, from few and mixed failures (issue: regression control).

Parts (``--part``), each resumable through per-run files in --cache (the parts ``control`` and
``testtime`` are retired: last commit 1e66f62, results in benchmarks/results/retired/):
  fewdc    De accuracy against |Dc| in {25, 50, 100, 250, 1000} (stratified subsets of Dc)
  mixed    Dc drawn from the failures of all 15 corruptions together, types not told; one repair,
           evaluated per type; k-means cluster/type agreement (ARI) for pixel and style features
Failures come from `benchmarks/rq1_table1.py` (runs/mine/<model>/).

    python benchmarks/regressions.py --part mixed [--seeds 0,1,2]
    python benchmarks/regressions.py --part fewdc --corruptions gaussian_noise,motion_blur,fog,contrast,jpeg_compression \
        --selections holdout,last --selection-corruptions gaussian_noise,fog
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from _common import DEFAULT_DATA, DEFAULT_OUT, REPO_ROOT, atomic_write_text, provenance, provenance_markdown, write_results

FIVE = ["gaussian_noise", "motion_blur", "fog", "contrast", "jpeg_compression"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", required=True, choices=["fewdc", "mixed"])
    ap.add_argument("--model", default=str(REPO_ROOT / "checkpoints" / "resnet-20.safetensors"))
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--methods", default="finetune,augmix,deeprepair")
    ap.add_argument("--corruptions", default=",".join(FIVE))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--sizes", default="25,50,100,250,1000")
    ap.add_argument("--selections", default="holdout", help="fewdc: model selections to compare (holdout,last,auto)")
    ap.add_argument("--selection-sizes", default="25,50,100", help="fewdc: the sizes at which selections other "
                    "than holdout also run")
    ap.add_argument("--selection-corruptions", default=None, help="fewdc: the corruptions on which selections "
                    "other than holdout also run (default: all of --corruptions)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train-subset", type=int, default=5000)
    ap.add_argument("--max-break", type=float, default=0.01)
    ap.add_argument("--cache", default=str(REPO_ROOT / "runs" / "bench_regressions"))
    ap.add_argument("--bench-cells", default=str(REPO_ROOT / "benchmarks" / "results" / "cpu" / "cells"),
                    help="mixed: per-type repairs of the other ten types from `deeprepair bench --profile cpu`")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args()

    import numpy as np
    import torch

    from deeprepair.cluster import adjusted_rand_index, features, kmeans
    from deeprepair.data import ImageSet, load_dataset, load_failure_set
    from deeprepair.engine import predict
    from deeprepair.mining import split_collected
    from deeprepair.models.checkpoint import load_checkpoint
    from deeprepair.repair import RepairConfig, compare, repair

    prov = provenance()
    device = torch.device("cpu")
    model, meta = load_checkpoint(args.model, device)
    mname = Path(args.model).stem
    mine = REPO_ROOT / "runs" / "mine" / mname
    train, test = load_dataset(args.data, "train"), load_dataset(args.data, "test")
    cache = Path(args.cache) / mname / args.part
    cache.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    corrs = args.corruptions.split(",")
    rows: list[dict] = []
    before_cache: dict = {}

    def cell(key: str, fn) -> dict:
        path = cache / f"{key}.json"
        if path.is_file():
            return json.loads(path.read_text())
        t0 = time.perf_counter()
        r = fn()
        r["wall"] = time.perf_counter() - t0
        atomic_write_text(path, json.dumps(r))
        print(key, {k: round(v, 4) for k, v in r.items() if isinstance(v, float)}, flush=True)
        return r

    def result(c: dict, rep: dict, control: dict | None) -> dict:
        """One cell's row: De, clean, break rate from `compare`, and the control's choice."""
        control = control or {}
        return {"de": c.get("de_after"), "clean": c["clean_after"], "break": c["break_rate"],
                "break_ci": c["break_rate_ci95"], "de_before": c.get("de_before"), "clean_before": c["clean_before"],
                "alpha": control.get("alpha"), "routed_clean": control.get("routed_clean"), "seconds": rep["seconds"]}

    def run(dc, de, cfg):
        rep_model, rep = repair(model, train, dc, cfg, device=device)
        c = compare(model, rep_model, test, failures=dc, heldout=de, device=device, cache=before_cache)
        return result(c, rep, rep.get("interpolation") or rep.get("gate"))

    def load(c):
        return (load_failure_set(mine / f"{c}.dc.npz", train.classes), load_failure_set(mine / f"{c}.de.npz", train.classes))

    # the gate as first measured: threshold on the 1,000 validation images, point estimate (gate_calibration.py
    # compares the calibrated variants that became the defaults)
    budget = dict(epochs=args.epochs, train_subset=args.train_subset, max_break=args.max_break,
                  gate_calibration=0, gate_bound="point")
    if args.part == "fewdc":
        sizes = [int(v) for v in args.sizes.split(",")]
        selections = args.selections.split(",")
        sel_sizes = {int(v) for v in args.selection_sizes.split(",")}
        sel_corrs = set(args.selection_corruptions.split(",")) if args.selection_corruptions else set(corrs)
        if sel_corrs - set(corrs):
            ap.error(f"--selection-corruptions {','.join(sorted(sel_corrs - set(corrs)))} not in --corruptions")
        for c in corrs:
            dc_all, de = load(c)
            before_cache.clear()
            for n in sizes:
                for s in seeds:
                    if n >= len(dc_all):  # the whole Dc: the same repair as control's `none` cell, reused if cached
                        dc = dc_all
                    else:
                        pick, _ = split_collected(dc_all.y, n, dc_all.num_classes, seed=100 + s)
                        dc = dc_all.subset(pick)
                    for m in methods:
                        same = cache.parent / "control" / f"{c}__{m}__none__s{s}.json"
                        if n >= len(dc_all) and same.is_file():
                            r = json.loads(same.read_text())
                        else:
                            r = cell(f"{c}__n{n}__{m}__s{s}",
                                     lambda: run(dc, de, RepairConfig(method=m, seed=s, selection="holdout", **budget)))
                        rows.append({"corruption": c, "method": m, "size": n, "seed": s, **r})
                        for sel in selections:  # the other model selections, same subset and seed
                            if sel == "holdout" or n not in sel_sizes or c not in sel_corrs:
                                continue
                            r = cell(f"{c}__n{n}__{m}__{sel}__s{s}",
                                     lambda: run(dc, de, RepairConfig(method=m, seed=s, selection=sel, **budget)))
                            rows.append({"corruption": c, "method": f"{m} ({sel})", "size": n, "seed": s, **r})
        keys = ("method", "size")
    else:  # mixed
        from deeprepair.corruptions import CORRUPTIONS

        xs, ys, ts = [], [], []
        de_sets = {}
        for t, c in enumerate(CORRUPTIONS):
            dc, de = load(c)
            xs.append(dc.x)
            ys.append(dc.y)
            ts.append(np.full(len(dc), t))
            de_sets[c] = de
        x, y, types = np.concatenate(xs), np.concatenate(ys), np.concatenate(ts)
        pick, _ = split_collected(y * 15 + types, 1000, 150, seed=0)  # 1,000 mixed failures, stratified by class x type
        mixed = ImageSet(x[pick], y[pick], train.classes)
        ari = {}
        for kind in ("pixels", "style"):
            lab, _ = kmeans(features(mixed.x, kind), 15, seed=0)
            ari[kind] = adjusted_rand_index(lab, types[pick])
        print("ARI", ari, flush=True)
        from deeprepair.repair.core import make_split
        from deeprepair.repair.gate import fit_gate

        right0 = predict(model, test.x) == test.y
        subs = {c: np.random.default_rng(3).choice(len(de), min(2000, len(de)), replace=False) for c, de in de_sets.items()}

        def evaluate(m_, seconds):
            right = predict(m_, test.x) == test.y
            out = {"clean": float(right.mean()), "break": float((right0 & ~right).sum() / right0.sum()), "seconds": seconds}
            for c, de in de_sets.items():
                out[f"de_{c}"] = float((predict(m_, de.x[subs[c]]) == de.y[subs[c]]).mean())
            out["de_mean"] = float(np.mean([out[f"de_{c}"] for c in de_sets]))
            return out

        for m in methods:
            for s in seeds:
                # no control; the gate as first measured; the calibrated gate (--gate's defaults today);
                # that with the network router on deep + style features (--gate-router mlp --gate-features deep+style)
                names = (m, f"{m}+gate", f"{m}+gate-cal", f"{m}+gate-cal-mlp")
                keys2 = [f"mixed__{n}__s{s}" for n in names]
                if all((cache / f"{k}.json").is_file() for k in keys2):
                    res = [json.loads((cache / f"{k}.json").read_text()) for k in keys2]
                else:  # training is seeded, so a rerun for a new variant reproduces the cached ones
                    cfg = RepairConfig(method=m, seed=s, **budget)
                    t0 = time.perf_counter()
                    rep_model, rep = repair(model, train, mixed, cfg, device=device)
                    gated, _ = fit_gate(model, rep_model, make_split(train, mixed, cfg), cfg.max_break, device,
                                        rep["precision"], bound=cfg.gate_bound)
                    cal = dataclasses.replace(cfg, gate_calibration=5000, gate_bound="wilson")
                    cal_split = make_split(train, mixed, cal)
                    gated_cal, _ = fit_gate(model, rep_model, cal_split, cfg.max_break, device, rep["precision"],
                                            bound=cal.gate_bound)
                    gated_mlp, _ = fit_gate(model, rep_model, cal_split, cfg.max_break, device, rep["precision"],
                                            bound=cal.gate_bound, features="deep+style", router="mlp", seed=s)
                    res = []
                    for k, m_ in zip(keys2, (rep_model, gated.eval(), gated_cal.eval(), gated_mlp.eval())):
                        if (cache / f"{k}.json").is_file():
                            res.append(json.loads((cache / f"{k}.json").read_text()))
                            continue
                        res.append({**evaluate(m_, rep["seconds"]), "wall": time.perf_counter() - t0})
                        atomic_write_text(cache / f"{k}.json", json.dumps(res[-1]))
                        print(k, {kk: round(v, 4) for kk, v in res[-1].items() if isinstance(v, float)}, flush=True)
                for name, r in zip(names, res):
                    rows.append({"method": name, "seed": s, **r})
        for kind, v in ari.items():
            rows.append({"method": f"ARI ({kind} features)", "seed": 0, "ari": v})
        keys = ("method",)

    # summary: mean ± std over seeds of the per-seed means over corruptions
    groups: dict = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), {}).setdefault(r["seed"], []).append(r)
    metric_names = sorted({k for r in rows for k, v in r.items() if isinstance(v, float) and k not in ("wall", "seconds")})
    lines = [f"# Regression control and hard scenarios: part `{args.part}` ({mname})\n", provenance_markdown(prov),
             f"- budget per repair: {args.epochs} epochs over {args.train_subset:,} training images + Dc; "
             f"corruptions: {'all 15, Dc = 1,000 failures drawn across them (stratified by class x type)' if args.part == 'mixed' else ', '.join(corrs)}; "
             f"seeds {sorted({r['seed'] for r in rows})}; ± = sample std over seeds"
             + ("; De columns: accuracy on up to 2,000 held-out failures of each type" if args.part == "mixed" else "")
             + (f"; rows with another model selection in brackets ran on {', '.join(c for c in corrs if c in sel_corrs)} "
                f"at sizes {sorted(sel_sizes)} only, so their means are over those corruptions"
                if args.part == "fewdc" and len(selections) > 1 and set(corrs) - sel_corrs else "") + "\n",
             "| " + " | ".join(keys) + " | " + " | ".join(metric_names) + " |", "|" + "---|" * (len(keys) + len(metric_names))]
    for g, by_seed in groups.items():
        cells = []
        for mn in metric_names:
            per_seed = [np.mean([r[mn] for r in rs if r.get(mn) is not None]) for rs in by_seed.values()
                        if any(r.get(mn) is not None for r in rs)]
            if not per_seed:
                cells.append("-")
                continue
            scale = 1 if mn in ("alpha", "ari") else 100
            sd = f" ± {np.std(per_seed, ddof=1) * scale:.2f}" if len(per_seed) > 1 else ""
            cells.append(f"{np.mean(per_seed) * scale:.2f}{sd}")
        lines.append("| " + " | ".join(map(str, g)) + " | " + " | ".join(cells) + " |")
    if args.part == "mixed":
        lines += per_type_table(rows, cache.parent / "control", methods, Path(args.bench_cells))
    if args.part == "fewdc":
        lines += fewdc_plot(rows, Path(args.out) / "regressions_fewdc.png")
    write_results(args.out, f"regressions_{args.part}", "\n".join(lines), {"provenance": prov, "rows": rows})


def per_type_table(rows: list[dict], control: Path, methods: list[str], bench_cells: Path | None = None) -> list[str]:
    """The one mixed repair against per-type repairs (the control part's uncontrolled cells, same
    budget and seeds), on the types that have both; mean ± std over the seeds both have. The
    other ten types take their per-type repair from the `cpu` bench profile's cells (resnet-20,
    seed 0, same budget; full De), for the methods both scripts share."""
    import numpy as np

    from deeprepair.corruptions import CORRUPTIONS

    def per_type_file(c: str, m: str, seed: int) -> Path | None:
        if c in FIVE:
            p = control / f"{c}__{m}__none__s{seed}.json"
            return p if p.is_file() else None
        found = sorted(bench_cells.glob(f"resnet-20__{c}__{m}__s{seed}__*.json")) if bench_cells else []
        return found[0] if found else None

    def per_type_de(p: Path) -> float:
        r = json.loads(p.read_text())
        return r["metrics"]["de_after"] if "metrics" in r else r["de"]

    lines = ["", "## One mixed repair against one repair per type", "",
             "De accuracy (%) of each type: `per type` = a repair on 1,000 failures of that type alone (part `control`, "
             "no control; full De), `mixed` = the single repair on 1,000 failures across all 15 types (De subsample). "
             "Types outside the control part's five take the per-type repair from the `cpu` bench profile "
             "(same methods and budget, seed 0 only). "
             "Only types with per-type repairs are listed.", "",
             "| type | method | per type | mixed | mixed - per type | seeds |", "|---|---|---:|---:|---:|---:|"]
    found, seed0 = False, {m: [] for m in methods}
    for c in FIVE + [c for c in CORRUPTIONS if c not in FIVE]:
        for m in methods:
            pairs = []
            for r in rows:
                if r["method"] != m or f"de_{c}" not in r:
                    continue
                p = per_type_file(c, m, r["seed"])
                if p is not None:
                    pairs.append((per_type_de(p) * 100, r[f"de_{c}"] * 100, r["seed"]))
            if not pairs:
                continue
            found = True
            seed0[m] += [p[:2] for p in pairs if p[2] == 0]
            a = np.array(pairs)
            sd = (lambda v: f" ± {np.std(v, ddof=1):.2f}" if len(v) > 1 else "")
            lines.append(f"| {c} | {m} | {a[:, 0].mean():.2f}{sd(a[:, 0])} | {a[:, 1].mean():.2f}{sd(a[:, 1])} | "
                         f"{(a[:, 1] - a[:, 0]).mean():+.2f}{sd(a[:, 1] - a[:, 0])} | {len(a)} |")
    for m, pairs in seed0.items():
        if not pairs:
            continue
        a = np.array(pairs)
        lines.append(f"| mean over {len(a)} types, seed 0 | {m} | {a[:, 0].mean():.2f} | {a[:, 1].mean():.2f} | "
                     f"{(a[:, 1] - a[:, 0]).mean():+.2f} | 1 |")
    return lines if found else []


def fewdc_plot(rows: list[dict], path: Path) -> list[str]:
    """De accuracy against |Dc| per corruption (mean ± std over seeds), one line per method; and
    the per-corruption table the plot draws."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    corrs = list(dict.fromkeys(r["corruption"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    sizes = sorted({r["size"] for r in rows})
    ncol = min(3, len(corrs))
    nrow = -(-len(corrs) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.4 * ncol, 3.4 * nrow), squeeze=False)
    base = list(dict.fromkeys(m.split(" (")[0] for m in methods))
    colour = {m: f"C{i}" for i, m in enumerate(base)}  # one colour per method; other selections dashed
    lines = ["", "## De accuracy (%) against |Dc|, per corruption (mean ± std over seeds)", "",
             "| corruption | method \\ collected failures | " + " | ".join(f"{n:,}" for n in sizes) + " |", "|---|---|" + "---:|" * len(sizes)]
    for ax, c in zip(axes.flat, corrs):
        for m in methods:
            stats = []
            for n in sizes:
                v = [r["de"] * 100 for r in rows if (r["corruption"], r["method"], r["size"]) == (c, m, n)]
                stats.append((np.mean(v), np.std(v, ddof=1) if len(v) > 1 else 0.0, len(v)) if v else (np.nan, 0.0, 0))
            if not any(k for _, _, k in stats):  # e.g. a selection run on other corruptions only
                continue
            mu, sd = np.array([x[0] for x in stats]), np.array([x[1] for x in stats])
            ax.errorbar(sizes, mu, yerr=sd, marker="o", capsize=3, label=m, ls="--" if "(" in m else "-",
                        color=colour[m.split(" (")[0]], mfc="white" if "(" in m else None)
            lines.append(f"| {c} | {m} | " + " | ".join(f"{a:.2f} ± {b:.2f}" if k > 1 else (f"{a:.2f}" if k else "-")
                                                      for a, b, k in stats) + " |")
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.set_title(c)
        ax.set_xlabel("|Dc| (collected failures)")
        ax.grid(alpha=0.3)
    for row in axes:
        row[0].set_ylabel("De accuracy (%)")
    for ax in axes.flat[len(corrs):]:
        ax.axis("off")
    handles = {}
    for ax in axes.flat[:len(corrs)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    order = [m for m in methods if m in handles]
    (axes.flat[len(corrs)] if len(corrs) < axes.size else axes.flat[0]).legend(
        [handles[m] for m in order], order, loc="center" if len(corrs) < axes.size else "best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return lines + ["", f"![De against |Dc|]({path.name})"]


if __name__ == "__main__":
    main()
