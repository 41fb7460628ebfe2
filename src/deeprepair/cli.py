"""The ``deeprepair`` command line: ``deeprepair <command> --help`` for each command."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__
from .errors import DeepRepairError


from .repair_config import METHODS, PRESETS, RepairConfig  # plain data: `--help` does not import torch

REPAIR_METHODS = list(METHODS)


class _Parser(argparse.ArgumentParser):
    """argparse with the project's one-line errors: ``error: ...`` on stderr, exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _number(kind: type, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
            hi_open: bool = False):
    """An argparse ``type=`` that parses ``kind`` and range-checks it; NaN and Inf are refused.

    The one place numeric options are checked: the commands never see an out-of-range value.
    """
    what = "an integer" if kind is int else "a number"
    if lo is not None and hi is not None:
        span = f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    elif lo is not None:
        span = f" {'>' if lo_open else '>='} {lo}"
    else:
        span = ""

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}{span}, got {text!r}") from None
        if (not math.isfinite(v) or (lo is not None and (v <= lo if lo_open else v < lo))
                or (hi is not None and (v >= hi if hi_open else v > hi))):
            raise argparse.ArgumentTypeError(f"must be {what}{span}, got {text}")
        return v

    parse.kind, parse.lo, parse.hi, parse.lo_open, parse.hi_open = kind, lo, hi, lo_open, hi_open  # for tests
    return parse


POSITIVE_INT = _number(int, 1)
COUNT = _number(int, 0)  # 0 allowed (0 = all, or none)
SEED = _number(int, 0, 2**32 - 1)
THREADS = _number(int, 1, 4096)
FINITE = _number(float)
POSITIVE = _number(float, 0, lo_open=True)
NONNEGATIVE = _number(float, 0)
BELOW_ONE = _number(float, 0, 1, hi_open=True)  # [0, 1): a rate that must leave room
SHARE = _number(float, 0, 1, lo_open=True)  # (0, 1]
UNIT = _number(float, 0, 1)  # [0, 1]
LEARNING_RATE = _number(float, 0, 100, lo_open=True)  # (0, 100]: beyond, weights overflow in one step
RANGE_TYPES = {"count": COUNT, "positive_int": POSITIVE_INT, "seed": SEED, "nonnegative": NONNEGATIVE,
               "below_one": BELOW_ONE, "share": SHARE, "learning_rate": LEARNING_RATE}  # repair_config.RANGES


def _out_dir(out: Path) -> Path:
    """Create the output folder ``out``, or say in one line why it cannot be."""
    if out.exists() and not out.is_dir():
        raise DeepRepairError(f"--out {out} is a file, not a folder: choose a folder (it is created)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeepRepairError(f"cannot create the output folder {out} ({exc.strerror or exc}); choose "
                              "another --out in a writable place") from None
    return out


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
    out = getattr(args, "out", None)
    if out and Path(out).resolve() == Path(root).resolve():
        raise DeepRepairError(f"--out {out} is the input data folder: choose a separate output folder")
    ds = load_dataset(root, split=split)
    if args.limit and args.limit < len(ds):  # a seeded random subset: datasets are often sorted by class
        ds = ds.subset(np.sort(np.random.default_rng(0).choice(len(ds), args.limit, replace=False)))
    return root, ds


def _names(arg: list[str] | None, heldout: bool) -> list[str]:
    from .corruptions import ALL_CORRUPTIONS, CORRUPTIONS, get_corruption

    if not arg:
        return list(ALL_CORRUPTIONS if heldout else CORRUPTIONS)
    names = [n for a in arg for n in a.split(",") if n]
    if not names:
        raise DeepRepairError("--corruptions names no corruption; give names such as fog contrast (see "
                              "`deeprepair corruptions`), or leave it out for the 15 of the paper")
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


def _default_model() -> Path:
    """The committed CPU-profile checkpoint the demo repairs (repository ``checkpoints/``)."""
    return Path(__file__).resolve().parents[2] / "checkpoints" / "resnet-20.safetensors"


def cmd_demo(args: argparse.Namespace) -> int:
    """End to end: corrupt the test set, mine the model's failures, repair it, compare (``demo.py``)."""
    from .corruptions import get_corruption
    from .demo import run_demo

    get_corruption(args.corruption)  # an unknown name is a one-line error before any work starts
    out = Path(args.out)
    data_note, train, test = _demo_data(args, out)
    if args.model is None:
        args.model = str(_default_model())
        if not Path(args.model).is_file():
            raise DeepRepairError(f"no model given and the bundled {args.model} is missing: train one "
                                  "with `deeprepair train --arch resnet-20 --out M.safetensors` and pass --model M.safetensors")
    model, meta, device = _open_model(args, test.classes)
    _check_images(test, meta, "test")
    _out_dir(out)
    res = run_demo(model, train, test, out, corruption=args.corruption, collect=args.collect, methods=tuple(args.methods),
                   epochs=args.epochs, train_subset=args.train_subset, seed=args.seed, precision=args.precision,
                   device=device, progress=lambda total, desc: _progress(total, args.quiet, desc),
                   say=lambda line: _say(args, line), about={"model": args.model, "data": data_note})
    _emit(args, {"out": str(out), "seconds": res["seconds"], "results": res["results"]},
          [res["table"], f"one seed, one corruption: a demonstration, not a benchmark (see benchmarks/). "
                         f"Wrote {out}/demo.md and demo.json in {res['seconds']:.0f} s"])
    return 0


def _say(args: argparse.Namespace, line: str) -> None:
    """A note for people (stderr), silent with --quiet."""
    if not args.quiet:
        print(line, file=sys.stderr, flush=True)


