#!/usr/bin/env python
"""numba compiles once: the first run after an install against the next one.

Two fresh processes share one empty numba cache folder (``NUMBA_CACHE_DIR``, which numba reads
before the package's own ``__pycache__``, so the first process is a fresh install's first run).
In each, per corruption: the set-up (``corrupt`` on 2 images: numba's compile or cache load, lazy
imports) and then the throughput of one batched call on ``--n`` images, as ``deeprepair corrupt``
now reports them (set-up apart from throughput). The throughput of the first run should equal the
second's, the compile being paid, and reported, once.

With ``--reference-images K`` the per-image reference (``benchmarks/reference.py``, as
``corruption_speed.py`` times it) runs on K of the same images in this process, after both
children, and each run's speed-up is read with its set-up included: ``n / (set-up + n / img/s)``
over the reference's images per second. Target: the harmonic mean over the 15 CIFAR-10-C
corruptions is >= 20x from the first run.

    python benchmarks/corruption_coldstart.py [--n 2000] [--corruptions main] [--reference-images 200]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from _common import DEFAULT_DATA, DEFAULT_OUT, import_corruptions, provenance, provenance_markdown, select_corruptions, write_results

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from deeprepair.corruptions import corrupt
imp = time.perf_counter() - t0
with np.load(sys.argv[1]) as d:
    x = np.ascontiguousarray(d["x"][: int(sys.argv[2])])
out = {"import_s": imp, "rows": {}}
for name in sys.argv[3].split(","):
    a = time.perf_counter(); corrupt(x[:2], name, 3, seed=0); b = time.perf_counter()
    corrupt(x, name, 3, seed=0); c = time.perf_counter()
    out["rows"][name] = {"setup_s": b - a, "img_per_s": len(x) / (c - b)}
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--corruptions", default="all")
    ap.add_argument("--reference-images", type=int, default=0,
                    help="time the per-image reference on this many of the images (0: not at all)")
    ap.add_argument("--shared", action="store_true", help="say in the results that other jobs shared the machine")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args()
    if args.n < 1 or args.reference_images < 0:
        ap.error("--n must be >= 1 and --reference-images >= 0")
    _, main_c, held = import_corruptions()
    names = select_corruptions(args.corruptions, main_c, held)
    prov = provenance()
    runs = []
    with tempfile.TemporaryDirectory(prefix="numba-cold-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for label in ("first run after install (empty cache)", "second run (cache written by the first)"):
            r = subprocess.run([sys.executable, "-c", CHILD, str(os.path.join(args.data, "test.npz")), str(args.n),
                                ",".join(names)], env=env, capture_output=True, text=True, check=True)
            runs.append({"run": label, **json.loads(r.stdout.strip().splitlines()[-1])})
            print(label, flush=True)
    first, second = runs
    rows = [{"corruption": n, "setup_first_s": first["rows"][n]["setup_s"], "setup_second_s": second["rows"][n]["setup_s"],
             "img_per_s_first": first["rows"][n]["img_per_s"], "img_per_s_second": second["rows"][n]["img_per_s"]}
            for n in names]
    if args.reference_images:
        _reference_speedups(rows, args)
    tot1 = sum(r["setup_first_s"] for r in rows)
    tot2 = sum(r["setup_second_s"] for r in rows)
    lines = ["# numba compiles once: first run after an install vs the next\n", provenance_markdown(prov),
             f"- load: {'shared with other jobs while this ran: compare the columns, not absolute figures' if args.shared else 'not checked'}",
             f"- {args.n:,} test images, severity 3, seed 0; each run a fresh process; the two share one empty "
             "`NUMBA_CACHE_DIR`\n",
             f"Set-up (2-image call: compile or cache load, lazy imports), all corruptions: **{tot1:.1f} s** on the "
             f"first run, **{tot2:.1f} s** on the second. `deeprepair corrupt` reports it apart from its throughput "
             "(`set-up before that: ...`).\n",
             "| corruption | set-up, 1st run (s) | set-up, 2nd run (s) | img/s after set-up, 1st run | img/s, 2nd run | 1st / 2nd |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['corruption']} | {r['setup_first_s']:.2f} | {r['setup_second_s']:.2f} | {r['img_per_s_first']:,.0f} | "
              f"{r['img_per_s_second']:,.0f} | {r['img_per_s_first'] / r['img_per_s_second']:.2f} |" for r in rows]
    if args.reference_images:
        lines += _reference_markdown(rows, args, main_c)
    write_results(args.out, "corruption_coldstart", "\n".join(lines) + "\n",
                  {"provenance": prov, "n": args.n, "runs": runs, "rows": rows, "shared_machine": args.shared,
                   "setup_total_s": {"first": tot1, "second": tot2}, "reference_images": args.reference_images,
                   "hmean_speedup_with_setup": _hmeans(rows, main_c) if args.reference_images else None})


def _reference_speedups(rows: list[dict], args) -> None:
    """Each row gains the reference's img/s (a per-image loop over the first K images, after a
    1-image warm-up) and each run's speed-up over it, that run's set-up included."""
    import time

    import numpy as np
    from _common import load_test_images
    from reference import reference_fn

    x, _ = load_test_images(args.data, args.n)
    k = min(args.reference_images, len(x))
    for r in rows:
        fn, label = reference_fn(r["corruption"], "imagecorruptions")
        fn(x[0], 3)
        np.random.seed(0)
        t0 = time.perf_counter()
        for img in x[:k]:
            fn(img, 3)
        r.update(ref_library=label, ref_img_per_s=k / (time.perf_counter() - t0))
        r["speedup_first_after_setup"] = r["img_per_s_first"] / r["ref_img_per_s"]
        for run in ("first", "second"):
            with_setup = args.n / (r[f"setup_{run}_s"] + args.n / r[f"img_per_s_{run}"])
            r[f"speedup_{run}_with_setup"] = with_setup / r["ref_img_per_s"]
        print(f"reference {r['corruption']}", flush=True)


def _hmeans(rows: list[dict], main_c) -> dict:
    main = [r for r in rows if r["corruption"] in main_c]
    keys = {"first": "speedup_first_with_setup", "second": "speedup_second_with_setup",
            "first_after_setup": "speedup_first_after_setup"}
    return {run: len(main) / sum(1 / r[key] for r in main) if main else None for run, key in keys.items()}


def _reference_markdown(rows: list[dict], args, main_c) -> list[str]:
    h = _hmeans(rows, main_c)
    out = ["", f"## Against the per-image reference, set-up included ({args.n:,} images per call; reference timed on "
           f"{min(args.reference_images, args.n):,})\n",
           f"Harmonic mean over the {sum(r['corruption'] in main_c for r in rows)} CIFAR-10-C corruptions here: "
           f"**{h['first']:.1f}x** on the first run after install, **{h['second']:.1f}x** on the second; the "
           f"first run's throughput after its set-up (the set-up reported apart): **{h['first_after_setup']:.1f}x** "
           "(target: >= 20x from the first run).\n",
           "| corruption | reference | reference img/s | 1st run, set-up included (x reference) | 1st run after set-up | "
           "2nd run, set-up included |", "|---|---|---:|---:|---:|---:|"]
    out += [f"| {r['corruption']} | {r['ref_library']} | {r['ref_img_per_s']:,.0f} | {r['speedup_first_with_setup']:.1f}x | "
            f"{r['speedup_first_after_setup']:.1f}x | {r['speedup_second_with_setup']:.1f}x |" for r in rows]
    return out


if __name__ == "__main__":
    main()
