"""The ``deeprepair`` command line: ``deeprepair <command> --help`` for each command.

Each ``cmd_<command>`` parses nothing itself (``cli_parser.build_parser`` does), calls one library
function (``deeprepair.workflows``) and prints its Outcome.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .cli_parser import REPAIR_METHODS, build_parser  # noqa: F401  (the parser: deeprepair/cli_parser.py)
from .errors import DeepRepairError
from .repair_config import SAFE_PRESET, RepairConfig


def _progress(total: int, quiet: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", unit_scale=True, desc=desc, disable=quiet, dynamic_ncols=True)


def _bars(args: argparse.Namespace):
    """The progress bars of a command: none with --quiet, and none on the other ranks under torchrun."""
    from .distributed import is_main

    return lambda total, desc: _progress(total, args.quiet or not is_main(), desc)


def _say(args: argparse.Namespace, line: str) -> None:
    """A note for people (stderr), silent with --quiet."""
    if not args.quiet:
        print(line, file=sys.stderr, flush=True)


def _emit(args: argparse.Namespace, *outcomes) -> int:
    """Print each Outcome of a command (None: nothing, e.g. on the other ranks under torchrun)."""
    for outcome in outcomes:
        if outcome is None:
            continue
        if args.json:
            print(json.dumps(outcome.result, indent=2))
        elif not args.quiet:
            print("\n".join(outcome.lines))
    return 0


def _spec(args: argparse.Namespace):
    from .workflows import ModelSpec

    return ModelSpec(args.model, factory=args.factory, num_classes=args.num_classes, mean=args.mean, std=args.std,
                     allow_pickle=args.allow_pickle, device=args.device, precision=args.precision)


def _source(args: argparse.Namespace) -> dict:
    """evaluate's and mine's corrupted-image flags."""
    return {"corrupted": args.corrupted, "corruption_seed": args.corruption_seed, "corruptions": args.corruptions,
            "heldout": args.heldout, "limit": args.limit}


def _default_model() -> Path:
    """The committed CPU-profile checkpoint the demo repairs (repository ``checkpoints/``)."""
    return Path(__file__).resolve().parents[2] / "checkpoints" / "resnet-20.safetensors"


def cmd_corrupt(args: argparse.Namespace) -> int:
    from .workflows.corrupt import corrupt_dataset

    return _emit(args, *corrupt_dataset(
        args.data, args.out, split=args.split, corruptions=args.corruptions, heldout=args.heldout,
        severities=args.severities, seed=args.seed, threads=args.threads, grid=args.grid, index=args.index,
        limit=args.limit, progress=_bars(args)))


def cmd_demo(args: argparse.Namespace) -> int:
    """End to end: corrupt the test set, mine the model's failures, repair it, compare (``demo.py``)."""
    from .workflows.demo import demo_to_folder

    return _emit(args, demo_to_folder(
        _spec(args), args.data, args.out, corruption=args.corruption, collect=args.collect, methods=tuple(args.methods),
        epochs=args.epochs, train_subset=args.train_subset, seed=args.seed, offline=args.offline, limit=args.limit,
        bundled=_default_model(), progress=_bars(args), say=lambda line: _say(args, line)))


def cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig
    from .workflows.training import train_to_file

    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      schedule=args.schedule, label_smoothing=args.label_smoothing,
                      precision=args.precision, weight_decay=args.weight_decay,
                      channels_last=not args.no_channels_last, compile=args.compile,
                      val_split=TrainConfig.val_split if args.val_split is None else args.val_split)  # fmt: skip
    if args.factory is None and (args.mean or args.std or args.init):
        raise DeepRepairError("--mean, --std and --init are for --factory models; a registered --arch is "
                              "trained from scratch with the normalisation 0.5")
    return _emit(args, train_to_file(args.arch, args.data, args.out, cfg, device=args.device, resume=args.resume,
                                     limit=args.limit, progress=_bars(args), factory=args.factory,
                                     mean=args.mean, std=args.std, init=args.init,
                                     val_split_given=args.val_split is not None))