def _demo_data(args: argparse.Namespace, out: Path):
    """The demo's (description, train, test): --data / $DEEPREPAIR_DATA; else CIFAR-10 downloaded
    to the user cache; else, offline, scikit-learn's bundled digits with a tiny model trained here."""
    from .data import download_cifar10
    from .demo import digits_fallback
    from .engine import pick_device

    if args.data or os.environ.get("DEEPREPAIR_DATA", "").strip():
        root, train = _load(args, "train")
        return str(root), train, _load(args, "test")[1]
    reason = "--offline"
    if not args.offline:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "deeprepair"
        _say(args, f"demo: no --data given; fetching CIFAR-10 into {cache} (once)")
        try:
            args.data = str(download_cifar10(cache))
            root, train = _load(args, "train")
            return f"CIFAR-10 downloaded to {root}", train, _load(args, "test")[1]
        except DeepRepairError as exc:
            reason = f"CIFAR-10 could not be downloaded ({str(exc)[:120]})"
    _say(args, f"demo: no dataset and {reason}: using scikit-learn's bundled handwritten digits and a tiny "
               "ResNet-20 trained on them here")
    train, test, ckpt = digits_fallback(out, args.seed, pick_device(args.device),
                                        lambda total, desc: _progress(total, args.quiet, desc),
                                        train_model=args.model is None)
    if ckpt is not None:
        args.model = str(ckpt)
    note = (f"no dataset and {reason}: using scikit-learn's bundled handwritten digits ({len(train):,} train / "
            f"{len(test):,} test, 8x8 upsampled to 32x32) and a tiny ResNet-20 trained on them here")
    return note, train, test


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=p.prog.split()[-1] != "demo", help="checkpoint (.safetensors from `deeprepair train`), "
                   "TorchScript file, or your weights with --factory")  # fmt: skip
    p.add_argument("--factory", help="your model as package.module:function (called with num_classes=)")
    p.add_argument("--num-classes", type=POSITIVE_INT, help="output width of your model (with --factory)")
    p.add_argument("--mean", type=FINITE, nargs=3, help="input normalisation mean your model expects")
    p.add_argument("--std", type=POSITIVE, nargs=3, help="input normalisation std your model expects")
    p.add_argument("--allow-pickle", action="store_true", help="allow a .pt/.pth file that is not a "
                   "plain state dict (runs code from the file: only for files you trust)")  # fmt: skip
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: a GPU when present)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="auto = bf16 where the hardware runs it fast (AMX CPUs, GPUs), else fp32")


def _open_model(args: argparse.Namespace, classes: list[str] | None = None):
    from .engine import pick_device
    from .models.checkpoint import load_model
    from .repair import gate as _gate  # noqa: F401  registers the routed-repair ("gate") checkpoint kind

    device = pick_device(args.device)
    model, meta = load_model(args.model, factory=args.factory, num_classes=args.num_classes,
                             mean=args.mean, std=args.std, allow_pickle=args.allow_pickle,
                             device=device)  # fmt: skip
    if classes is not None and meta["num_classes"] != len(classes):
        raise DeepRepairError(f"the model has {meta['num_classes']} outputs but the data has "
                              f"{len(classes)} classes: use the model trained on this data")
    named = [str(c) for c in meta.get("classes") or []]
    unnamed = [str(i) for i in range(len(named))]  # data without class names (no classes.txt) says nothing
    if classes is not None and named and named != list(classes) and unnamed not in (named, list(classes)):
        diff = next(i for i, (a, b) in enumerate(zip(named, classes)) if a != b)
        raise DeepRepairError(f"the model's class {diff} is {named[diff]!r} but the data's is {classes[diff]!r}: its "
                              "outputs would be read as other classes; use the data it was trained on (the same class "
                              "folders, or a classes.txt listing its classes in order)")
    return model, meta, device


def _check_images(ds, meta: dict, what: str) -> None:
    want = meta.get("input_size")
    if want and list(ds.x.shape[1:]) != list(want):
        raise DeepRepairError(f"{what} images are {tuple(ds.x.shape[1:])} (H, W, C) but the model "
                              f"expects {tuple(want)}: resize the images or use a matching model")


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from .engine import keep_heap, pick_device
    from .models import Classifier, count_parameters, create_model
    from .models.checkpoint import save_checkpoint
    from .train import TrainConfig, fit, read_state

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise DeepRepairError(f"--out must end in .safetensors, got {out}")
    if out.exists() and not args.resume:
        raise DeepRepairError(f"{out} exists; choose another --out (existing checkpoints are never "
                              "overwritten)")
    state = out.with_suffix(".state.safetensors")
    if out.exists() and not state.exists():  # --resume of a run that finished: nothing to do
        _emit(args, {"checkpoint": str(out), "finished": True}, [f"{out} is a finished run: nothing to resume"])
        return 0
    if state.exists() and not args.resume:
        raise DeepRepairError(f"an interrupted run left {state}: add --resume to continue it, or "
                              "delete it to start over")
    root, train = _load(args, "train")
    _, test = _load(args, "test")
    device = pick_device(args.device)
    keep_heap()
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      schedule=args.schedule, label_smoothing=args.label_smoothing,
                      precision=args.precision, weight_decay=args.weight_decay,
                      channels_last=not args.no_channels_last, compile=args.compile)  # fmt: skip
    torch.manual_seed(args.seed)
    model = Classifier(create_model(args.arch, train.num_classes))
    n_params = count_parameters(model)
    from .distributed import is_main

    bar = _progress(len(train) * args.epochs, args.quiet or not is_main(), f"train {args.arch}")

    def on_epoch(row: dict) -> None:
        bar.set_postfix(epoch=row["epoch"], loss=f"{row['train_loss']:.3f}",
                        test=f"{row['test_acc']:.4f}")

    if state.exists():  # fit resumes after the finished epochs: start the bar there
        bar.update(len(train) * read_state(state).get("epochs_done", 0))
    t0 = time.perf_counter()
    with bar:
        result = fit(model, train.x, train.y, cfg, device=device, eval_x=test.x, eval_y=test.y,
                     state_path=state, progress=lambda n, epoch: bar.update(n), on_epoch=on_epoch)
    if not is_main():  # under torchrun: rank 0 writes the checkpoint and reports
        return 0
    import hashlib

    data_sha = hashlib.sha256(train.x.tobytes() + train.y.astype("<i8").tobytes()).hexdigest()
    acc = result.history[-1]["test_acc"]
    cmd = (f"deeprepair train --arch {args.arch} --data {args.data or '$DEEPREPAIR_DATA'} --out {out} "
           f"--epochs {args.epochs} --seed {args.seed}")
    for flag, val, default in (("--batch-size", args.batch_size, 128), ("--lr", args.lr, 0.1),
                               ("--schedule", args.schedule, "cosine"),
                               ("--label-smoothing", args.label_smoothing, 0.0),
                               ("--weight-decay", args.weight_decay, 5e-4),
                               ("--precision", args.precision, "auto")):  # fmt: skip
        if val != default:
            cmd += f" {flag} {val}"
    cmd += " --no-channels-last" * args.no_channels_last + " --compile" * args.compile
    from dataclasses import asdict

    meta = {"arch": args.arch, "num_classes": train.num_classes, "classes": train.classes,
            "input_size": list(train.x.shape[1:]), "mean": [0.5] * 3, "std": [0.5] * 3,
            "train_command": cmd, "train_config": asdict(cfg), "precision": result.precision,
            "data_sha256": data_sha, "train_images": len(train), "seed": args.seed,
            "clean_accuracy": acc, "parameters": n_params, "history": result.history,
            "train_seconds": round(result.seconds, 1), "device": str(device)}  # fmt: skip
    if not out.exists():
        save_checkpoint(model.cpu(), out, meta)
    state.unlink(missing_ok=True)
    secs = time.perf_counter() - t0
    _emit(args, {"checkpoint": str(out), "clean_accuracy": acc, "train_seconds": result.seconds,
                 "epochs": args.epochs, "precision": result.precision},
          [f"{args.arch}: clean test accuracy {acc:.2%} after {args.epochs} epochs "
           f"({result.seconds / 60:.1f} min of training, {result.precision}); wrote {out} and "
           f"{out.with_suffix('.json')} ({secs:.0f} s this run)"])  # fmt: skip
    return 0


