"""Wall time of rendering the full corrupted test set: 15 corruptions x 5 severities x 10,000.

Runs `deeprepair corrupt` (the real command, fresh output folder, cold caches: numba JIT and
noise tables are built inside the timed run) and writes benchmarks/results/corruption_generate.md.

    python benchmarks/corruption_generate.py [--data ../shared/data/cifar10] [--heldout]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, provenance, provenance_markdown, write_results  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(REPO_ROOT.parent / "shared/data/cifar10"))
    ap.add_argument("--heldout", action="store_true", help="also the 4 held-out corruptions")
    ap.add_argument("--out", default=str(REPO_ROOT / "benchmarks/results"))
    args = ap.parse_args()
    prov = provenance(extra_dists=("numba",))
    exe = Path(sys.executable).with_name("deeprepair")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(exe), "corrupt", "--data", args.data, "--out", tmp, "--quiet", "--json"]
        cmd += ["--heldout"] if args.heldout else []
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t0
        manifest = json.loads(proc.stdout)["manifest"]
    per = {k: v["seconds"] for k, v in manifest["corruptions"].items()}
    n = manifest["n_images"] * 5 * len(per)
    target = 120.0
    verdict = "PASS" if wall < target or args.heldout else "FAIL"
    rows = "\n".join(f"| {k} | {s:.2f} |" for k, s in per.items())
    md = f"""# Rendering the corrupted test set

{provenance_markdown(prov)}

`deeprepair corrupt` over {manifest['n_images']:,} test images x 5 severities x {len(per)} corruptions
= {n:,} images, into a fresh folder (JIT compilation and noise tables included).

- wall time of the whole command: **{wall:.1f} s** ({n / wall:,.0f} images/s); target for the 15: < {target:.0f} s: {verdict}

| corruption | seconds (5 severities) |
| --- | ---: |
{rows}
"""
    write_results(args.out, "corruption_generate" + ("_all" if args.heldout else ""), md,
                  {"provenance": prov, "wall_seconds": wall, "images": n, "per_corruption_seconds": per})
    print(f"corruption_generate: {verdict} {wall:.1f} s for {n:,} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
