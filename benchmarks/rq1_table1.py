#!/usr/bin/env python
"""RQ1 and Table 1 for the pre-trained CPU-profile models.

For each checkpoint: clean accuracy and accuracy under the 15 corruptions (+ the 4 held-out
ones) at each severity, rendered on the fly from the 10,000 test images (seed 0); then the
failures per corruption over the 5 severities, split into 1,000 collected (Dc, 100 per class)
and the rest held out (De). Writes rq1.md/.json/.png, table1_<model>.md/.csv, pretraining.md.
The Dc/De files (large) go to --mine-dir, not to results.

    python benchmarks/rq1_table1.py [--models checkpoints/*.safetensors] [--data DIR]
"""

from __future__ import annotations

import argparse
import glob
import json
import shutil
import time
from pathlib import Path

from _common import DEFAULT_DATA, DEFAULT_OUT, REPO_ROOT, atomic_write_text, provenance, provenance_markdown, write_results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=sorted(p for p in glob.glob(str(REPO_ROOT / "checkpoints" / "*.safetensors"))
                                                          if not p.endswith(".state.safetensors")
                                                          and not Path(p).name.startswith("style-")))
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--out", default=str(DEFAULT_OUT / "rq1"))
    ap.add_argument("--mine-dir", default=str(REPO_ROOT / "runs" / "mine"))
    ap.add_argument("--collect", type=int, default=1000)
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args()

    import numpy as np
    import torch

    from deeprepair.corruptions import ALL_CORRUPTIONS, CORRUPTIONS
    from deeprepair.data import load_dataset
    from deeprepair.engine import predict, resolve_precision
    from deeprepair.evaluate import CorruptedSource, iter_predictions, markdown_table, plot_accuracy, severity_table
    from deeprepair.mining import FailureSplit, export_collected, find_failures, table1
    from deeprepair.models.checkpoint import load_checkpoint

    prov = provenance()
    test = load_dataset(args.data, "test")
    device = torch.device("cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, tables, pretrain = {}, {}, []
    cache = Path(args.mine_dir) / "rq1_cache.json"  # finished models and corruptions: a rerun adds only new ones
    done = json.loads(cache.read_text()) if cache.is_file() else {}
    for path in args.models:
        name = Path(path).stem
        model, meta = load_checkpoint(path, device)
        pretrain.append((name, meta))
        mdir = Path(args.mine_dir) / name
        mdir.mkdir(parents=True, exist_ok=True)
        source = CorruptedSource(test.x, test.y, seed=0)
        res = done.get(name) or {"corruptions": {}, "seconds": 0.0}
        splits = {}
        t0 = time.perf_counter()
        if "clean" not in res:
            res["clean"] = float((predict(model, test.x, device=device, precision=args.precision) == test.y).mean())
        for cname in ALL_CORRUPTIONS:  # one pass per corruption: accuracy, and for the 15, the failures
            mine = cname in CORRUPTIONS
            if cname in res["corruptions"] and (not mine or (mdir / f"{cname}.split.npz").is_file()):
                if mine:
                    splits[cname] = FailureSplit.load(mdir, cname)
                continue
            preds, stack = [], []
            for _, s, imgs, pred in iter_predictions(model, source, [cname], device=device, precision=args.precision):
                preds.append(pred)
                stack.append(imgs if mine else None)
            acc = [float((p == test.y).mean()) for p in preds]
            res["corruptions"][cname] = {"severity": acc, "mean": float(np.mean(acc))}
            if mine:
                sp = find_failures(cname, preds, test.y, args.collect, test.num_classes, seed=0)
                stack = np.concatenate(stack)
                export_collected(sp, stack, test.classes, mdir / f"{cname}.dc.npz")
                export_collected(sp, stack, test.classes, mdir / f"{cname}.de.npz", part="de")
                sp.save(mdir)
                splits[cname] = sp
            res["seconds"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            done[name] = res
            atomic_write_text(cache, json.dumps(done))
            print(f"{name} {cname}: {res['corruptions'][cname]['mean']:.4f}", flush=True)
        main15 = [res["corruptions"][c]["severity"] for c in CORRUPTIONS]
        res["mean_corrupted"] = float(np.mean(main15))
        res["per_severity"] = [float(np.mean([v[i] for v in main15])) for i in range(5)]
        res["main_corruptions"] = len(CORRUPTIONS)
        res["images"] = len(test)
        res["img_per_s"] = len(test) * (1 + 5 * len(ALL_CORRUPTIONS)) / max(res["seconds"], 1e-9)
        results[name] = res
        md, csv_text = table1(splits, args.collect)
        tables[name] = {n: {"failures": len(s.index), "collected": len(s.dc), "held_out": len(s.de)} for n, s in splits.items()}
        (out / f"table1_{name}.csv").write_text(csv_text)
        write_results(out, f"table1_{name}", f"# Table 1: failures of {name} (Dc = {args.collect} collected, "
                      f"100 per class; De = the rest)\n\n{provenance_markdown(prov)}\n- precision: "
                      f"{resolve_precision(args.precision, device)}\n- Dc/De files: `{mdir}` (not committed)\n\n{md}",
                      {"provenance": prov, "table1": tables[name]})
    plot_accuracy(results, out / "rq1.png")
    text = [f"# RQ1: accuracy (%) of the pre-trained CPU-profile models, clean and corrupted\n",
            provenance_markdown(prov),
            f"- data: `{args.data}` test split, {len(test):,} images; corruptions rendered on the fly (seed 0)",
            f"- precision: {resolve_precision(args.precision, device)}; figure: `rq1.png`\n",
            markdown_table(results)]
    for name, r in results.items():
        text += [f"\n## {name}: per severity ({r['img_per_s']:.0f} img/s: rendering + inference + mining)\n", severity_table(r)]
    write_results(out, "rq1", "\n".join(text), {"provenance": prov, "results": results})
    rows = ["| model | parameters | epochs | clean test acc. (%) | training wall-clock (min) | median epoch (s) | "
            "epochs x median (min) | precision | command |", "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for name, m in pretrain:
        med = float(np.median([h["seconds"] for h in m["history"]]))
        rows.append(f"| {name} | {m.get('parameters', 0):,} | {m['train_config']['epochs']} | {m['clean_accuracy'] * 100:.2f} | "
                    f"{m['train_seconds'] / 60:.1f} | {med:.0f} | {med * len(m['history']) / 60:.1f} | {m['precision']} | "
                    f"`{m['train_command']}` |")
    write_results(out, "pretraining", "# Pre-training of the CPU-profile models (this machine, 2 cores)\n\n"
                  + provenance_markdown(prov) + "\n\n" + "\n".join(rows) + "\n\nWall-clock is the sum of the epochs' times as "
                  "recorded in each checkpoint's metadata (`history`), test evaluation after each epoch included. Runs that "
                  "shared the 2 cores with other jobs for some epochs (resnet-20, wrn-16-2: see each checkpoint's history) "
                  "have a few slow epochs; epochs x median epoch estimates the run on an idle machine.",
                  {"provenance": prov, "models": {n: {k: m[k] for k in ("clean_accuracy", "train_seconds", "train_command", "history")}
                                                    for n, m in pretrain}})
    shutil.rmtree(out / "__pycache__", ignore_errors=True)


if __name__ == "__main__":
    main()
