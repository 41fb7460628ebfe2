"""The ``deeprepair`` command line: ``deeprepair <command> --help`` for each command."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__
from .errors import DeepRepairError


def _progress(total: int, quiet: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", unit_scale=True, desc=desc, disable=quiet, dynamic_ncols=True)


def _emit(args: argparse.Namespace, result: dict, lines: list[str]) -> None:
    if args.json:
        print(json.dumps(result, indent=2))
    elif not args.quiet:
        print("\n".join(lines))


def _load(args: argparse.Namespace, split: str):
    from .data import load_dataset, resolve_data_dir

    root = resolve_data_dir(args.data)
    if args.limit < 0:
        raise DeepRepairError(f"--limit must be 0 (all images) or a positive count; got {args.limit}")
    out = getattr(args, "out", None)
    if out and Path(out).resolve() == Path(root).resolve():
        raise DeepRepairError(f"--out {out} is the input data folder: choose a separate output folder")
    ds = load_dataset(root, split=split)
    if args.limit:
        ds = ds.subset(np.arange(min(args.limit, len(ds))))
    return root, ds


def _names(arg: list[str] | None, heldout: bool) -> list[str]:
    from .corruptions import ALL_CORRUPTIONS, CORRUPTIONS, get_corruption

    if not arg:
        return list(ALL_CORRUPTIONS if heldout else CORRUPTIONS)
    names = [n for a in arg for n in a.split(",") if n]
    if names == ["all"]:
        return list(ALL_CORRUPTIONS)
    for n in names:
        get_corruption(n)
    return names


def cmd_corrupt(args: argparse.Namespace) -> int:
    from .corruptions.generate import generate, grid_figure

    root, ds = _load(args, args.split)
    names = _names(args.corruptions, heldout=args.grid is not None or args.heldout)
    if args.grid:
        if not 0 <= args.index < len(ds):
            raise DeepRepairError(f"--index {args.index} is out of range: the {args.split} split has {len(ds)} images")
        path = grid_figure(ds.x[args.index], names, args.grid, seed=args.seed)
        _emit(args, {"grid": str(path)}, [f"wrote {path}"])
        if not args.out:
            return 0
    if not args.out:
        raise DeepRepairError("pass --out DIR for the corrupted set (or --grid PNG for a figure)")
    sev = args.severities or [1, 2, 3, 4, 5]
    t0 = time.perf_counter()
    with _progress(len(ds) * len(sev) * len(names), args.quiet, "corrupt") as bar:
        manifest = generate(
            ds.x, ds.y, args.out, names, sev, seed=args.seed, threads=args.threads,
            source={"data": str(root), "split": args.split, "limit": args.limit}, progress=bar.update,
        )  # fmt: skip
    secs = time.perf_counter() - t0
    lines = [f"wrote {len(names)} corruptions x {len(sev)} severities x {len(ds)} images to {args.out} "
             f"in {secs:.1f} s (manifest.json lists sha256 and parameters)"]  # fmt: skip
    _emit(args, {"out": str(args.out), "seconds": round(secs, 2), "manifest": manifest}, lines)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The end-to-end demo available so far: corrupt a test subset and show the damage."""
    from .corruptions import ALL_CORRUPTIONS, get_corruption
    from .corruptions.generate import generate, grid_figure
    from .data import read_corruption
    from .metrics import psnr, ssim

    root, ds = _load(args, "test")
    out = Path(args.out)
    t0 = time.perf_counter()
    names = list(ALL_CORRUPTIONS)
    with _progress(len(ds) * 5 * len(names), args.quiet, "demo: corrupt") as bar:
        generate(ds.x, ds.y, out / "corrupted", names, seed=args.seed, progress=bar.update,
                 source={"data": str(root), "split": "test", "limit": args.limit})  # fmt: skip
    grid = grid_figure(ds.x[0], names, out / "corruptions.png", seed=args.seed)
    rows, table = [], {}
    for name in names:
        vals = []
        for s in range(1, 6):
            block = np.asarray(read_corruption(out / "corrupted", name, s))
            p = np.minimum(psnr(ds.x, block), 100.0)  # an unchanged image counts as 100 dB
            vals.append((float(np.mean(p)), float(np.mean(ssim(ds.x, block)))))
        table[name] = {"psnr": [v[0] for v in vals], "ssim": [v[1] for v in vals]}
        tag = " (held-out)" if get_corruption(name).heldout else ""
        rows.append(f"{name + tag:30s} " + "  ".join(f"{p:5.1f}/{q:.2f}" for p, q in vals))
    secs = time.perf_counter() - t0
    lines = [f"demo: {len(ds)} test images from {root}, {len(names)} corruptions x 5 severities",
             "mean PSNR (dB) / SSIM against the clean image, severities 1..5:", *rows,
             f"corrupted set (CIFAR-10-C layout): {out / 'corrupted'}", f"grid figure: {grid}",
             f"done in {secs:.1f} s"]  # fmt: skip
    _emit(args, {"out": str(out), "grid": str(grid), "seconds": round(secs, 2), "fidelity": table}, lines)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from .corruptions import ALL_CORRUPTIONS, PARAMS, get_corruption

    info = {n: {"family": get_corruption(n).family, "heldout": get_corruption(n).heldout,
                "params": PARAMS[n]} for n in ALL_CORRUPTIONS}  # fmt: skip
    lines = [f"{n:18s} {v['family']:8s} {'held-out' if v['heldout'] else '        '} {v['params']}"
             for n, v in info.items()]  # fmt: skip
    _emit(args, info, lines)
    return 0


def _common(p: argparse.ArgumentParser, data: bool = True) -> None:
    if data:
        p.add_argument("--data", help="dataset folder (npz files, cifar-10-batches-py or an image "
                       "folder tree); default: $DEEPREPAIR_DATA")  # fmt: skip
        p.add_argument("--limit", type=int, default=0, help="use only the first N images (0 = all)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summaries")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deeprepair", description=__doc__.split(":")[0] + ".")
    parser.add_argument("--version", action="version", version=f"deeprepair {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("corrupt", help="render corrupted copies of a dataset (CIFAR-10-C layout)",
                       description="Render every corruption and severity of a dataset split into "
                       "OUT/<corruption>.npy (CIFAR-10-C layout) with a manifest; resumes when rerun.")  # fmt: skip
    _common(p)
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--out", help="output folder (created; existing complete files are kept)")
    p.add_argument("--corruptions", nargs="+", help="names (default: the 15 of the paper; 'all' adds "
                   "the 4 held-out ones); see `deeprepair corruptions`")  # fmt: skip
    p.add_argument("--heldout", action="store_true", help="include the 4 held-out corruptions")
    p.add_argument("--severities", nargs="+", type=int, choices=[1, 2, 3, 4, 5])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="worker threads (default: all cores)")
    p.add_argument("--grid", metavar="PNG", help="instead (or as well), save a grid figure of one "
                   "image under every corruption and severity")  # fmt: skip
    p.add_argument("--index", type=int, default=0, help="which image the --grid figure shows")
    p.set_defaults(func=cmd_corrupt)

    p = sub.add_parser("demo", help="end-to-end demo on a test subset",
                       description="Corrupt a subset of the test set with all 19 corruptions, write a "
                       "grid figure and print how much each corruption degrades the images.")  # fmt: skip
    _common(p)
    p.set_defaults(limit=1000)
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("corruptions", help="list the corruptions and their severity parameters")
    _common(p, data=False)
    p.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except DeepRepairError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume where it stopped", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `deeprepair corruptions | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
