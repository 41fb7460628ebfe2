#!/usr/bin/env python
"""numba compiles once: the first run after an install against the next one.

Two fresh processes share one empty numba cache folder (``NUMBA_CACHE_DIR``, which numba reads
before the package's own ``__pycache__``, so the first process is a fresh install's first run).
In each, per corruption: the set-up (``corrupt`` on 2 images: numba's compile or cache load, lazy
imports) and then the throughput of one batched call on ``--n`` images, as ``deeprepair corrupt``
now reports them (set-up apart from throughput). Issue 34's target: the throughput of the first
run equals the second's, the compile being paid, and reported, once.

    python benchmarks/corruption_coldstart.py [--n 2000] [--corruptions main]
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
    ap.add_argument("--shared", action="store_true", help="say in the results that other jobs shared the machine")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args()
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
    write_results(args.out, "corruption_coldstart", "\n".join(lines) + "\n",
                  {"provenance": prov, "n": args.n, "runs": runs, "rows": rows, "shared_machine": args.shared,
                   "setup_total_s": {"first": tot1, "second": tot2}})


if __name__ == "__main__":
    main()
