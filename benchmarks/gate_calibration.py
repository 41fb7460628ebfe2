#!/usr/bin/env python
"""How the routed repair's threshold is calibrated: Dt validation only (1,000 images, the
default) against extra training images left out of fine-tuning, with the break limit held as a
point estimate or as a Wilson 95% upper bound. Each repair is trained once and gated under every
variant; test break rate, clean accuracy and De are measured (never used for the choice).

    python benchmarks/gate_calibration.py [--seeds 0,1,2] [--method deeprepair]
    (results/gate_calibration.md; other methods: results/gate_calibration_<method>.md)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import DEFAULT_DATA, DEFAULT_OUT, REPO_ROOT, atomic_write_text, provenance, provenance_markdown, write_results

FIVE = ["gaussian_noise", "motion_blur", "fog", "contrast", "jpeg_compression"]
VARIANTS = {"none": None, "val-1000 point": (0, "point"), "cal-5000 point": (5000, "point"),
            "cal-5000 wilson": (5000, "wilson")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(REPO_ROOT / "checkpoints" / "resnet-20.safetensors"))
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--method", default="deeprepair")
    ap.add_argument("--corruptions", default=",".join(FIVE))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--cache", default=str(REPO_ROOT / "runs" / "bench_regressions"))
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args()

    import dataclasses

    import numpy as np
    import torch

    from deeprepair.data import load_dataset, load_failure_set
    from deeprepair.models.checkpoint import load_checkpoint
    from deeprepair.repair import RepairConfig, compare, repair
    from deeprepair.repair.core import make_split
    from deeprepair.repair.gate import fit_gate

    prov = provenance()
    device = torch.device("cpu")
    model, _ = load_checkpoint(args.model, device)
    mname = Path(args.model).stem
    mine = REPO_ROOT / "runs" / "mine" / mname
    train, test = load_dataset(args.data, "train"), load_dataset(args.data, "test")
    cache = Path(args.cache) / mname / "gate_calibration"
    cache.mkdir(parents=True, exist_ok=True)
    rows = []
    for s in [int(v) for v in args.seeds.split(",")]:
        for c in args.corruptions.split(","):
            path = cache / f"{c}__{args.method}__s{s}.json"
            if path.is_file():
                res = json.loads(path.read_text())
            else:
                dc = load_failure_set(mine / f"{c}.dc.npz", train.classes)
                de = load_failure_set(mine / f"{c}.de.npz", train.classes)
                cfg = RepairConfig(method=args.method, seed=s, epochs=2, train_subset=5000)
                t0 = time.perf_counter()
                rep_model, rep = repair(model, train, dc, cfg, device=device)
                before: dict = {}
                res = {}
                for name, v in VARIANTS.items():
                    info = {}
                    m_ = rep_model
                    if v is not None:
                        split = make_split(train, dc, dataclasses.replace(cfg, gate_calibration=v[0]))
                        m_, info = fit_gate(model, rep_model, split, cfg.max_break, device, rep["precision"], bound=v[1])
                    cmp = compare(model, m_.eval(), test, failures=dc, heldout=de, device=device, cache=before)
                    res[name] = {"de": cmp["de_after"], "clean": cmp["clean_after"], "clean_before": cmp["clean_before"],
                                 "break": cmp["break_rate"], **{k: info.get(k) for k in ("val_break", "val_break_upper",
                                                                                      "routed_clean", "val_clean_images")}}
                res["wall"] = time.perf_counter() - t0
                atomic_write_text(path, json.dumps(res))
                print(c, s, {k: (round(v["de"], 4), round(v["break"], 4)) for k, v in res.items() if k != "wall"}, flush=True)
            for name in VARIANTS:
                rows.append({"corruption": c, "seed": s, "variant": name, **res[name], "kept": res[name]["de"] / res["none"]["de"]})

    lines = [f"# Routed repair: calibrating the threshold ({mname}, {args.method})\n", provenance_markdown(prov),
             "- budget per repair: 2 epochs over 5,000 training images + Dc (as `regressions.py --part control`); "
             f"corruptions: {args.corruptions}; `--max-break 0.01`; each repair trained once and gated under every variant\n"
             "- `val-1000 point`: the default (1,000 held-back Dt images, break estimate <= 1%); `cal-5000`: plus 5,000 "
             "training images left out of fine-tuning; `wilson`: the Wilson 95% upper bound of the validation break "
             "rate <= 1%\n- test columns: mean over corruptions, ± = std over seeds; counts are per corruption and seed\n",
             "| variant | De (%) | clean (%) | break (%) | gain kept (%) | break <= 1% | clean >= original | kept >= 90% | validation break (%) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in VARIANTS:
        rs = [r for r in rows if r["variant"] == name]
        seeds = sorted({r["seed"] for r in rs})

        def ms(k, rs=rs, seeds=seeds):
            per = [np.mean([r[k] for r in rs if r["seed"] == s]) * 100 for s in seeds]
            return f"{np.mean(per):.2f}" + (f" ± {np.std(per, ddof=1):.2f}" if len(per) > 1 else "")

        vb = [r["val_break"] for r in rs if r.get("val_break") is not None]
        lines.append(f"| {name} | {ms('de')} | {ms('clean')} | {ms('break')} | {ms('kept')} | "
                     f"{sum(r['break'] <= 0.01 for r in rs)}/{len(rs)} | {sum(r['clean'] >= r['clean_before'] for r in rs)}/{len(rs)} | "
                     f"{sum(r['kept'] >= 0.9 for r in rs)}/{len(rs)} | {np.mean(vb) * 100:.2f} |" if vb else
                     f"| {name} | {ms('de')} | {ms('clean')} | {ms('break')} | 100 | {sum(r['break'] <= 0.01 for r in rs)}/{len(rs)} | "
                     f"{sum(r['clean'] >= r['clean_before'] for r in rs)}/{len(rs)} | - | - |")
    name = "gate_calibration" if args.method == "deeprepair" else f"gate_calibration_{args.method}"
    write_results(args.out, name, "\n".join(lines), {"provenance": prov, "rows": rows})


if __name__ == "__main__":
    main()
