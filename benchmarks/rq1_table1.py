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

from _common import DEFAULT_DATA, DEFAULT_OUT, REPO_ROOT, provenance, provenance_markdown, write_results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=sorted(glob.glob(str(REPO_ROOT / "checkpoints" / "*.safetensors"))))
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--out", default=str(DEFAULT_OUT / "rq1"))
    ap.add_argument("--mine-dir", default=str(REPO_ROOT / "runs" / "mine"))
    ap.add_argument("--collect", type=int, default=1000)
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args()

    import numpy as np
    import torch

    from deeprepair.corruptions import ALL_CORRUPTIONS
    from deeprepair.data import load_dataset
    from deeprepair.engine import resolve_precision
    from deeprepair.evaluate import CorruptedSource, evaluate_model, iter_predictions, plot_accuracy, markdown_table, severity_table
    from deeprepair.mining import FailureSplit, export_collected, find_failures, table1
    from deeprepair.models.checkpoint import load_checkpoint

    prov = provenance()
    test = load_dataset(args.data, "test")
    device = torch.device("cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, tables, pretrain = {}, {}, []
    cache = out / "rq1_partial.json"
    done = json.loads(cache.read_text()) if cache.is_file() else {}
    for path in args.models:
        name = Path(path).stem
        model, meta = load_checkpoint(path, device)
        pretrain.append((name, meta))
        if name in done:
            results[name] = done[name]
        else:
            t0 = time.perf_counter()
            res = evaluate_model(model, CorruptedSource(test.x, test.y, seed=0), list(ALL_CORRUPTIONS),
                                 device=device, precision=args.precision)
            res["seconds"] = time.perf_counter() - t0
            res["img_per_s"] = len(test) * (1 + 5 * len(ALL_CORRUPTIONS)) / res["seconds"]
            results[name] = res
            done[name] = res
            cache.write_text(json.dumps(done))
            print(f"{name}: clean {res['clean']:.4f}, mean-15 {res['mean_corrupted']:.4f} "
                  f"({res['img_per_s']:.0f} img/s incl. rendering)", flush=True)
        mdir = Path(args.mine_dir) / name
        mdir.mkdir(parents=True, exist_ok=True)
        splits = {}
        source = CorruptedSource(test.x, test.y, seed=0)
        for cname in ALL_CORRUPTIONS[:15]:
            if (mdir / f"{cname}.split.npz").is_file():
                splits[cname] = FailureSplit.load(mdir, cname)
                continue
            preds, stack = [], []
            for _, s, imgs, pred in iter_predictions(model, source, [cname], device=device, precision=args.precision):
                preds.append(pred)
                stack.append(imgs)
            sp = find_failures(cname, preds, test.y, args.collect, test.num_classes, seed=0)
            stack = np.concatenate(stack)
            export_collected(sp, stack, test.classes, mdir / f"{cname}.dc.npz")
            export_collected(sp, stack, test.classes, mdir / f"{cname}.de.npz", part="de")
            sp.save(mdir)
            splits[cname] = sp
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
        text += [f"\n## {name}: per severity (inference {r['img_per_s']:.0f} img/s incl. rendering)\n", severity_table(r)]
    write_results(out, "rq1", "\n".join(text), {"provenance": prov, "results": results})
    rows = ["| model | parameters | epochs | clean test acc. (%) | training wall-clock (min) | precision | command |",
            "|---|---:|---:|---:|---:|---|---|"]
    for name, m in pretrain:
        rows.append(f"| {name} | {m.get('parameters', 0):,} | {m['train_config']['epochs']} | {m['clean_accuracy'] * 100:.2f} | "
                    f"{m['train_seconds'] / 60:.1f} | {m['precision']} | `{m['train_command']}` |")
    write_results(out, "pretraining", "# Pre-training of the CPU-profile models (this machine, 2 cores)\n\n"
                  + provenance_markdown(prov) + "\n\n" + "\n".join(rows) + "\n\nWall-clock is the sum of the epochs' times as "
                  "recorded in each checkpoint's metadata (`history`), test evaluation after each epoch included.",
                  {"provenance": prov, "models": {n: {k: m[k] for k in ("clean_accuracy", "train_seconds", "train_command", "history")}
                                                    for n, m in pretrain}})
    cache.unlink(missing_ok=True)
    shutil.rmtree(out / "__pycache__", ignore_errors=True)


if __name__ == "__main__":
    main()