def _source(args: argparse.Namespace, test):
    from .evaluate import CorruptedSource

    folder = Path(args.corrupted) if args.corrupted else None
    if folder is not None and not folder.is_dir():
        raise DeepRepairError(f"--corrupted {folder} is not a folder: give the output of "
                              "`deeprepair corrupt` (or CIFAR-10-C), or leave it out to render on the fly")
    return CorruptedSource(test.x, test.y, folder, seed=args.corruption_seed)


def _eval_names(args: argparse.Namespace, source) -> list[str]:
    from .corruptions import ALL_CORRUPTIONS, CORRUPTIONS

    if args.corruptions:
        return _names(args.corruptions, heldout=False)
    if source.folder is not None:
        return source.names()
    return list(ALL_CORRUPTIONS if args.heldout else CORRUPTIONS)


def _model_on_test(args: argparse.Namespace):
    """The test split, the model checked against it, and the corrupted images to run it on."""
    root, test = _load(args, "test")
    model, meta, device = _open_model(args, test.classes)
    _check_images(test, meta, "test")
    source = _source(args, test)
    return root, test, model, meta, device, source, _eval_names(args, source)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_model, severity_table, write_report

    root, test, model, meta, device, source, names = _model_on_test(args)
    label = args.name or Path(args.model).stem
    if args.name is not None and (not args.name.strip() or any(c in args.name for c in "/\\") or args.name.startswith(".")):
        raise DeepRepairError(f"--name {args.name!r} is a label, not a path: use letters, digits, '-' or '_' "
                              "(give the folder with --out)")
    out = Path(args.out or Path("runs") / "evaluate" / label)
    if (out / "rq1.json").exists() and not args.force:
        raise DeepRepairError(f"{out} holds a report (rq1.json); choose another --out or pass --force to replace it")
    _out_dir(out)
    t0 = time.perf_counter()
    with _progress(len(test) * (1 + 5 * len(names)), args.quiet, f"evaluate {label}") as bar:
        res = evaluate_model(model, source, names, device=device, precision=args.precision,
                             progress=bar.update)
    secs = time.perf_counter() - t0
    res["img_per_s"] = len(test) * (1 + 5 * len(names)) / secs
    res["seconds"] = secs
    res["model"] = {"path": str(args.model), "arch": meta["arch"]}
    res["precision"] = args.precision
    paths = write_report({label: res}, out, extra={"data": str(root), "command": " ".join(sys.argv)})
    lines = [f"{label}: clean {res['clean']:.2%}"
             + (f", mean over {res['main_corruptions']} corruptions {res['mean_corrupted']:.2%}" if res["mean_corrupted"] is not None else ""),
             severity_table(res),
             f"{res['img_per_s']:,.0f} img/s including rendering ({secs:.0f} s); wrote "
             + ", ".join(str(p) for p in paths)]  # fmt: skip
    _emit(args, res, lines)
    return 0


def _mine_real(args: argparse.Namespace) -> int:
    """`mine --real`: failures of the model on real labelled field photos (no corruption)."""
    from .data import load_failure_set
    from .data.io import atomic_write_bytes
    from .engine import predict
    from .mining import split_real

    model, meta, device = _open_model(args)
    classes = list(meta.get("classes") or [str(k) for k in range(meta["num_classes"])])
    photos = load_failure_set(args.real, classes)
    _check_images(photos, meta, "--real")
    out = _out_dir(Path(args.out))
    pred = predict(model, photos.x, device=device, precision=args.precision)
    r = split_real(pred, photos.y, args.collect, len(classes), args.seed, args.field_fraction)
    parts = {"dc": r["dc"], "unseen": r["unseen"]}
    if args.export_heldout:
        parts["de"] = r["de"]
    if args.field_fraction:
        parts.update(field=r["field"], eval=r["eval"])
    for part, idx in parts.items():
        buf = io.BytesIO()
        labels = {} if part == "field" else {"y": photos.y[idx]}  # field photos go to repair unlabelled
        np.savez(buf, x=photos.x[idx], index=idx, classes=np.array(classes), **labels)
        atomic_write_bytes(out / f"real.{part}.npz", buf.getvalue())
    acc = float((pred == photos.y).mean())
    info = {"model": str(args.model), "real": str(args.real), "photos": len(photos), "accuracy": acc,
            "failures": len(r["failures"]), "collected": len(r["dc"]), "seed": args.seed,
            "field_fraction": args.field_fraction, **{f"{p}_photos": len(i) for p, i in parts.items()}}
    atomic_write_bytes(out / "mining.json", json.dumps(info, indent=2).encode())
    lines = [f"{Path(args.model).name} gets {acc:.1%} of {len(photos):,} real photos right: {len(r['failures']):,} "
             f"failures, {len(r['dc']):,} collected -> {out}/real.dc.npz (repair --failures); the "
             f"{len(r['unseen']):,} other photos -> real.unseen.npz (repair --eval-shifted)"]
    if args.field_fraction:
        lines.append(f"split seeded into {len(r['field']):,} unlabelled field photos (real.field.npz: repair --field) "
                     f"and {len(r['eval']):,} evaluation photos (real.eval.npz: repair --eval-shifted)")
    _emit(args, {"out": str(out), **info}, lines)
    return 0