def cmd_train_style(args: argparse.Namespace) -> int:
    from .workflows.training import train_style_to_file

    return _emit(args, train_style_to_file(
        _spec(args), args.data, args.out, layer=args.layer, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, width=args.width, feature_weight=args.feature_weight, seed=args.seed, resume=args.resume,
        limit=args.limit, progress=_bars(args)))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .workflows.evaluation import evaluate_to_folder

    return _emit(args, evaluate_to_folder(_spec(args), args.data, args.out, name=args.name, force=args.force,
                                          command=" ".join(sys.argv), progress=_bars(args), **_source(args)))


def cmd_mine(args: argparse.Namespace) -> int:
    from .workflows.mine import mine_corruptions, mine_real

    # an option the chosen source does not read is refused, naming what reads it
    if args.real:
        given = [flag for flag, v in (("--data", args.data), ("--limit", args.limit), ("--corrupted", args.corrupted),
                                      ("--corruptions", args.corruptions), ("--heldout", args.heldout),
                                      ("--corruption-seed", args.corruption_seed),
                                      ("--split-by", args.split_by != "image")) if v]
        if given:
            raise DeepRepairError(f"{', '.join(given)}: read when mining corruptions of a test set, not --real photos; "
                                  "drop them or --real")
    elif args.field_fraction:
        raise DeepRepairError("--field-fraction splits the --real photos: add --real, or drop --field-fraction")
    if args.real:
        return _emit(args, mine_real(_spec(args), args.real, args.out, collect=args.collect, seed=args.seed,
                                     field_fraction=args.field_fraction, export_heldout=args.export_heldout))
    return _emit(args, mine_corruptions(_spec(args), args.data, args.out, collect=args.collect, seed=args.seed,
                                        split_by=args.split_by, export_heldout=args.export_heldout,
                                        progress=_bars(args), **_source(args)))


def resolve_repair_options(args: argparse.Namespace, n_train: int | None = None) -> None:
    """Fill every repair flag left unset from the chosen preset (``--preset``, ``--safe`` =
    ``--preset deeprepair+distill+gate``; ``repair_config.py: PRESETS``), else from RepairConfig's defaults: one place
    for each default.

    A preset's training subset may be a share of the training set (--safe: 0.8, 40,000 of CIFAR-10's
    50,000, as measured), so that validation and the gate's calibration images stay out of fine-tuning;
    without ``n_train`` it stays a share, which ``run_repair`` resolves once the data is loaded.
    """
    from dataclasses import fields

    if args.safe:
        if args.preset not in (None, SAFE_PRESET):
            raise DeepRepairError(f"--safe is --preset {SAFE_PRESET}: drop one of --safe and --preset {args.preset}")
        args.preset = SAFE_PRESET
    if args.preset == SAFE_PRESET and args.method in ("bn-adapt", "tent"):
        raise DeepRepairError(f"--safe fine-tunes behind a gate, which {args.method} (label-free, on the failure "
                              "images only) does not: drop --safe or choose a fine-tuning --method")
    base = RepairConfig.preset(args.preset) if args.preset else RepairConfig()
    for f in fields(RepairConfig):
        if getattr(args, f.name, False) is None:
            value = getattr(base, f.name)
            if f.name == "train_subset" and isinstance(value, float) and n_train is not None:
                value = int(value * n_train)
            setattr(args, f.name, value)


def repair_config(args: argparse.Namespace, style_options: dict):
    """The RepairConfig of the parsed (and resolved) repair flags."""
    from dataclasses import fields

    return RepairConfig(**{f.name: getattr(args, f.name) for f in fields(RepairConfig) if hasattr(args, f.name)},
                        style_options=style_options)


def given_repair_options(args: argparse.Namespace) -> dict[str, str]:
    """The repair options the user wrote (RepairConfig field -> flag), before presets fill the rest."""
    from dataclasses import fields

    given = {f.name: "--" + f.name.replace("_", "-") for f in fields(RepairConfig)
             if "help" in f.metadata and getattr(args, f.name, None) is not None}
    for name, flag in (("style_options", "--style-mode"), ("style_options", "--style-checkpoint"),
                       ("gate_holdout", "--gate-holdout")):
        if getattr(args, flag[2:].replace("-", "_")):
            given[name] = flag
    return given


