#!/usr/bin/env python
"""Fidelity table of deeprepair's corruptions: PSNR and SSIM of corrupted vs clean images.

For each of the 19 corruptions (15 CIFAR-10-C + 4 held-out) and each severity 1..5, a fixed random subset (seed 0) of N
CIFAR-10 test images (default 1,000) are corrupted with ``deeprepair.corruptions.corrupt(images,
name, severity, seed=0)`` and compared with the clean images:

* PSNR (dB, peak 255) per image, averaged over images; an image left identical to the clean one
  (infinite PSNR) is counted at 100 dB (above any finite 32x32x3 uint8 PSNR, ~83 dB) and counted
  in the ``identical`` column;
* SSIM (``deeprepair.metrics.ssim``): Wang et al. 2004, per RGB channel, 11x11 Gaussian window
  (sigma 1.5), K1 0.01, K2 0.03, L 255, averaged over valid window positions and channels
  (``--window uniform``: 7x7 box window with sample covariances, scikit-image's default).

A corruption is flagged monotonic when both mean PSNR and mean SSIM are non-increasing from each
severity to the next (within ``--tol``); the exceptions are listed.

Writes ``<out>/corruption_fidelity.md`` and ``.json``. Example::

    .venv/bin/python benchmarks/corruption_fidelity.py
    .venv/bin/python benchmarks/corruption_fidelity.py --n 100 --corruptions fog --out /tmp/bench
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

from deeprepair.metrics import psnr, ssim  # noqa: E402

PSNR_CAP = 100.0
SEVERITIES = (1, 2, 3, 4, 5)
SSIM_DESCRIPTION = {
    "gaussian": "Wang et al. 2004 SSIM per RGB channel, 11x11 Gaussian window (sigma 1.5), K1=0.01, K2=0.03, "
    "L=255, population variances, mean over valid window positions and the 3 channels "
    "(= skimage structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, "
    "channel_axis=-1, data_range=255))",
    "uniform": "Wang et al. 2004 SSIM per RGB channel, 7x7 uniform window, sample covariances, K1=0.01, "
    "K2=0.03, L=255, mean over valid window positions and the 3 channels (= skimage "
    "structural_similarity(channel_axis=-1, data_range=255) defaults)",
}


def _monotonic_exceptions(name, psnrs, ssims, tol):
    exc = []
    for metric, vals in (("PSNR", psnrs), ("SSIM", ssims)):
        for i in range(len(vals) - 1):
            if vals[i + 1] > vals[i] + tol:
                exc.append(
                    {
                        "corruption": name,
                        "metric": metric,
                        "from_severity": SEVERITIES[i],
                        "to_severity": SEVERITIES[i + 1],
                        "from_value": vals[i],
                        "to_value": vals[i + 1],
                    }
                )
    return exc


def run(args) -> dict:
    corrupt, main, heldout = _common.import_corruptions()
    names = _common.select_corruptions(args.corruptions, main, heldout)
    x, data_path = _common.load_test_images(args.data, args.n)
    prov = _common.provenance()

    from tqdm import tqdm

    rows, exceptions = [], []
    total = len(names) * len(SEVERITIES)
    bar = tqdm(total=total, desc="corruption_fidelity", unit="run", disable=args.quiet, file=sys.stderr)
    for name in names:
        row = {"corruption": name, "set": "main" if name in main else "heldout", "severities": []}
        try:
            for s in SEVERITIES:
                bar.set_postfix_str(f"{name} s{s}")
                t0 = time.perf_counter()
                out = np.asarray(corrupt(x, name, s, seed=args.seed))
                dt = time.perf_counter() - t0
                if out.shape != x.shape or out.dtype != np.uint8:
                    raise RuntimeError(f"returned {out.dtype} {out.shape}, expected uint8 {x.shape}")
                p = psnr(x, out)
                identical = int(np.isinf(p).sum())
                p = np.minimum(p, PSNR_CAP)
                q = ssim(x, out, window=args.window)
                row["severities"].append(
                    {
                        "severity": s,
                        "psnr_mean": float(p.mean()),
                        "psnr_std": float(p.std()),
                        "ssim_mean": float(q.mean()),
                        "ssim_std": float(q.std()),
                        "identical": identical,
                        "seconds": dt,
                    }
                )
                bar.update(1)
        except Exception as exc:  # report and continue with the next corruption
            row["error"] = f"{type(exc).__name__}: {exc}"
            bar.update(len(SEVERITIES) - len(row["severities"]))
        if "error" not in row:
            ps = [r["psnr_mean"] for r in row["severities"]]
            ss = [r["ssim_mean"] for r in row["severities"]]
            ex = _monotonic_exceptions(name, ps, ss, args.tol)
            row["monotonic"] = not ex
            exceptions += ex
        else:
            row["monotonic"] = None
        rows.append(row)
    bar.close()

    return {
        "provenance": prov,
        "settings": {
            **_common.image_settings(data_path, x),
            "seed": args.seed,
            "severities": list(SEVERITIES),
            "psnr": f"per image, peak 255, mean over images; identical images counted at {PSNR_CAP:g} dB",
            "ssim": SSIM_DESCRIPTION[args.window],
            "monotonic_rule": f"mean PSNR and mean SSIM non-increasing with severity (tolerance {args.tol:g})",
        },
        "results": rows,
        "monotonic_exceptions": exceptions,
        "summary": {
            "corruptions": len(rows),
            "monotonic": sum(1 for r in rows if r["monotonic"]),
            "non_monotonic": [r["corruption"] for r in rows if r["monotonic"] is False],
            "errors": {r["corruption"]: r["error"] for r in rows if "error" in r},
        },
    }


def to_markdown(res: dict) -> str:
    p, st, sm = res["provenance"], res["settings"], res["summary"]
    sev = st["severities"]
    L = [
        "# Corruption fidelity: PSNR / SSIM of corrupted vs clean CIFAR-10 test images",
        "",
        _common.provenance_markdown(p),
        f"- data: {st['n_images']:,} images (fixed random subset, seed 0) of `{st['data']}` (sha256 of the pixels, first 16 hex: "
        f"`{st['images_sha256_16']}`), seed {st['seed']}",
        f"- PSNR: {st['psnr']}",
        f"- SSIM: {st['ssim']}",
        f"- monotonic: {st['monotonic_rule']}",
        "",
        "| corruption | set | " + " | ".join(f"PSNR s{s}" for s in sev) + " | " + " | ".join(
            f"SSIM s{s}" for s in sev
        ) + " | monotonic |",
        "| --- | --- | " + " | ".join("---:" for _ in sev) + " | " + " | ".join("---:" for _ in sev) + " | :---: |",
    ]
    for r in res["results"]:
        if "error" in r:
            L.append(f"| {r['corruption']} | {r['set']} | error: {r['error']} |" + " |" * (2 * len(sev)))
            continue
        ps = []
        for v in r["severities"]:
            cell = f"{v['psnr_mean']:.2f}"
            if v["identical"]:
                cell += f" ({v['identical']} identical)"
            ps.append(cell)
        ss = [f"{v['ssim_mean']:.4f}" for v in r["severities"]]
        L.append(
            f"| {r['corruption']} | {r['set']} | " + " | ".join(ps) + " | " + " | ".join(ss) + " | "
            + ("yes" if r["monotonic"] else "**no**") + " |"
        )
    L += ["", f"Monotonic: {sm['monotonic']} of {sm['corruptions']} corruptions."]
    ex = res["monotonic_exceptions"]
    if ex:
        L += ["", "## Exceptions to monotonic degradation", ""]
        for e in ex:
            L.append(
                f"- {e['corruption']}: mean {e['metric']} rises from severity {e['from_severity']} to "
                f"{e['to_severity']}: {e['from_value']:.4f} -> {e['to_value']:.4f}"
            )
    if sm["errors"]:
        L += ["", "## Errors", ""] + [f"- {k}: {v}" for k, v in sm["errors"].items()]
    return "\n".join(L) + "\n"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description="PSNR/SSIM of deeprepair's corruptions (19 corruptions x severities 1..5) against the "
        "clean CIFAR-10 test images; writes corruption_fidelity.md and .json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--data", default=str(_common.DEFAULT_DATA), help="folder holding test.npz (arrays x, y)")
    ap.add_argument("--n", type=int, default=1000, help="number of test images")
    ap.add_argument(
        "--corruptions", default="all", help="'all', 'main', 'heldout' or a comma-separated list of names"
    )
    ap.add_argument("--seed", type=int, default=0, help="seed passed to corrupt()")
    ap.add_argument("--window", choices=("gaussian", "uniform"), default="gaussian", help="SSIM window")
    ap.add_argument("--tol", type=float, default=0.0, help="allowed rise of a mean metric between severities")
    ap.add_argument("--out", default=str(_common.DEFAULT_OUT), help="folder for corruption_fidelity.md/.json")
    ap.add_argument("--quiet", action="store_true", help="no progress bar or table; print only the summary")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.n < 1:
        raise SystemExit("--n must be >= 1")
    res = run(args)
    sm = _common.report(args.out, "corruption_fidelity", res, to_markdown, args.quiet)
    if args.quiet:
        for e in res["monotonic_exceptions"]:
            print(
                f"non-monotonic: {e['corruption']} {e['metric']} s{e['from_severity']}->s{e['to_severity']} "
                f"{e['from_value']:.4f} -> {e['to_value']:.4f}"
            )
    print(
        f"corruption_fidelity: {sm['monotonic']}/{sm['corruptions']} monotonic"
        + (f"; non-monotonic: {', '.join(sm['non_monotonic'])}" if sm["non_monotonic"] else "")
        + (f"; errors: {', '.join(sm['errors'])}" if sm["errors"] else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