def cmd_mine(args: argparse.Namespace) -> int:
    if args.real:
        return _mine_real(args)
    from .data import sha256_file
    from .evaluate import iter_predictions
    from .mining import FailureSplit, export_collected, find_failures, write_mining

    root, test, model, meta, device, source, names = _model_on_test(args)
    y = source.labels()
    out = Path(args.out)
    if out.resolve() == Path(root).resolve() or (source.folder and out.resolve() == source.folder.resolve()):
        raise DeepRepairError(f"--out {out} is an input folder: choose a separate output folder")
    import hashlib

    data_sha = hashlib.sha256(np.ascontiguousarray(test.x).tobytes() + test.y.astype("<i8").tobytes()).hexdigest()
    info = {"model": str(args.model), "model_sha256": sha256_file(args.model), "collect": args.collect,
            "split_by": args.split_by,
            "seed": args.seed, "precision": args.precision, "source": source.describe(),
            "data": str(root), "data_sha256": data_sha, "classes": test.classes, "corruptions": names}  # fmt: skip
    old = out / "mining.json"
    if old.is_file():
        try:
            prev = json.loads(old.read_text())
        except (OSError, ValueError) as exc:
            raise DeepRepairError(f"{old} is unreadable ({exc}); choose a new --out") from None
        if not isinstance(prev, dict):
            raise DeepRepairError(f"{old} is not a mining record; choose a new --out")
        for key in ("model_sha256", "collect", "seed", "source", "data_sha256", "split_by"):
            if prev.get(key) != info[key] and (key in prev or key != "data_sha256"):
                what = {"model_sha256": "model", "data_sha256": "test set"}.get(key)
                raise DeepRepairError(f"{out} holds failures mined with another {what or key}"
                                      f"{'' if what else f' ({prev.get(key)!r})'}; choose a new --out")
    _out_dir(out)
    splits, t0 = {}, time.perf_counter()
    with _progress(len(test) * 5 * len(names), args.quiet, "mine") as bar:
        for name in names:
            if (out / f"{name}.split.npz").is_file() and (out / f"{name}.dc.npz").is_file():
                splits[name] = FailureSplit.load(out, name)
                bar.update(len(test) * 5)
                continue
            preds, stack = [], []
            for _, s, imgs, pred in iter_predictions(model, source, [name], device=device,
                                                     precision=args.precision, progress=bar.update):
                preds.append(pred)
                stack.append(imgs)
            split = find_failures(name, preds, y, args.collect, test.num_classes, args.seed, args.split_by)
            stack = np.concatenate(stack)
            if args.export_heldout:
                export_collected(split, stack, test.classes, out / f"{name}.de.npz", part="de")
            export_collected(split, stack, test.classes, out / f"{name}.dc.npz")
            split.save(out)
            splits[name] = split
            write_mining(out, splits, info, args.collect)
    write_mining(out, splits, info, args.collect)
    short = [n for n, s in splits.items() if len(s.dc) < args.collect]
    res = {n: {"failures": len(s.index), "collected": len(s.dc), "held_out": len(s.de),
              "dropped": len(s.index) - len(s.dc) - len(s.de)}
           for n, s in splits.items()}
    lines = [(out / "table1.md").read_text(),
             f"wrote {out}/<corruption>.dc.npz (collected failures: x, y, severity) and "
             f"<corruption>.split.npz (Dc/De indices) in {time.perf_counter() - t0:.0f} s"]
    if short:
        lines.append(f"fewer than {args.collect} failures to collect for: {', '.join(short)} "
                     "(all of them are in Dc; De is what is left)")
    _emit(args, {"out": str(out), "table1": res, "short": short}, lines)
    return 0


def resolve_repair_options(args: argparse.Namespace, n_train: int) -> None:
    """Fill every repair flag left unset from the chosen preset (``--preset``, ``--safe`` =
    ``--preset safe``; ``repair/core.py: PRESETS``), else from RepairConfig's defaults: one place
    for each default.

    A preset's training subset may be a share of the training set (safe: 0.8, 40,000 of CIFAR-10's
    50,000, as measured), so that validation and the gate's calibration images stay out of fine-tuning.
    """
    from dataclasses import fields

    if args.safe:
        if args.preset not in (None, "safe"):
            raise DeepRepairError(f"--safe is --preset safe: drop one of --safe and --preset {args.preset}")
        args.preset = "safe"
    if args.preset == "safe" and args.method in ("bn-adapt", "tent"):
        raise DeepRepairError(f"--safe fine-tunes behind a gate, which {args.method} (label-free, on the failure "
                              "images only) does not: drop --safe or choose a fine-tuning --method")
    base = RepairConfig.preset(args.preset) if args.preset else RepairConfig()
    for f in fields(RepairConfig):
        if getattr(args, f.name, False) is None:
            value = getattr(base, f.name)
            if f.name == "train_subset" and isinstance(value, float):
                value = int(value * n_train)
            setattr(args, f.name, value)


def repair_config(args: argparse.Namespace, style_options: dict):
    """The RepairConfig of the parsed (and resolved) repair flags."""
    from dataclasses import fields

    return RepairConfig(**{f.name: getattr(args, f.name) for f in fields(RepairConfig) if hasattr(args, f.name)},
                        style_options=style_options)