def cmd_repair(args: argparse.Namespace) -> int:
    from .repair.methods import unread_options
    from .workflows.inputs import style_options
    from .workflows.repair import run_repair

    given = given_repair_options(args)
    resolve_repair_options(args)
    recipe = (f"--preset {args.preset}" + (f" with --method {args.method}" if "method" in given else "") if args.preset
              else f"--method {args.method}" if "method" in given else f"the default recipe (--method {args.method})")
    unread = unread_options(repair_config(args, {}), given, field=bool(args.field), recipe=recipe)
    if unread:  # an option that would change nothing is refused, before any input is read
        raise DeepRepairError(unread)
    cfg = repair_config(args, style_options(args.style, args.style_mode, args.style_checkpoint))
    return _emit(args, run_repair(
        _spec(args), args.data, args.failures, args.out, cfg, eval_failures=args.eval_failures, field=args.field,
        eval_shifted=args.eval_shifted, gate_holdout=args.gate_holdout, force=args.force,
        preset="safe" if args.safe else None, limit=args.limit, command=" ".join(sys.argv), progress=_bars(args),
        val=args.val, field_eval=args.field_eval))


def cmd_style(args: argparse.Namespace) -> int:
    from .workflows.style import style_figure, style_strip

    if not args.figure:  # only the --figure grid reads the data set
        given = [flag for flag, v in (("--data", args.data), ("--limit", args.limit), ("--seed", args.seed)) if v]
        if given:
            raise DeepRepairError(f"{', '.join(given)}: read only with --figure (the grid rendered from the test "
                                  "set); a --content/--style strip does not use them")
    if args.figure:
        return _emit(args, style_figure(args.data, args.figure, checkpoint=args.checkpoint, seed=args.seed,
                                        limit=args.limit, out=args.out))
    return _emit(args, style_strip(args.content, args.style, args.out, backend=args.backend, mode=args.mode,
                                   checkpoint=args.checkpoint, index=args.index, style_index=args.style_index,
                                   alpha=args.alpha, force=args.force))


def cmd_bench(args: argparse.Namespace) -> int:
    from .workflows.bench import run_bench

    log = (lambda msg: None) if args.quiet or args.json else (lambda msg: print(msg, flush=True))
    return _emit(args, run_bench(args.profile, args.data, args.out, archs=args.archs, corruptions=args.corruptions,
                                 methods=args.methods, executor=args.executor, address=args.address,
                                 device=args.device, log=log, command=" ".join(sys.argv)))


def cmd_report(args: argparse.Namespace) -> int:
    from .workflows.bench import rebuild_report

    return _emit(args, rebuild_report(args.dir))


def cmd_models(args: argparse.Namespace) -> int:
    from .models import count_parameters, create_model, list_models, model_info
    from .workflows import Outcome

    info = {n: {**model_info(n), "parameters": count_parameters(create_model(n))} for n in list_models()}
    return _emit(args, Outcome(info, [f"{n:20s} {v['profile']:5s} {v['parameters'] / 1e6:5.2f}M  {v['note']}"
                                      for n, v in info.items()]))


def cmd_list(args: argparse.Namespace) -> int:
    from .corruptions import ALL_CORRUPTIONS, get_corruption
    from .corruptions.params import table
    from .workflows import Outcome

    info = {n: {"family": get_corruption(n).family, "heldout": get_corruption(n).heldout,
                "params": table(n, args.size)} for n in ALL_CORRUPTIONS}  # fmt: skip
    def fmt(v) -> str:  # 4 significant digits: the size rule's blends are long floats (--json keeps them whole)
        return f"({', '.join(fmt(x) for x in v)})" if isinstance(v, tuple) else f"{v:.4g}"

    return _emit(args, Outcome(info, [f"{n:18s} {v['family']:8s} {'held-out' if v['heldout'] else '        '} "
                                      f"{fmt(v['params'])}" for n, v in info.items()]))


COMMANDS = {"corrupt": cmd_corrupt, "demo": cmd_demo, "train": cmd_train, "evaluate": cmd_evaluate,
            "mine": cmd_mine, "repair": cmd_repair, "style": cmd_style, "train-style": cmd_train_style,
            "bench": cmd_bench, "report": cmd_report, "models": cmd_models, "corruptions": cmd_list}


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
        return int(COMMANDS[args.command](args) or 0)
    except DeepRepairError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume where it stopped", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `deeprepair corruptions | head`: stop quietly (before OSError, its base class)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # the file system said no (full disk, read-only folder, a file where a folder goes)
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        print(f"error: cannot write or read{where}: {e.strerror or e}; check that the path is writable and "
              "the disk has free space", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
