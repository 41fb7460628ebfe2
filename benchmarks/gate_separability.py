#!/usr/bin/env python
"""How well can the `--gate` router tell failures from clean images? AUC per corruption type.

The router of `repair --gate` (`deeprepair.repair.gate`: a class-balanced logistic regression,
`deep` or `style` descriptor) is fitted on 5,000 random training images against collected
failures Dc (one type, or 60 of each of the 15 types mixed), then scored on 2,000 clean test
images against 300 held-out failures De of each type; AUC 0.5 = chance, 1 = perfect.
Failures come from `benchmarks/rq1_table1.py` (runs/mine/<model>/).

    python benchmarks/gate_separability.py [--model checkpoints/resnet-20.safetensors]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import DEFAULT_DATA, DEFAULT_OUT, REPO_ROOT, provenance, provenance_markdown, write_results


def auc(neg, pos) -> float:
    """Mann-Whitney AUC: P(score of a failure > score of a clean image)."""
    import numpy as np

    s = np.concatenate([neg, pos])
    r = s.argsort().argsort()
    return float((r[len(neg):].sum() - len(pos) * (len(pos) - 1) / 2) / (len(neg) * len(pos)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(REPO_ROOT / "checkpoints" / "resnet-20.safetensors"))
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--fit-on", default="fog,jpeg_compression,mixed")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args()

    import numpy as np
    import torch

    from deeprepair.corruptions import CORRUPTIONS
    from deeprepair.data import load_dataset
    from deeprepair.models.checkpoint import load_checkpoint
    from deeprepair.repair.gate import LinearGate, _descriptors

    prov = provenance()
    model, _ = load_checkpoint(args.model)
    mine = REPO_ROOT / "runs" / "mine" / Path(args.model).stem
    train, test = load_dataset(args.data, "train"), load_dataset(args.data, "test")
    clean = train.x[np.random.default_rng(0).choice(len(train), 5000, replace=False)]
    tc = test.x[np.random.default_rng(1).choice(len(test), 2000, replace=False)]
    dcs = {c: np.load(mine / f"{c}.dc.npz")["x"] for c in CORRUPTIONS}
    des = {c: np.load(mine / f"{c}.de.npz")["x"][:300] for c in CORRUPTIONS}
    rows = []
    for features in ("deep", "style"):
        desc = lambda x: _descriptors(model, x, features, torch.device("cpu"), "auto")[0]  # noqa: E731
        fc, ft = desc(clean), desc(tc)
        fde = {c: desc(d) for c, d in des.items()}
        for fit_on in args.fit_on.split(","):
            fail = np.concatenate([d[:60] for d in dcs.values()]) if fit_on == "mixed" else dcs[fit_on][:900]
            gate = LinearGate(fc.shape[1], squares=features == "style").fit(fc, desc(fail))
            with torch.no_grad():
                st = gate(ft).numpy()
                row = {"features": features, "fit_on": fit_on,
                       **{c: auc(st, gate(f).numpy()) for c, f in fde.items()}}
            row["mean"] = float(np.mean([row[c] for c in CORRUPTIONS]))
            rows.append(row)
            print(features, fit_on, round(row["mean"], 3), flush=True)
    lines = [f"# Gate separability: AUC of failures (De) against clean test images ({Path(args.model).stem})\n",
             provenance_markdown(prov),
             "- router fitted on 5,000 training images vs Dc (900 of one type, or 60 of each of the 15 for `mixed`); "
             "scored on 2,000 clean test images vs 300 De images of each type\n",
             "| descriptor | fitted on | " + " | ".join(CORRUPTIONS) + " | mean |", "|---|---|" + "---:|" * (len(CORRUPTIONS) + 1)]
    for r in rows:
        lines.append(f"| {r['features']} | {r['fit_on']} | " + " | ".join(f"{r[c]:.2f}" for c in CORRUPTIONS)
                     + f" | {r['mean']:.2f} |")
    write_results(args.out, "gate_separability", "\n".join(lines), {"provenance": prov, "rows": rows})


if __name__ == "__main__":
    main()
