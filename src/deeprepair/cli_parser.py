"""The ``deeprepair`` command line's flags: the range-checked number types every numeric flag
uses, and one ``_<command>_parser`` per command. The ``repair`` flags that set a RepairConfig
field are generated from its fields (``repair_config.flag``). ``deeprepair.cli`` runs them."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from collections.abc import Sequence

from . import __version__
from .repair_config import DEFAULT_PRESET, PRESETS, PROTECTIONS, RANGES, RENAMED_PRESETS, SAFE_PRESET, RepairConfig  # plain data: building the parser does not import torch


class _MethodNames(Sequence):
    """The registered repair methods (``repair/methods.py``), read on first use: when a ``--method``
    value is checked or ``repair --help`` is shown. The registry is the one list of names, and it
    lives beside the objectives (torch); reading it lazily keeps ``deeprepair --help`` and every
    other command from importing torch to build the parser."""

    def _names(self) -> tuple[str, ...]:
        from .repair.methods import method_names

        return method_names()

    def __getitem__(self, i):
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())

    def __contains__(self, name) -> bool:
        return name in self._names()


REPAIR_METHODS = _MethodNames()


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


# the ranges of repair_config.RANGES (RepairConfig.check() holds the Python API to the same), and two more
RANGE_TYPES = {name: _number(kind, lo, hi, lo_open=lo_open, hi_open=hi_open)
               for name, (kind, lo, hi, lo_open, hi_open) in RANGES.items()}
POSITIVE_INT, COUNT, SEED = RANGE_TYPES["positive_int"], RANGE_TYPES["count"], RANGE_TYPES["seed"]
POSITIVE, NONNEGATIVE = RANGE_TYPES["positive"], RANGE_TYPES["nonnegative"]
BELOW_ONE, SHARE, LEARNING_RATE = RANGE_TYPES["below_one"], RANGE_TYPES["share"], RANGE_TYPES["learning_rate"]
THREADS = _number(int, 1, 4096)
FINITE = _number(float)
UNIT = _number(float, 0, 1)  # [0, 1]


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=p.prog.split()[-1] != "demo", help="checkpoint (.safetensors from `deeprepair train`), "
                   "TorchScript file, or your weights with --factory")  # fmt: skip
    p.add_argument("--factory", help="your model as package.module:function (called with num_classes=)")
    p.add_argument("--num-classes", type=POSITIVE_INT, help="output width of your model (with --factory)")
    _norm_args(p)
    p.add_argument("--allow-pickle", action="store_true", help="allow a .pt/.pth file that is not a "
                   "plain state dict (runs code from the file: only for files you trust)")  # fmt: skip
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: a GPU when present)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="auto = bf16 where the hardware has bf16 units (CPUs with AMX or AVX512-BF16, "
                   "GPUs), else fp32; without AMX, fp32 can be faster")


def _norm_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mean", type=FINITE, nargs="+", metavar="M", help="input normalisation mean your model "
                   "expects: 1 value (every channel) or 3 (R G B); default: what the weights file records, else 0.5")
    p.add_argument("--std", type=POSITIVE, nargs="+", metavar="S", help="input normalisation std, 1 or 3 values "
                   "(3 values show grey images to an RGB model as 3 equal channels)")


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
        kw = {"help": meta["help"].replace("%", "%%")}
        if isinstance(f.default, bool):
            kw["action"] = argparse.BooleanOptionalAction  # --interpolate / --no-interpolate
        elif meta["choices"] == "methods":  # the method registry's names, read lazily
            kw.update(choices=REPAIR_METHODS, metavar="METHOD", help=kw["help"] + "; one of %(choices)s")
        else:
            kw.update(type=RANGE_TYPES[meta["range"]] if meta["range"] else None, metavar=meta["metavar"],
                      choices=list(meta["choices"]) if meta["choices"] else None)
        kw["help"] += f" (default: {f.default})" if shown else ""
        p.add_argument("--" + f.name.replace("_", "-"), default=None, **kw)


def _corrupt_parser(sub) -> None:
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


def _demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="end-to-end demo: corrupt, mine failures, repair, compare",
                       description="Take the bundled CPU-profile model (or --model), corrupt the test set "
                       "with one corruption, split its failures into collected (Dc) and held-out (De), "
                       "repair with the default recipe (fine-tuning with focal distillation and the validation-held weight "
                       "mix) and, for comparison, DeepRepair and AugMix under the same protection; print "
                       "before/after.")  # fmt: skip
    _common(p)
    _model_args(p)
    p.set_defaults(model=None)
    p.add_argument("--corruption", default="fog", help="which corruption the field brings (default: fog)")
    p.add_argument("--collect", type=POSITIVE_INT, default=500, help="failures collected (Dc)")
    p.add_argument("--methods", nargs="+", default=["finetune", "deeprepair", "augmix"], metavar="METHOD",
                   choices=REPAIR_METHODS, help="methods (%(choices)s) to repair with, each with the default recipe's protection "
                   "(default: finetune deeprepair augmix)")
    p.add_argument("--epochs", type=POSITIVE_INT, default=2)
    p.add_argument("--train-subset", type=COUNT, default=5000)
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--offline", action="store_true", help="with no --data: skip the CIFAR-10 download and "
                   "use scikit-learn's bundled digits")
    p.add_argument("--seed", type=SEED, default=0)


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a classifier from scratch (the deployed model to repair)",
                       description="Train a registered architecture on DATA's train split with the "
                       "standard recipe (pad-4 crop, flip, SGD Nesterov, cosine); a checkpoint of the "
                       "run is kept after every epoch, so --resume continues an interrupted run.")  # fmt: skip
    _common(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--arch", help="model name (see `deeprepair models`)")
    which.add_argument("--factory", help="your model as package.module:function, called with num_classes= "
                       "(e.g. torchvision.models:resnet18); writes its own weights, for --model W --factory ...")
    _norm_args(p)
    p.add_argument("--init", metavar="WEIGHTS", help="with --factory: start from your weights (.safetensors, or a "
                   ".pt/.pth state dict read without unpickling code)")
    p.add_argument("--out", required=True, help="checkpoint to write (.safetensors; .json beside it)")
    p.add_argument("--epochs", type=POSITIVE_INT, default=30)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--batch-size", type=POSITIVE_INT, default=128)
    p.add_argument("--lr", type=LEARNING_RATE, default=0.1)
    p.add_argument("--weight-decay", type=NONNEGATIVE, default=5e-4)
    p.add_argument("--schedule", default="cosine", choices=["cosine", "onecycle"])
    p.add_argument("--label-smoothing", type=BELOW_ONE, default=0.0)
    p.add_argument("--val-split", type=_number(float, 0, 0.5, hi_open=True), help="share of the "
                   "training images held out, stratified by class and never trained on; recorded in the checkpoint, "
                   "repair certifies its break limit on them (default 0.1; 0: train on every image; repair then needs --val)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: a GPU when present)")
    p.add_argument("--no-channels-last", action="store_true", help="keep NCHW memory (faster for DenseNet's "
                   "concatenations)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (DenseNet: ~1.5x faster "
                   "on CPU after ~2 minutes of compiling)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run of --out")


def _evaluate_and_mine_parsers(sub) -> None:
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
    evaluate_p = sub.choices["evaluate"]
    evaluate_p.add_argument("--out", help="report folder (default: runs/evaluate/<model name>)")
    evaluate_p.add_argument("--name", help="label of the model in reports (default: file name)")
    evaluate_p.add_argument("--force", action="store_true", help="replace a report already in --out")


def _preset_flags(name: str) -> str:
    """A preset as the flags it sets beyond the default recipe's (a float train_subset is a share of
    the training images)."""
    cfg = RepairConfig(**PRESETS[name])
    on = [p for p in PROTECTIONS.values() if p.active(cfg, False)]
    unread = {k for p in PROTECTIONS.values() if not p.active(cfg, False) for k in p.reads} - {
        k for p in on for k in p.reads}  # e.g. --average-bn of a one-run preset: not listed
    flags = []
    for key, value in PRESETS[name].items():
        if value == PRESETS[DEFAULT_PRESET][key] or key in unread:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + key.replace("_", "-"))
        elif key == "train_subset" and isinstance(value, float):
            flags.append(f"{flag} {round(value * 100)}%% of the training images")
        else:
            flags.append(f"{flag} {value}")
    return ", ".join(flags) or "the defaults"


def _preset_name(name: str) -> str:
    """A ``--preset`` value; a former name is refused with the one that replaced it."""
    if name in RENAMED_PRESETS:
        raise argparse.ArgumentTypeError(f"preset {name!r} is now called {RENAMED_PRESETS[name]!r}")
    return name


def _repair_parser(sub) -> None:
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
    p.add_argument("--preset", type=_preset_name, choices=list(PRESETS), help="a named recipe (repair_config.py: PRESETS; flags given "
                   "with it override its values): " + "; ".join(f"{name} = {_preset_flags(name)}" for name in PRESETS))
    p.add_argument("--safe", action="store_true", help=f"= --preset {SAFE_PRESET}: the no-regressions recipe "
                   f"measured in benchmarks/results/regressions.md section 11: {_preset_flags(SAFE_PRESET)} (flags given with it "
                   "override its values)")
    p.add_argument("--field", metavar="DIR_OR_NPZ", help="unlabelled images from deployment (a folder of images or "
                   ".npz with x; never the images you evaluate on): the repair keeps the original's answers on "
                   "them (distillation, --field-weight) and BatchNorm sees them")
    p.add_argument("--eval-shifted", metavar="DIR_OR_NPZ", help="labelled images of the shifted distribution "
                   "the repair never saw (.npz x, y or class folders; all of them, right or wrong before): the "
                   "report gives accuracy, break and fix rate there")
    p.add_argument("--gate-holdout", metavar="PATH", help="with --gate: labelled clean images the original model "
                   "was not trained on (its validation split; never your test set), .npz (x, y) or class folders; "
                   "the threshold then also keeps clean accuracy on them >= the original's")
    p.add_argument("--val", metavar="DIR_OR_NPZ", help="labelled images your model never trained on (.npz x, y or "
                   "class folders; never the images you evaluate on): the break limit is certified on them. Default: "
                   "the validation split that `deeprepair train` held out, recorded in the checkpoint; without "
                   "either, held-back training images (an optimistic limit; the report says so)")
    p.add_argument("--field-eval", metavar="DIR_OR_NPZ", help="labelled field photos (.npz x, y or class folders, "
                   "e.g. `mine --real`'s eval share; never the images you evaluate on): the repair must not be worse "
                   "on them by an exact one-sided 95%% bound, else the original is kept")
    _config_flags(p)
    p.add_argument("--force", action="store_true", help="replace an existing repaired model in --out")


def _style_parser(sub) -> None:
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


def _train_style_parser(sub) -> None:
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


def _bench_parsers(sub) -> None:
    p = sub.add_parser("bench", help="run a benchmark profile (RQ1-RQ4): models, failures, every repair cell",
                       description="Pre-train or load each model of the profile, mine its failures, run every "
                       "(arch, corruption, method, seed) repair cell and write the report. Finished cells are kept "
                       "in OUT/cells and skipped when rerun.")  # fmt: skip
    _common(p)
    names = sorted(f.stem for f in (Path(__file__).parent / "bench" / "profiles").glob("*.json"))
    p.add_argument("--profile", default="smoke", help=f"a profile ({', '.join(names)}: "
                   "src/deeprepair/bench/profiles/) or a JSON file of your own (default: smoke)")
    p.add_argument("--out", required=True)
    p.add_argument("--archs", nargs="+")
    p.add_argument("--corruptions", nargs="+")
    p.add_argument("--methods", nargs="+")
    p.add_argument("--executor", default="local", choices=["local", "ray"])
    p.add_argument("--address", help="Ray cluster address (with --executor ray)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: a GPU when present)")

    p = sub.add_parser("report", help="rebuild the Markdown/HTML report of a benchmark folder")
    p.add_argument("dir")
    _common(p, data=False)

    p = sub.add_parser("models", help="list the registered architectures")
    _common(p, data=False)

    p = sub.add_parser("corruptions", help="list the corruptions and their severity parameters")
    p.add_argument("--size", type=_number(int, 8), default=32, metavar="N",
                   help="the parameters used for images whose shorter side is N px (default 32: the CIFAR-10-C "
                        "table; 224 and up: ImageNet-C's; linear between, docs/corruptions.md)")
    _common(p, data=False)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="deeprepair", description="The ``deeprepair`` command line.")
    parser.add_argument("--version", action="version", version=f"deeprepair {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_corrupt_parser, _demo_parser, _train_parser, _evaluate_and_mine_parsers, _repair_parser,
                _style_parser, _train_style_parser, _bench_parsers):
        add(sub)
    return parser

