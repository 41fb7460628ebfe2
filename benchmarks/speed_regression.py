#!/usr/bin/env python
"""Do today's corruptions, augmentation, style ops and inference keep their recorded speeds? Each
recorded speed's own code (the commit in its results file) against today's, on this machine.

The recorded figures (corruption_speed, augment_speed, inference_speed) may come from another
machine, so they cannot show a regression here. This script times the code of the commit each
was recorded at and the code of this checkout side by side: every round runs each tree once, in
a fresh process, in turn (interleaved, so both see the same load), each figure the fastest of
calls repeated for a second. Each round gives today / old; a figure has regressed when today was
slower by more than 5% in every round (on a shared 2-core machine single rounds differ by tens of
per cent, so one round, or the best of several, says little).

    python benchmarks/speed_regression.py [--rounds 6] [--base REV] [--data DIR] [--quiet]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
GROUPS = {"corruptions": "corruption_speed", "augmentation": "augment_speed", "inference": "inference_speed"}
TOLERANCE = 0.05  # the least a slowdown (or speed-up) must exceed, in every round, to count


# ---- the child: times one tree's code (imported from PYTHONPATH), prints {item: img/s} ----
def child(groups: list[str], data: str, checkpoint: str) -> dict:
    import numpy as np
    import torch

    try:  # the same glibc heap setting the `deeprepair` command makes (moved between modules over time)
        from deeprepair.heap import keep_heap
    except ImportError:
        from deeprepair.engine import keep_heap
    keep_heap()
    with np.load(os.path.join(data, "test.npz")) as d:
        x = np.ascontiguousarray(d["x"][np.sort(np.random.default_rng(0).choice(len(d["x"]), 3000, replace=False))])

    def rate(fn, n: int, min_seconds: float = 1.0) -> float:
        """img/s of the fastest call, calls repeated for at least ``min_seconds`` (and 3 times): a
        fast corruption takes milliseconds, too short to time once."""
        fn()  # warm-up: numba's compile, oneDNN's kernel choice, first allocations
        times, start = [], time.perf_counter()
        while len(times) < 3 or time.perf_counter() - start < min_seconds:
            times.append(_timed(fn))
        return n / min(times)

    out = {}
    if "corruptions" in groups:
        from deeprepair.corruptions import CORRUPTIONS, corrupt

        imgs = x[:2000]
        for name in CORRUPTIONS:
            out[f"corrupt {name} (severity 3)"] = rate(lambda name=name: corrupt(imgs, name, 3, seed=0), len(imgs))
    if "augmentation" in groups:
        from deeprepair.augment import StyleAug, StyleOps
        from deeprepair.cluster import ReferenceSampler
        from deeprepair.style import create_style

        xt = torch.from_numpy(x[:1024]).permute(0, 3, 1, 2).float() / 255
        refs = x[1024:2024]
        rng = lambda: np.random.default_rng(0)  # every call draws the same ops: equal work
        aug = StyleAug()
        out["AugMix, batched (1,024 images)"] = rate(lambda: aug(xt, rng()), len(xt))
        ops = StyleOps(create_style("wavelet"), torch.from_numpy(refs).permute(0, 3, 1, 2).float() / 255,
                       ReferenceSampler("eq4", 5).fit(refs))
        styleaug, b = StyleAug(ops), xt[:128].contiguous(memory_format=torch.channels_last)
        out["StyleAug with wavelet style ops (batch 128)"] = rate(lambda: styleaug(b, rng()), len(b))
    if "inference" in groups:
        from deeprepair.engine import predict_logits
        from deeprepair.models.checkpoint import load_checkpoint

        model, _ = load_checkpoint(checkpoint)
        out["resnet-20 inference (3,000 images, batch 500)"] = rate(lambda: predict_logits(model, x), len(x))
    return out


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# ---- the parent: trees, rounds, verdicts ----
def recorded_commit(stem: str) -> str:
    """The commit a results file says its figures were measured at."""
    p = json.loads((REPO / "benchmarks" / "results" / f"{stem}.json").read_text())["provenance"]
    return p["commit"] + (" (with uncommitted changes)" if p.get("tracked_changes") else "")


def export(rev: str, into: Path) -> Path:
    """``src`` and ``checkpoints`` of commit ``rev``, written under ``into`` (the checkout is not touched)."""
    tree = into / rev
    if not tree.is_dir():
        r = subprocess.run(["git", "archive", "--format=tar", rev, "src", "checkpoints"], cwd=REPO,
                           capture_output=True, check=False)
        if r.returncode != 0:
            raise SystemExit(f"cannot read commit {rev!r} from git ({r.stderr.decode().strip().splitlines()[-1]}); "
                             "pass --base a commit of this repository")
        tree.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
            tar.extractall(tree, filter="data")
    return tree


def run_child(tree: Path, groups: list[str], data: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, str(HERE), "--child", ",".join(groups), "--data", str(Path(data).resolve()),
           "--checkpoint", str(tree / "checkpoints" / "resnet-20.safetensors")]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tree, check=False)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no message"])[-1]
        raise SystemExit(f"timing the code in {tree} failed ({last}); an older --base may lack an API this script calls")
    return json.loads(r.stdout.strip().splitlines()[-1])


def verdict(old: list[float], new: list[float]) -> tuple[float, float, float, str]:
    """From the rounds' img/s, paired by round (the two ran one after the other, so slow drift of
    the machine cancels): (median, lowest and highest of today / old, the verdict). Regressed when
    today was slower by more than TOLERANCE in every round, faster when faster in every round."""
    ratios = sorted(n / o for o, n in zip(old, new))
    mid = statistics.median(ratios)
    word = ("regressed" if ratios[-1] < 1 - TOLERANCE else "faster" if ratios[0] > 1 + TOLERANCE else "within noise")
    return mid, ratios[0], ratios[-1], word


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=6, help="interleaved rounds per tree (default 6)")
    ap.add_argument("--base", help="one old commit for every group (default: each group's recorded commit)")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10"))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child.split(","), args.data, args.checkpoint)))
        return
    sys.path.insert(0, str(HERE.parent))
    from _common import provenance, provenance_markdown, write_results

    if not (Path(args.data) / "test.npz").is_file():
        raise SystemExit(f"CIFAR-10 test set not found in {args.data} (pass --data DIR holding test.npz)")
    if args.rounds < 2:
        raise SystemExit("--rounds must be >= 2: the verdict needs every round to agree")
    prov = provenance()
    base = {g: args.base or recorded_commit(stem) for g, stem in GROUPS.items()}
    say = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    with tempfile.TemporaryDirectory(prefix="speed-regression-") as tmp:
        trees = {}  # label -> (tree, groups)
        for g, rev in base.items():
            label = f"{rev.split()[0]} (recorded)"
            tree = export(rev.split()[0], Path(tmp))
            trees.setdefault(label, (tree, []))[1].append(g)
        trees["today"] = (REPO, list(GROUPS))
        runs: dict = {label: [] for label in trees}
        for r in range(args.rounds):
            for label, (tree, groups) in trees.items():
                say(f"round {r + 1}/{args.rounds}: {label} ({', '.join(groups)})")
                runs[label].append(run_child(tree, groups, args.data))
    rows = []
    for label, (_, groups) in trees.items():
        if label == "today":
            continue
        for item in runs[label][0]:
            old, new = [x[item] for x in runs[label]], [x[item] for x in runs["today"]]
            mid, low, high, word = verdict(old, new)
            rows.append({"item": item, "base": label.split()[0], "old": old, "today": new, "ratio": mid,
                         "ratio_range": [low, high], "verdict": word})
    bad = [r["item"] for r in rows if r["verdict"] == "regressed"]
    md = ["# Speed regression: the recorded figures' own code against today's, on this machine\n",
          provenance_markdown(prov),
          f"- rounds: {args.rounds}, interleaved, each tree in a fresh process per round",
          "- recorded at: " + "; ".join(f"{g} {rev} ({GROUPS[g]}.json)" for g, rev in base.items()),
          "- a recorded commit marked with uncommitted changes is timed as committed",
          (f"- per round, today / old (the two ran one after the other); regressed: slower by more than "
           f"{TOLERANCE:.0%} in every round; faster: faster by more than that in every round\n"),
          "| what | old code | old, best (img/s) | today, best (img/s) | today / old, median | lowest-highest round | verdict |",
          "|---|---|---:|---:|---:|---:|---|"]
    md += [f"| {r['item']} | {r['base']} | {max(r['old']):,.0f} | {max(r['today']):,.0f} | {r['ratio']:.2f}x | "
           f"{r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f}x | {r['verdict']} |" for r in rows]
    md.append(f"\n**{len(rows) - len(bad)} of {len(rows)} figures not slower than their recorded code's in every "
              f"round**" + (f"; regressed: {', '.join(bad)}." if bad else "."))
    write_results(args.out, "speed_regression", "\n".join(md) + "\n",
                  {"provenance": prov, "base": base, "rounds": args.rounds, "rows": rows, "regressed": bad})
    say("\n".join(md[-len(rows) - 3:]))
    sys.exit(0)


if __name__ == "__main__":
    main()