def cmd_repair(args: argparse.Namespace) -> int:
    import torch

    from .data import load_failure_set, sha256_file
    from .models.checkpoint import save_checkpoint
    from .repair import RepairConfig, compare, repair, repair_report_markdown

    out = Path(args.out)
    ckpt = out / "model.safetensors"
    if ckpt.exists() and not args.force:
        raise DeepRepairError(f"{ckpt} exists; choose another --out or pass --force to replace it")
    root, train = _load(args, "train")
    _, test = _load(args, "test")
    if test.classes != train.classes:
        raise DeepRepairError(f"the test split's classes ({', '.join(test.classes[:5])}, ...) are not the training "
                              f"split's ({', '.join(train.classes[:5])}, ...): give both splits the same class folders")
    model, meta, device = _open_model(args, train.classes)
    _check_images(train, meta, "training")
    resolve_repair_options(args, len(train))
    failures = load_failure_set(args.failures, train.classes)
    _check_images(failures, meta, "failure")
    heldout = load_failure_set(args.eval_failures, train.classes) if args.eval_failures else None
    if heldout is not None:
        _check_images(heldout, meta, "held-out failure")
    if args.gate_holdout and not args.gate:
        raise DeepRepairError("--gate-holdout sets the --gate threshold: add --gate, or drop --gate-holdout")
    if args.gate_keep is not None and not args.gate:
        raise DeepRepairError("--gate-keep sets the --gate threshold: add --gate, or drop --gate-keep")
    clean_heldout = None
    if args.gate_holdout:
        try:  # the same format as the failures: .npz (x, y) or class folders
            clean_heldout = load_failure_set(args.gate_holdout, train.classes)
        except DeepRepairError as e:
            raise DeepRepairError(f"--gate-holdout: {e}".replace("failure images", "images")) from None
        _check_images(clean_heldout, meta, "--gate-holdout")
    if args.gate and str(meta.get("arch", "")).startswith(("factory:", "torchscript:")):
        raise DeepRepairError(f"--gate{' (on with --safe)' if args.safe else ''} saves the original and the "
                              "repaired network together, which only a deeprepair checkpoint can hold; use "
                              "--interpolate for your own module")
    field = shifted = None
    if args.field:
        from .data import load_unlabelled

        field = load_unlabelled(args.field)
        if field.shape[1:] != train.x.shape[1:]:
            raise DeepRepairError(f"--field images are {field.shape[1:]} but the training images are "
                                  f"{train.x.shape[1:]} (H, W, C): resize them to the model's input size")
    if args.eval_shifted:
        shifted = load_failure_set(args.eval_shifted, train.classes)
        _check_images(shifted, meta, "--eval-shifted")
    style_opts = _style_options(args.style, args.style_mode, args.style_checkpoint)
    cfg = repair_config(args, style_opts)
    _out_dir(out)
    state = out / "repair.state.safetensors"
    from .train import data_fingerprint

    run_file = _resume_guard(state, {  # what this run is made from: a state of another run is refused
        "model": sha256_file(args.model), "training set": data_fingerprint(train.x, train.y),
        "failure set": data_fingerprint(failures.x, failures.y),
        "--gate-holdout": data_fingerprint(clean_heldout.x, clean_heldout.y) if clean_heldout else None,
        "--field": data_fingerprint(field, np.zeros(len(field), np.int64)) if field is not None else None})
    torch.manual_seed(args.seed)
    n_ft = min(len(train) - min(1000, len(train) // 10), args.train_subset or len(train)) + len(failures) * args.dc_repeat
    from .distributed import is_main

    with _forget_on_failure(run_file, state), _progress(n_ft * args.epochs, args.quiet or not is_main(), f"repair ({args.method})") as bar:
        repaired, report = repair(model, train, failures, cfg, device=device, state_path=state,
                                  progress=bar.update, clean_heldout=clean_heldout, field=field)
    if not is_main():  # under torchrun: rank 0 evaluates and writes the checkpoint and reports
        return 0
    groups = None
    if heldout is not None and args.eval_failures.endswith(".npz"):
        with np.load(args.eval_failures) as f:
            if "severity" in f.files:
                sev = f["severity"]
                groups = {f"severity {s}": sev == s for s in sorted(set(sev.tolist()))}
    cmp = compare(model, repaired, test, failures=failures, heldout=heldout, heldout_groups=groups,
                  shifted=shifted, dc_sources=_dc_sources(args.failures, len(test)), device=device,
                  precision=args.precision)
    rmeta = {**{k: v for k, v in meta.items() if k in ("arch", "num_classes", "classes", "mean", "std",
                                                      "input_size")},
             "parent": str(args.model), "parent_sha256": sha256_file(args.model),
             "failures": str(args.failures), "failures_sha256": sha256_file(args.failures)
             if Path(args.failures).is_file() else None, "repair_config": report["config"],
             "clean_accuracy": cmp["clean_after"], "repair_command": " ".join(sys.argv),
             "gate": report.get("gate"), "gate_holdout": str(args.gate_holdout) if args.gate_holdout else None}  # fmt: skip
    if str(meta.get("arch", "")).startswith(("factory:", "torchscript:")):
        torch.save(repaired.state_dict(), out / "model_state.pt")  # users' own module: plain state dict
    else:
        save_checkpoint(repaired.cpu(), ckpt, rmeta)
    full = {"compare": cmp, "repair": report, "metadata": rmeta}
    from .data.io import atomic_write_bytes

    atomic_write_bytes(out / "report.json", json.dumps(full, indent=2).encode())
    md = repair_report_markdown(Path(args.failures).name, cmp, report)
    atomic_write_bytes(out / "report.md", md.encode())
    state.unlink(missing_ok=True)
    run_file.unlink(missing_ok=True)
    _emit(args, full, [md, f"wrote {out}/model.safetensors, report.json and report.md"])
    return 0


def _dc_sources(failures: str, n_test: int) -> np.ndarray | None:
    """The test images a failure set written by `deeprepair mine` was rendered from (its ``index``
    into the 5-severity stack), so that clean accuracy is also read on the test images it never saw."""
    if not str(failures).endswith(".npz"):
        return None
    with np.load(failures, allow_pickle=False) as f:
        if "index" not in f.files or f["index"].ndim != 1 or not len(f["index"]):
            return None
        index = f["index"].astype(np.int64)
    if index.min() < 0 or index.max() >= 5 * n_test:
        return None
    return np.unique(index % n_test)


def _resume_guard(state: Path, run_id: dict) -> Path:
    """Record what a resumable run is made from beside its ``state`` file (before the first state is
    saved), and refuse to resume a state that was made from anything else. Returns the record's path."""
    from .data.io import atomic_write_bytes

    record = state.with_name(state.name.replace(".safetensors", "") + ".run.json")
    if state.exists():
        try:
            saved = json.loads(record.read_text())
        except (OSError, ValueError):
            saved = None
        if not isinstance(saved, dict):
            raise DeepRepairError(f"{state} has no readable record of the run that made it ({record.name}); "
                                  "delete it to start over")
        for key, value in run_id.items():
            if saved.get(key) != value:
                raise DeepRepairError(f"{state} belongs to a run with another {key}; rerun with the same inputs, "
                                      "choose another --out, or delete it to start over")
    else:
        atomic_write_bytes(record, json.dumps(run_id, indent=2).encode())
    return record


@contextlib.contextmanager
def _forget_on_failure(record: Path, state: Path):
    """Remove the run ``record`` of ``_resume_guard`` when the run fails before saving any state
    (bad input found inside it): nothing is left behind for a run that never started."""
    try:
        yield
    except BaseException:
        if not state.exists():
            record.unlink(missing_ok=True)
        raise


def _style_options(backend: str, mode: str | None, checkpoint: str | None) -> dict:
    """Backend options from the flags; adain needs the decoder made by `train-style`."""
    if backend == "adain":
        if not checkpoint:
            raise DeepRepairError("the adain style backend needs --style-checkpoint (make one with "
                                  "`deeprepair train-style`)")
        if mode and mode not in ("adain", "wct"):
            raise DeepRepairError(f"adain's mode is adain or wct, not {mode!r}")
        return {"checkpoint": checkpoint, **({"mode": mode} if mode else {})}
    if checkpoint:
        raise DeepRepairError(f"a style checkpoint is for the adain backend, not {backend}")
    if mode and backend != "wavelet":
        raise DeepRepairError(f"a matching mode is for the wavelet or adain backends, not {backend}")
    if mode in ("adain",):
        raise DeepRepairError("mode adain is for the adain backend; the wavelet modes are hist, meanstd, wct")
    return {"mode": mode} if mode else {}


def cmd_train_style(args: argparse.Namespace) -> int:
    import torch

    from .engine import keep_heap, pick_device
    from .style.adain import FeatureEncoder, save_style_checkpoint, train_decoder

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise DeepRepairError(f"--out must end in .safetensors, got {out}")
    if out.exists():
        raise DeepRepairError(f"{out} exists; choose another --out (existing files are never overwritten)")
    state = out.with_suffix(".state.safetensors")
    if state.exists() and not args.resume:
        raise DeepRepairError(f"an interrupted run left {state}: add --resume to continue it, or delete it "
                              "to start over")
    root, train = _load(args, "train")
    model, meta, device = _open_model(args, train.classes)
    _check_images(train, meta, "train")
    keep_heap()
    from .data import sha256_file
    from .train import data_fingerprint

    encoder = FeatureEncoder(model.cpu(), args.layer, size=train.x.shape[1], channels=train.x.shape[3])
    run_file = _resume_guard(state, {"model": sha256_file(args.model), "training set": data_fingerprint(train.x, train.y),
                                     "--layer": args.layer})
    bar = _progress(len(train) * args.epochs, args.quiet, f"train-style ({encoder.layer})")
    if state.exists():
        from .train import read_state

        bar.update(len(train) * read_state(state).get("epochs_done", 0))
    with _forget_on_failure(run_file, state), bar:
        decoder, history = train_decoder(
            encoder, train.x, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
            feature_weight=args.feature_weight, width=args.width, seed=args.seed, device=device,
            precision=args.precision, state_path=state, progress=lambda n, e: bar.update(n),
            on_epoch=lambda r: bar.set_postfix(epoch=r["epoch"], psnr=f"{r['psnr']:.1f}"))
    cmd = (f"deeprepair train-style --data {args.data or '$DEEPREPAIR_DATA'} --model {args.model} "
           f"--out {out} --epochs {args.epochs} --seed {args.seed}")
    enc = {"checkpoint": str(args.model)}
    if not args.factory and meta.get("arch"):
        enc.update({k: meta[k] for k in ("arch", "num_classes", "mean", "std") if k in meta})
    smeta = {"encoder": enc, "train_command": cmd, "history": history, "train_images": len(train),
             "train_seconds": round(sum(r["seconds"] for r in history), 1), "torch_version": torch.__version__}
    save_style_checkpoint(out, encoder, decoder.cpu(), smeta)
    state.unlink(missing_ok=True)
    run_file.unlink(missing_ok=True)
    last = history[-1]
    _emit(args, {"checkpoint": str(out), "layer": encoder.layer, "psnr": last["psnr"],
                 "train_seconds": smeta["train_seconds"]},
          [f"decoder for {args.model} at layer {encoder.layer!r}: reconstruction PSNR {last['psnr']:.1f} dB "
           f"after {args.epochs} epochs ({smeta['train_seconds'] / 60:.1f} min); wrote {out}"])
    return 0


def cmd_style(args: argparse.Namespace) -> int:
    from .style import create_style
    from .style.figure import grid_figure, load_images, render, strip_figure

    if args.figure:
        from .corruptions import corrupt

        _, test = _load(args, "test")
        rng = np.random.default_rng(args.seed)
        pick = rng.choice(len(test), 4, replace=False)
        content, ref_src = test.x[pick[:3]], test.x[pick[3:]]
        names = ["gaussian_noise", "defocus_blur", "motion_blur", "fog", "contrast", "brightness",
                 "jpeg_compression", "pixelate", "snow", "frost"]
        refs = {n: corrupt(ref_src, n, 5, seed=args.seed) for n in names}
        backends = {"wavelet": create_style("wavelet"), "fourier": create_style("fourier")}
        if args.checkpoint:
            backends["adain"] = create_style("adain", **_style_options("adain", None, args.checkpoint))
        path = grid_figure(content, refs, backends, args.figure)
        _emit(args, {"figure": str(path)}, [f"wrote {path}"])
        return 0
    if not (args.content and args.style and args.out):
        raise DeepRepairError("give --content, --style and --out (or --figure PNG with --data)")
    if Path(args.out).exists() and not args.force:
        raise DeepRepairError(f"{args.out} exists; choose another --out or pass --force to replace it")
    st = create_style(args.backend, **_style_options(args.backend, args.mode, args.checkpoint))
    content = load_images(args.content, args.index)
    style = load_images(args.style, args.style_index)
    if len(style) not in (1, len(content)):
        style = style[:1]
    out = render(content, style, st, alpha=args.alpha)
    path = strip_figure(content, style, out, args.out)
    _emit(args, {"out": str(path), "images": len(content)}, [f"wrote {path} ({len(content)} rows: content | style | output)"])
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import list_cells, load_profile, restrict, run, write_report
    from .data import resolve_data_dir

    full = load_profile(args.profile)
    prof = restrict(full, args.archs, args.corruptions, args.methods)
    root = resolve_data_dir(args.data)
    out = Path(args.out)
    if out.resolve() == Path(root).resolve():
        raise DeepRepairError(f"--out {out} is the input data folder: choose a separate output folder")
    old = out / "profile.json"
    from .bench.report import read_json_object

    if old.is_file() and read_json_object(old, "benchmark profile record").get("name") != prof["name"]:
        raise DeepRepairError(f"{out} holds a run of another profile; choose a new --out")
    _bench_data_guard(out, Path(root))
    t0 = time.perf_counter()
    log = (lambda msg: None) if args.quiet or args.json else (lambda msg: print(msg, flush=True))
    with _progress(len(list_cells(prof)), True, "bench") as bar:
        results = run(prof, str(root), out, executor=args.executor, address=args.address, device=args.device,
                      log=log, progress=bar.update, record=full)
    md, page = write_report(out, provenance={"command": " ".join(sys.argv), "data": str(root),
                                             "seconds": round(time.perf_counter() - t0, 1)})
    _emit(args, {"out": str(out), "cells": len(results), "report": str(md)},
          [f"{len(results)} cells in {out}/cells; report: {md} and {page}"])
    return 0


def _bench_data_guard(out: Path, root: Path) -> None:
    """A benchmark folder keeps its models, failures and cells: refuse to add to one made from other
    data (recorded in ``OUT/data.json``: the sha256 of every file of --data)."""
    import hashlib

    from .data import sha256_file
    from .data.io import atomic_write_bytes

    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(f"{p.relative_to(root)}\0{sha256_file(p)}\n".encode())
    record, now = out / "data.json", {"data": str(root), "sha256": h.hexdigest()}
    if record.is_file():
        from .bench.report import read_json_object

        if read_json_object(record, "record of the benchmark's data").get("sha256") != now["sha256"]:
            raise DeepRepairError(f"{out} holds a benchmark run on other data than {root}; choose a new --out")
    else:
        atomic_write_bytes(record, json.dumps(now, indent=2).encode())


def cmd_report(args: argparse.Namespace) -> int:
    from .bench import write_report

    out = Path(args.dir)
    if not (out / "cells").is_dir() or not (out / "profile.json").is_file():
        raise DeepRepairError(f"{out} is not a benchmark folder (no cells/ or profile.json): run `deeprepair bench` first")
    md, page = write_report(out)
    _emit(args, {"markdown": str(md), "html": str(page)}, [f"wrote {md} and {page}"])
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .models import count_parameters, create_model, list_models, model_info

    info = {n: {**model_info(n), "parameters": count_parameters(create_model(n))} for n in list_models()}
    lines = [f"{n:20s} {v['profile']:5s} {v['parameters'] / 1e6:5.2f}M  {v['note']}" for n, v in info.items()]
    _emit(args, info, lines)
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
        p.add_argument("--limit", type=COUNT, default=0, help="use a fixed random subset of N images of each split (0 = all)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summaries")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def _config_flags(p: argparse.ArgumentParser) -> None:
    """A flag for each field of RepairConfig that declares one (``repair_config.flag``): its help,
    choices and range from there, its default left None so that ``resolve_repair_options`` fills it
    from the preset or RepairConfig."""
    from dataclasses import fields

    for f in fields(RepairConfig):
        if "help" not in f.metadata:
            continue
        meta, shown = f.metadata, f.default is not None and not isinstance(f.default, bool)
        kw = {"help": (meta["help"] + (f" (default: {f.default})" if shown else "")).replace("%", "%%")}
        if isinstance(f.default, bool):
            kw["action"] = "store_true"
        else:
            kw.update(type=RANGE_TYPES[meta["range"]] if meta["range"] else None, metavar=meta["metavar"],
                      choices=list(meta["choices"]) if meta["choices"] else None)
        p.add_argument("--" + f.name.replace("_", "-"), default=None, **kw)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="deeprepair", description=__doc__.split(":")[0] + ".")
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
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--threads", type=THREADS, default=None, help="worker threads (default: all cores)")
    p.add_argument("--grid", metavar="PNG", help="instead (or as well), save a grid figure of one "
                   "image under every corruption and severity")  # fmt: skip
    p.add_argument("--index", type=COUNT, default=0, help="which image the --grid figure shows")
    p.set_defaults(func=cmd_corrupt)

    p = sub.add_parser("demo", help="end-to-end demo: corrupt, mine failures, repair, compare",
                       description="Take the bundled CPU-profile model (or --model), corrupt the test set "
                       "with one corruption, split its failures into collected (Dc) and held-out (De), "
                       "repair with DeepRepair (and AugMix for comparison) and print before/after.")  # fmt: skip
    _common(p)
    _model_args(p)
    p.set_defaults(model=None)
    p.add_argument("--corruption", default="fog", help="which corruption the field brings (default: fog)")
    p.add_argument("--collect", type=POSITIVE_INT, default=500, help="failures collected (Dc)")
    p.add_argument("--methods", nargs="+", default=["deeprepair", "augmix"],
                   choices=REPAIR_METHODS)
    p.add_argument("--epochs", type=POSITIVE_INT, default=2)
    p.add_argument("--train-subset", type=COUNT, default=5000)
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--offline", action="store_true", help="with no --data: skip the CIFAR-10 download and "
                   "use scikit-learn's bundled digits")
    p.add_argument("--seed", type=SEED, default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a classifier from scratch (the deployed model to repair)",
                       description="Train a registered architecture on DATA's train split with the "
                       "standard recipe (pad-4 crop, flip, SGD Nesterov, cosine); a checkpoint of the "
                       "run is kept after every epoch, so --resume continues an interrupted run.")  # fmt: skip
    _common(p)
    p.add_argument("--arch", required=True, help="model name (see `deeprepair models`)")
    p.add_argument("--out", required=True, help="checkpoint to write (.safetensors; .json beside it)")
    p.add_argument("--epochs", type=POSITIVE_INT, default=30)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--batch-size", type=POSITIVE_INT, default=128)
    p.add_argument("--lr", type=LEARNING_RATE, default=0.1)
    p.add_argument("--weight-decay", type=NONNEGATIVE, default=5e-4)
    p.add_argument("--schedule", default="cosine", choices=["cosine", "onecycle"])
    p.add_argument("--label-smoothing", type=BELOW_ONE, default=0.0)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: a GPU when present)")
    p.add_argument("--no-channels-last", action="store_true", help="keep NCHW memory (faster for DenseNet's "
                   "concatenations)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (DenseNet: ~1.5x faster "
                   "on CPU after ~2 minutes of compiling)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run of --out")
    p.set_defaults(func=cmd_train)

    for name, helptext in (("evaluate", "accuracy on clean data and every corruption x severity (RQ1)"),
                           ("mine", "find a model's failures per corruption; split them into Dc and De")):
        p = sub.add_parser(name, help=helptext, description=helptext[0].upper() + helptext[1:] + ". "
                           "Corrupted images come from --corrupted (CIFAR-10-C layout) or are "
                           "rendered on the fly from the test split.")  # fmt: skip
        _common(p)
        _model_args(p)
        p.add_argument("--corrupted", help="CIFAR-10-C style folder (default: render on the fly)")
        p.add_argument("--corruption-seed", type=SEED, default=0, help="seed for on-the-fly rendering")
        p.add_argument("--corruptions", nargs="+", help="names (default: the 15 of the paper)")
        p.add_argument("--heldout", action="store_true", help="add the 4 held-out corruptions")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--collect", type=POSITIVE_INT, default=1000, help="failures per corruption to collect (Dc)")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the Dc/De split")
    p.add_argument("--real", metavar="DIR_OR_NPZ", help="mine real labelled field photos instead of corruptions "
                   "(class folders or .npz x, y): writes real.dc.npz (collected failures) and real.unseen.npz "
                   "(every other photo, for repair --eval-shifted)")
    p.add_argument("--field-fraction", type=BELOW_ONE, default=0.0, help="with --real: also split the other photos, "
                   "seeded, into this share of unlabelled field photos (real.field.npz, for repair --field) and "
                   "evaluation photos (real.eval.npz); default 0")
    p.add_argument("--split-by", default="image", choices=["image", "failure"], help="leak-free Dc/De split: "
                   "every severity of one photo on one side (image, the default), or each failure drawn "
                   "independently (failure: the paper's protocol, where De shares photos with Dc)")
    p.add_argument("--export-heldout", action="store_true", help="also write <corruption>.de.npz "
                   "(the held-out failures, for `repair --eval-failures`)")  # fmt: skip
    p.set_defaults(func=cmd_mine)
    evaluate_p = sub.choices["evaluate"]
    evaluate_p.add_argument("--out", help="report folder (default: runs/evaluate/<model name>)")
    evaluate_p.add_argument("--name", help="label of the model in reports (default: file name)")
    evaluate_p.add_argument("--force", action="store_true", help="replace a report already in --out")
    evaluate_p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("repair", help="repair a model from collected failures (DeepRepair, AugMix, fine-tune)",
                       description="Fine-tune a copy of --model on a subset of DATA's train split plus the "
                       "collected failures, with style-guided augmentation (Algorithm 1) and the JSD "
                       "loss; model selection on a validation split of train and failures only. "
                       "Resumes an interrupted run in the same --out.")  # fmt: skip
    _common(p)
    _model_args(p)
    p.add_argument("--failures", required=True, help="collected failures: .npz (x, y) or class folders")
    p.add_argument("--eval-failures", help="held-out failures (.npz) to measure the repair on")
    p.add_argument("--out", required=True, help="output folder (model.safetensors, report.json/.md)")
    p.add_argument("--style-mode", choices=["hist", "meanstd", "wct", "adain"],
                   help="matching mode: wavelet hist/meanstd/wct (default energy); adain adain/wct")
    p.add_argument("--style-checkpoint", help="adain backend: decoder from `deeprepair train-style`")
    p.add_argument("--preset", choices=list(PRESETS), help="a named recipe (repair_config.py: PRESETS; flags "
                   "given with it override its values): paper = the paper's method at the CPU budget; protect = "
                   "--distill 1 --distill-focus right --interpolate (one network); safe = --safe")
    p.add_argument("--safe", action="store_true", help="= --preset safe: the no-regressions recipe measured in "
                   "benchmarks/results/regressions.md section 11: --epochs 1, --train-subset 80%% of the "
                   "training images, --dc-repeat 4, --distill 1, --gate --gate-router mlp --gate-features "
                   "deep+style (flags given with it override its values)")
    p.add_argument("--field", metavar="DIR_OR_NPZ", help="unlabelled images from deployment (a folder of images or "
                   ".npz with x; never the images you evaluate on): the repair keeps the original's answers on "
                   "them (distillation, --field-weight) and BatchNorm sees them")
    p.add_argument("--eval-shifted", metavar="DIR_OR_NPZ", help="labelled images of the shifted distribution "
                   "the repair never saw (.npz x, y or class folders; all of them, right or wrong before): the "
                   "report gives accuracy, break and fix rate there")
    p.add_argument("--gate-holdout", metavar="PATH", help="with --gate: labelled clean images the original model "
                   "was not trained on (its validation split; never your test set), .npz (x, y) or class folders; "
                   "the threshold then also keeps clean accuracy on them >= the original's")
    _config_flags(p)
    p.add_argument("--force", action="store_true", help="replace an existing repaired model in --out")
    p.set_defaults(func=cmd_repair)

    p = sub.add_parser("style", help="render images in the style of a reference (to look at the style ops)",
                       description="Render --content in the degradation style of --style with a style "
                       "backend and save content | style | output rows as a PNG; --figure renders the "
                       "docs/style_transfer.png grid from the test set.")  # fmt: skip
    _common(p)
    p.add_argument("--content", help="image file or .npz with x")
    p.add_argument("--style", help="reference image file or .npz with x (one, or one per content image)")
    p.add_argument("--index", type=COUNT, nargs="+", help="which images of a content .npz (default: all)")
    p.add_argument("--style-index", type=COUNT, nargs="+", help="which images of a style .npz")
    p.add_argument("--out", help="PNG to write")
    p.add_argument("--backend", default="wavelet", choices=["wavelet", "fourier", "adain"])
    p.add_argument("--mode", choices=["hist", "meanstd", "wct", "adain"], help="matching mode (wavelet: "
                   "hist/meanstd/wct, default energy; adain: adain/wct)")
    p.add_argument("--checkpoint", help="adain backend: decoder from `deeprepair train-style` "
                   "(with --figure: adds an adain column)")
    p.add_argument("--alpha", type=UNIT, default=1.0, help="style strength in [0, 1]")
    p.add_argument("--figure", metavar="PNG", help="render the Fig. 1-style grid from --data instead")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.set_defaults(func=cmd_style)

    p = sub.add_parser("train-style", help="train the adain style backend's decoder for an encoder model",
                       description="Train a decoder that inverts the first layers of --model (the encoder; by default up "
                       "to its last full-resolution feature map) on DATA's train split, for the adain style "
                       "backend. Saved each epoch; --resume continues an interrupted run.")  # fmt: skip
    _common(p)
    _model_args(p)
    p.add_argument("--out", required=True, help="style checkpoint to write (.safetensors)")
    p.add_argument("--layer", help="encoder submodule to cut at (default: last full-resolution map)")
    p.add_argument("--epochs", type=POSITIVE_INT, default=4)
    p.add_argument("--batch-size", type=POSITIVE_INT, default=128)
    p.add_argument("--lr", type=LEARNING_RATE, default=2e-3)
    p.add_argument("--width", type=POSITIVE_INT, default=64, help="decoder channels")
    p.add_argument("--feature-weight", type=NONNEGATIVE, default=1.0, help="weight of the feature reconstruction loss")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--resume", action="store_true")
    p.set_defaults(func=cmd_train_style)

    p = sub.add_parser("bench", help="run a benchmark profile (RQ1-RQ4): models, failures, every repair cell",
                       description="Pre-train or load each model of the profile, mine its failures, run every "
                       "(arch, corruption, method, seed) repair cell and write the report. Finished cells are kept "
                       "in OUT/cells and skipped when rerun.")  # fmt: skip
    _common(p)
    p.add_argument("--profile", default="smoke", help="smoke, cpu, paper, or a JSON file")
    p.add_argument("--out", required=True)
    p.add_argument("--archs", nargs="+")
    p.add_argument("--corruptions", nargs="+")
    p.add_argument("--methods", nargs="+")
    p.add_argument("--executor", default="local", choices=["local", "ray"])
    p.add_argument("--address", help="Ray cluster address (with --executor ray)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: a GPU when present)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("report", help="rebuild the Markdown/HTML report of a benchmark folder")
    p.add_argument("dir")
    _common(p, data=False)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("models", help="list the registered architectures")
    _common(p, data=False)
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("corruptions", help="list the corruptions and their severity parameters")
    _common(p, data=False)
    p.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help and --version exit 0; a bad argument was printed as one `error:` line
        if e.code in (0, None):
            raise
        return 2
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    from .heap import keep_heap

    keep_heap()  # every command moves big tensors; DenseNet inference runs 1.8x faster with it
    try:
        from .distributed import setup

        setup()  # under torchrun: join the other processes (train and repair split each batch)
        return int(args.func(args) or 0)
    except DeepRepairError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume where it stopped", file=sys.stderr)
        return 130
    except OSError as e:  # the file system said no (full disk, read-only folder, a file where a folder goes)
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        print(f"error: cannot write or read{where}: {e.strerror or e}; check that the path is writable and "
              "the disk has free space", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `deeprepair corruptions | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
