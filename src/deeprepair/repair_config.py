"""What a repair does and what it may spend: ``RepairConfig``, its named presets and the choices of
its options. Plain data (no torch), so that the command line builds its ``repair`` flags from it
without importing the repair code: each field that is a flag carries its help text, its choices
and its range (``metadata``, read by ``deeprepair.cli_parser``); ``check()`` checks every field
against the same metadata. ``deeprepair.repair`` re-exports everything here.

A repair is a training method (``method``: the registry of ``repair/methods.py``) plus a
protection (``PROTECTIONS``: focal distillation, the weight mix, the gate, field images).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Callable

from .errors import DeepRepairError

# -- the choices of the options: the one place (repair/gate.py, cluster.py and the command line read them)
SELECTIONS = ("holdout", "last", "auto")
TUNES = ("all", "first-block", "bn", "head")  # repair/tuning.py
STYLES = ("wavelet", "fourier", "adain")  # style/
SAMPLINGS = ("eq4", "uniform", "per-class")  # cluster.py
CLUSTER_FEATURES = ("pixels", "style")  # what k-means clusters: pixels (the paper) or wavelet band energies
GATE_FEATURES = ("deep", "style", "deep+style")  # repair/gate.py
GATE_ROUTERS = ("linear", "mlp")
GATE_BOUNDS = ("point", "wilson")
DISTILL_FOCI = ("all", "right")
FIELD_LABELS = ("original", "self")  # what unlabelled field images are taught with
AVERAGE_BNS = ("recompute", "kept")  # after averaging: recompute BatchNorm's statistics when the average scores lower, or keep the averaged ones
COMBINES = ("average", "distill")  # how K runs become one network (repair/core.py: average_runs, distill_runs)
MIX_PATHS = ("linear", "fisher")  # the path the weight mix walks (repair/protection.py: mix_path)
MIX_BOUNDS = ("clopper-pearson", "point")  # how the weight mix holds --max-break (repair/protection.py)
PRECISIONS = ("auto", "fp32", "bf16")

# the ranges a value must lie in: name -> (kind, low, high, low open, high open); the command line
# turns each into a range-checked parser type (cli_parser.RANGE_TYPES), ``check()`` checks the same
RANGES: dict[str, tuple] = {
    "count": (int, 0, None, False, False),  # 0 allowed (0 = all, or none)
    "positive_int": (int, 1, None, False, False),
    "seed": (int, 0, 2**32 - 1, False, False),
    "nonnegative": (float, 0, None, False, False),
    "positive": (float, 0, None, True, False),
    "below_one": (float, 0, 1, False, True),  # [0, 1): a rate that must leave room
    "share": (float, 0, 1, True, False),  # (0, 1]
    "learning_rate": (float, 0, 100, True, False),  # (0, 100]: beyond, weights overflow in one step
    "break_limit": (float, 0, 0.5, True, False),  # (0, 0.5]: a break limit a bound can certify
    "confidence": (float, 0.5, 1, False, True),  # [0.5, 1)
}


def flag(default, help: str, *, choices: tuple | str | None = None, range: str | None = None,
         metavar: str | None = None):
    """A field that is also a ``repair`` flag (``--name-with-dashes``): its default, help text,
    choices (``"methods"``: the method registry's names) and range (one of ``RANGES``), in one place."""
    assert range is None or range in RANGES, range
    return field(default=default, metadata={"help": help, "choices": choices, "range": range, "metavar": metavar})


def option(default, *, choices: tuple | None = None, range: str | None = None):
    """A field of the Python API only (no flag), checked like a flag."""
    assert range is None or range in RANGES, range
    return field(default=default, metadata={"choices": choices, "range": range})


# Named recipes (``RepairConfig.preset(name)``; ``repair --preset NAME``), each written out in
# full over the groups that make a recipe: method, budget, selection, protection and gate (the
# augmentation and field groups are the same in all of them, the fields' own defaults). The
# names are the bench's (``<method>+<protection>...``; bench/profile.py).
#
# ``finetune+focal+avg3+keptbn+certified`` is the default (RepairConfig()'s own values): 3
# fine-tunings on Dt + Dc with focal distillation from the original (Yan et al. 2021), seeds seed,
# seed + 1 and seed + 2, averaged weight by weight (BatchNorm's statistics too, never recomputed),
# then the WiSE-FT mix of original and average with the largest validation repair whose break rate
# on images the model never trained on is <= max_break with 95% confidence (exact Clopper-Pearson
# bound; repair/protection.py). The averaged statistics kept: recomputing them when the average
# scored lower repaired less on validation after the mix (averaged-bn); three runs, not one or two:
# with the statistics kept, of K = 1, 2, 3 measured in benchmarks/results/runs-averaged, the only K
# whose validation repair is within one standard error of the best's (SUMMARY.md, section 5).
# ``finetune+focal+avg2+keptbn+certified``: the previous default, 2 runs (chosen when the
# statistics were recomputed: benchmarks/results/certified).
# ``finetune+focal+avg2+certified``: the default before it, recomputing the statistics.
# ``finetune+focal+avg3+certified``: the same with 3 runs, as the certified profile ran it.
# ``finetune+focal+mix``: the earlier default, one run and the mix held as a point estimate.
# ``deeprepair-paper``: DeepRepair as the paper states it, at this project's CPU budget, with no
# protection; every bench method builds on it.
# ``deeprepair+distill+gate`` (``repair --safe``): the no-regressions recipe of
# benchmarks/results/regressions.md section 11 (two networks behind a router); its train_subset
# is a share of the training set, resolved by ``repair.core.resolve_config``.
DEFAULT_PRESET = "finetune+focal+avg3+keptbn+certified"
SAFE_PRESET = "deeprepair+distill+gate"  # what ``repair --safe`` stands for
_BUDGET = {"epochs": 3, "train_subset": 10000, "dc_repeat": 1, "dc_share": 0.0, "batch_size": 128, "lr": 0.01,
           "tune": "all", "selection": "auto"}
_NO_GATE = {"gate": False, "gate_features": "deep", "gate_router": "linear", "gate_calibration": 5000,
            "gate_bound": "wilson", "gate_keep": None}
PRESETS: dict[str, dict] = {
    "finetune+focal+avg3+keptbn+certified": {
        "method": "finetune", **_BUDGET,
        "distill": 1.0, "distill_focus": "right", "l2_pull": 0.0, "average": 3, "average_bn": "kept",
        "interpolate": True, "mix_bound": "clopper-pearson", "mix_steps": 20, "max_break": 0.01, **_NO_GATE,
    },
    "finetune+focal+avg2+keptbn+certified": {
        "method": "finetune", **_BUDGET,
        "distill": 1.0, "distill_focus": "right", "l2_pull": 0.0, "average": 2, "average_bn": "kept",
        "interpolate": True, "mix_bound": "clopper-pearson", "mix_steps": 20, "max_break": 0.01, **_NO_GATE,
    },
    "finetune+focal+avg2+certified": {
        "method": "finetune", **_BUDGET,
        "distill": 1.0, "distill_focus": "right", "l2_pull": 0.0, "average": 2, "average_bn": "recompute",
        "interpolate": True, "mix_bound": "clopper-pearson", "mix_steps": 20, "max_break": 0.01, **_NO_GATE,
    },
    "finetune+focal+avg3+certified": {
        "method": "finetune", **_BUDGET,
        "distill": 1.0, "distill_focus": "right", "l2_pull": 0.0, "average": 3, "average_bn": "recompute",
        "interpolate": True, "mix_bound": "clopper-pearson", "mix_steps": 20, "max_break": 0.01, **_NO_GATE,
    },
    "finetune+focal+mix": {
        "method": "finetune", **_BUDGET,
        "distill": 1.0, "distill_focus": "right", "l2_pull": 0.0, "average": 1, "average_bn": "recompute",
        "interpolate": True, "mix_bound": "point", "mix_steps": 10, "max_break": 0.01, **_NO_GATE,
    },
    "deeprepair-paper": {
        "method": "deeprepair", **_BUDGET,
        "distill": 0.0, "distill_focus": "all", "l2_pull": 0.0, "average": 1, "average_bn": "recompute",
        "interpolate": False, "mix_bound": "point", "mix_steps": 10, "max_break": 0.01, **_NO_GATE,
    },
    "deeprepair+distill+gate": {
        "method": "deeprepair", **{**_BUDGET, "epochs": 1, "train_subset": 0.8, "dc_repeat": 4},
        "distill": 1.0, "distill_focus": "all", "l2_pull": 0.0, "average": 1, "average_bn": "recompute",
        "interpolate": False, "mix_bound": "point", "mix_steps": 10, "max_break": 0.01,
        "gate": True, "gate_features": "deep+style", "gate_router": "mlp", "gate_calibration": 5000,
        "gate_bound": "wilson", "gate_keep": None,
    },
}
# presets' former names (a name no longer known is refused with its replacement)
RENAMED_PRESETS = {"protect": "finetune+focal+mix", "paper": "deeprepair-paper", "safe": "deeprepair+distill+gate"}
_D = PRESETS[DEFAULT_PRESET]  # the default recipe: the defaults of its fields below


@dataclass(frozen=True)
class Protection:
    """A protection a recipe may add around its method: switched on by ``switch`` (a flag; "field"
    is ``repair --field`` / ``repair(field=...)``), on when ``active(cfg, field_given)``, and then
    reading ``reads``. An option given on the command line that neither the chosen method nor an
    active protection reads is refused (``repair.methods.unread_options``)."""

    switch: str
    reads: tuple[str, ...]
    active: Callable[["RepairConfig", bool], bool]


PROTECTIONS: dict[str, Protection] = {
    "distillation": Protection("--distill", ("distill_t", "distill_focus"), lambda c, f: c.distill > 0),
    "L2 pull": Protection("--l2-pull", (), lambda c, f: c.l2_pull > 0),
    "averaging": Protection("--average", ("combine", "average_bn"), lambda c, f: c.average > 1),
    "weight mix": Protection("--interpolate", ("max_break", "mix_bound", "mix_steps", "mix_path", "confidence",
                                                   "val"),
                             lambda c, f: c.interpolate),  # val: a command's input (--val)
    "gate": Protection("--gate", ("max_break", "gate_features", "gate_router", "gate_calibration", "gate_bound",
                                  "gate_keep", "gate_holdout", "val"), lambda c, f: c.gate),  # gate_holdout: an input
    "field images": Protection("--field", ("field_weight", "field_labels", "field_batch"), lambda c, f: f),
    "pseudo-labels": Protection("--field-labels self", ("field_threshold",),
                                lambda c, f: f and c.field_labels == "self"),
}


@dataclass
class RepairConfig:
    """What a repair run does and what it may spend (stored in the repaired checkpoint).

    The fields made with ``flag(...)`` are the ``repair`` command's flags; those made with
    ``option(...)`` and the plain ones are Python-only."""

    # -- method: the training method (repair/methods.py) and the options of the methods that need one
    method: str = flag(_D["method"], "the training method (registered in repair/methods.py; docs/repair.md): "
                       "DeepRepair, a baseline, or label-free test-time adaptation (bn-adapt, tent). Whatever the "
                       "method, the default protection applies: focal distillation from the original (--distill 1 "
                       "--distill-focus right), 3 runs averaged (--average 3) and the certified weight mix "
                       "(--interpolate); --preset deeprepair-paper is DeepRepair as the paper states it, without "
                       "them", choices="methods")
    oracle_corruption: str | None = flag(None, "oracle method: the failures' true corruption name")
    fewshot_replay: int = flag(0, "fewshot method: training images replayed beside the failures", range="count")

    # -- budget: what fine-tuning may spend, and which parameters it may change
    epochs: int = flag(_D["epochs"], "budget: passes over the fine-tuning set", range="positive_int")
    train_subset: int = flag(_D["train_subset"], "training images used (0 = all)", range="count")
    dc_repeat: int = flag(_D["dc_repeat"], "copies of the failures in the fine-tuning set", range="positive_int")
    dc_share: float = flag(_D["dc_share"], "budget: repeat the failures until they make about this share of the "
                           "fine-tuning set, never fewer than --dc-repeat copies (0: exactly --dc-repeat; 0.0833, "
                           "1 in 12, gives 100 failures 9 copies beside 10,000 images)", range="below_one")
    batch_size: int = flag(_D["batch_size"], "images per step", range="positive_int")
    lr: float = flag(_D["lr"], "learning rate", range="learning_rate")
    momentum: float = option(0.9, range="below_one")
    weight_decay: float = option(5e-4, range="nonnegative")
    tune: str = flag(_D["tune"], "which parameters are fine-tuned: all, first-block (stem + first stage, surgical "
                     "fine-tuning; rule in repair/tuning.py), bn (normalisation layers), head (last linear layer); "
                     "the rest stay bit-identical", choices=TUNES)

    # -- augmentation: AugMix's chains (augmix, deeprepair, oracle) and DeepRepair's style ops
    jsd_weight: float = option(12.0, range="nonnegative")  # lambda of the JSD term
    width: int = option(3, range="positive_int")  # M chains
    severity: float = option(3.0, range="positive")  # AugMix op severity
    aug_alpha: float = option(1.0, range="positive")  # Dirichlet / Beta parameter
    style: str = flag("wavelet", "style backend of the style ops", choices=STYLES)
    style_options: dict = field(default_factory=dict)
    style_alpha: float = option(1.0, range="share")  # strength of the style op (1 = full transfer)
    sampling: str = flag("eq4", "how a style op draws its reference failure: Eq. 4 within k-means clusters (eq4), "
                         "uniformly from all of them (uniform), or as the authors' code (per-class)",
                         choices=SAMPLINGS)
    clusters: int = flag(5, "N: number of k-means clusters of the failures = number of style ops",
                         range="positive_int")
    cluster_features: str = option("pixels", choices=CLUSTER_FEATURES)

    # -- selection: which epoch is kept, on a validation split of Dt and Dc (never De or test)
    selection: str = flag(_D["selection"], "model selection: best epoch on 10% of the failures held out (holdout, "
                          "may keep the original), the last epoch with no failures held out (last), or last when "
                          "fewer than 20 would be held out, i.e. under 200 failures (auto)", choices=SELECTIONS)
    val_fraction: float = option(0.1, range="below_one")  # of Dc held out for model selection (and 1,000 of Dt)
    min_val_failures: int = option(20, range="positive_int")  # ... auto: last when fewer would be held out
    val_train: int = option(1000, range="count")
    patience: int = option(5, range="positive_int")  # early stopping on the validation score

    # -- protection: what keeps the original's right answers (PROTECTIONS)
    distill: float = flag(_D["distill"], "protection: weight of distillation (KL) from the original model on "
                          "training inputs (0: none, the paper)", range="nonnegative")
    distill_t: float = option(2.0, range="positive")  # its temperature
    distill_focus: str = flag(_D["distill_focus"], "with --distill: distil on all training inputs (all) or only on "
                              "those the original classifies right (right: focal distillation, Yan et al. 2021; "
                              "losses.py)", choices=DISTILL_FOCI)
    l2_pull: float = flag(_D["l2_pull"], "protection: weight of an L2 pull ||theta - theta_original||^2 / 2 of the "
                          "tuned weights to the original's", range="nonnegative")
    average: int = flag(_D["average"], "protection: fine-tune this many repairs with seeds seed, seed+1, ... and "
                        "average their weights before the mix (1: one run)", range="positive_int")
    average_bn: str = flag(_D["average_bn"], "with --average K > 1: BatchNorm's statistics of the averaged network: "
                           "averaged like every weight (kept), or recomputed on the fine-tuning images when the "
                           "average scores below the better run on validation (recompute; repaired less after the "
                           "certified mix, SUMMARY.md section 5)", choices=AVERAGE_BNS)
    combine: str = flag("average", "with --average K > 1: how the K runs become one network: average (their weights "
                        "averaged) or distill (one more run from the original distilled toward the K runs' mean "
                        "output, ELODI-style; costs one run more)", choices=COMBINES)
    interpolate: bool = flag(_D["interpolate"], "protection: mix original and repaired weights (WiSE-FT), choosing "
                             "the mix on the validation images (--no-interpolate: keep the fine-tuned weights, the "
                             "paper)")
    max_break: float = flag(_D["max_break"], "with --interpolate or --gate: the break limit, in (0, 0.5]: the share "
                            "of the images the original gets right that the repair may get wrong, certified on the "
                            "validation images (--mix-bound)", range="break_limit")
    mix_bound: str = flag(_D["mix_bound"], "how the weight mix holds --max-break: the exact one-sided upper "
                          "confidence bound of the validation break rate (clopper-pearson) or the rate itself "
                          "(point: no guarantee)", choices=MIX_BOUNDS)
    mix_steps: int = flag(_D["mix_steps"], "with --interpolate: the mixes walked, a = 0, 1/N, 2/N, ..., 1, upward "
                          "until the first that breaks the limit (a finer walk gets closer to it; each step costs "
                          "one pass over the validation images)", range="positive_int")
    mix_path: str = flag("linear", "with --interpolate: the path from the original to the repair that the walk "
                         "takes: linear, or fisher (each weight mixed in proportion to its Fisher information "
                         "under each network, BCWI; about 7 s more for a ResNet-20 on 2 cores)", choices=MIX_PATHS)
    confidence: float = option(0.95, range="confidence")  # of the break bound and of the field check

    # -- field: unlabelled images from the deployment (repair --field; repair(field=...))
    field_weight: float = flag(1.0, "with --field: weight of the field images' term (distillation from the "
                               "original, or the pseudo-label loss)", range="nonnegative")
    field_labels: str = flag("original", "with --field: what the field images are taught with: the original's "
                             "answers (original: distillation) or the repairing network's own confident answers "
                             "(self: FixMatch-style pseudo-labels, a weak view labels an AugMix view; losses.py)",
                             choices=FIELD_LABELS)
    field_threshold: float = flag(0.95, "with --field-labels self: the confidence a pseudo-label needs",
                                  range="share")
    field_batch: int = option(64, range="positive_int")  # field images per step (they also move BatchNorm's statistics)

    # -- gate: route inputs that look like the failures to the repaired network (repair/gate.py)
    gate: bool = flag(_D["gate"], "protection: route inputs that look like the failures to the repaired model "
                      "and the rest to the original (saves both; repair/gate.py)")
    gate_features: str = flag(_D["gate_features"], "what the --gate router looks at: the original model's features "
                              "and logits (deep), wavelet statistics (style) or both", choices=GATE_FEATURES)
    gate_router: str = flag(_D["gate_router"], "the --gate router: logistic regression (linear) or one hidden layer "
                            "of 128 units (mlp)", choices=GATE_ROUTERS)
    gate_calibration: int = flag(_D["gate_calibration"], "with --gate: also check the threshold's break rate on up to "
                                 "this many training images left out of fine-tuning (0: only the 1,000 validation "
                                 "images)", range="count")
    gate_bound: str = flag(_D["gate_bound"], "with --gate: hold the validation break rate (point) or its Wilson 95% "
                           "upper bound (wilson) to --max-break", choices=GATE_BOUNDS)
    gate_keep: float | None = flag(_D["gate_keep"], "with --gate: route only as much as keeps this share of the "
                                   "repair of the validation failures (e.g. 0.9) instead of routing up to --max-break; "
                                   "fewer clean images change", range="share", metavar="FRACTION")

    # -- run
    seed: int = flag(0, "seed of the split, the sampling and the training", range="seed")
    precision: str = option("auto", choices=PRECISIONS)

    @classmethod
    def preset(cls, name: str, **overrides) -> "RepairConfig":
        """A named recipe (``PRESETS``) with ``overrides`` on top."""
        if name in RENAMED_PRESETS:
            raise DeepRepairError(f"repair preset {name!r} is now called {RENAMED_PRESETS[name]!r}")
        if name not in PRESETS:
            raise DeepRepairError(f"unknown repair preset {name!r}; choose one of {list(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def check(self, n_failures: int) -> None:
        """Every field against its choices and range (the flags' metadata), then the rules that
        tie fields together. The method's name is the method registry's to check
        (``repair.methods.get_method``): this module holds no torch code."""
        for f in fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if value is None and f.default is None:
                continue  # an optional field left unset (oracle_corruption, gate_keep)
            choices = meta.get("choices")
            if isinstance(choices, tuple) and value not in choices:
                raise DeepRepairError(f"{f.name} must be one of {choices}, got {value!r}")
            if meta.get("range") and not in_range(value, meta["range"]):
                raise DeepRepairError(f"{f.name} must be {describe_range(meta['range'])}, got {value!r}")
        if self.method == "oracle" and not self.oracle_corruption:
            raise DeepRepairError("the oracle method needs oracle_corruption (the true corruption name)")
        if n_failures == 0:
            raise DeepRepairError("the failure set is empty: collect at least one misclassified image")

    def runs_trained(self) -> int:
        """How many fine-tuning runs a repair makes: ``average``, and one more when they are
        distilled (``combine="distill"``)."""
        return self.average + int(self.combine == "distill" and self.average > 1)

    def failure_copies(self, n_train: int, n_failures: int) -> int:
        """Copies of the ``n_failures`` fitted failures beside ``n_train`` training images:
        ``dc_repeat``, or with ``dc_share`` s the whole number nearest to making the failures a share
        s of the fine-tuning set, s / (1 - s) * n_train / n_failures, if that is more. With
        s = 1/12, 900 failures beside 10,000 images stay one copy (the share the default was chosen
        at, 1,000 failures) and 90 failures become 10 copies."""
        if self.dc_share <= 0 or n_failures <= 0:
            return self.dc_repeat
        return max(self.dc_repeat, round(self.dc_share / (1 - self.dc_share) * n_train / n_failures))

    def resolved_selection(self, n_failures: int) -> str:
        """``holdout`` or ``last`` for a failure set of this size (``auto`` decides by its size)."""
        if self.selection != "auto":
            return self.selection
        return "holdout" if round(self.val_fraction * n_failures) >= self.min_val_failures else "last"


def in_range(value, name: str) -> bool:
    """Whether ``value`` is a number of the kind and within the bounds of ``RANGES[name]``."""
    kind, lo, hi, lo_open, hi_open = RANGES[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    if kind is int and value != int(value):
        return False
    return ((lo is None or (value > lo if lo_open else value >= lo))
            and (hi is None or (value < hi if hi_open else value <= hi)))


def describe_range(name: str) -> str:
    """``RANGES[name]`` in words: "an integer >= 1", "a number in [0, 1)"."""
    kind, lo, hi, lo_open, hi_open = RANGES[name]
    what = "an integer" if kind is int else "a number"
    if lo is not None and hi is not None:
        return f"{what} in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    return f"{what} {'>' if lo_open else '>='} {lo}"
