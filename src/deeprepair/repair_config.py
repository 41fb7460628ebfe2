"""What a repair does and what it may spend: ``RepairConfig``, its named presets and the choices of
its options. Plain data (no torch), so that the command line builds its ``repair`` flags from it
without importing the repair code: each field that is a flag carries its help text, its choices
and its range (``metadata``, read by ``deeprepair.cli``); the default is the field's own.
``deeprepair.repair`` re-exports everything here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .errors import DeepRepairError

METHODS = ("deeprepair", "augmix", "finetune", "fewshot", "cutout", "mixup", "cutmix", "sensei", "oracle",
           "bn-adapt", "tent")
SELECTIONS = ("holdout", "last", "auto")
TUNES = ("all", "first-block", "bn", "head")  # repair/tuning.py
STYLES = ("wavelet", "fourier", "adain")  # style/
SAMPLINGS = ("eq4", "uniform", "per-class")
GATE_FEATURES = ("deep", "style", "deep+style")
GATE_ROUTERS = ("linear", "mlp")
GATE_BOUNDS = ("point", "wilson")
DISTILL_FOCI = ("all", "right")
FIELD_LABELS = ("original", "self")  # what unlabelled field images are taught with

# the ranges a flag's value must lie in (deeprepair.cli turns each into a range-checked parser type)
RANGES = ("count", "positive_int", "seed", "nonnegative", "below_one", "share", "learning_rate", "break_limit")
MIX_BOUNDS = ("clopper-pearson", "point")  # how the weight mix holds --max-break (repair/protection.py)


def flag(default, help: str, *, choices: tuple | None = None, range: str | None = None,
         metavar: str | None = None):
    """A field that is also a ``repair`` flag (``--name-with-dashes``): its default, help text,
    choices and range (one of ``RANGES``), in one place."""
    assert range is None or range in RANGES, range
    return field(default=default, metadata={"help": help, "choices": choices, "range": range, "metavar": metavar})


# Named recipes (``RepairConfig.preset(name)``; ``repair --preset NAME``). ``protect`` is the
# default (RepairConfig()'s own values): one network that keeps what was right, i.e. fine-tuning
# on Dt + Dc with focal distillation from the original (Yan et al. 2021), then the WiSE-FT mix of
# original and repaired weights with the largest validation repair whose validation break rate
# (held-back Dt images) stays <= max_break; add field images (repair(field=...)) when there are
# any. It was chosen on validation numbers only, over the same protection around DeepRepair
# (benchmarks/results/SUMMARY.md, section 5). ``paper``: DeepRepair as the paper states it, at
# this project's CPU budget (the default before ``protect``; every bench method builds on it).
# ``safe``: the no-regressions recipe of benchmarks/results/regressions.md section 11 (two
# networks behind a router); its train_subset is a share of the training set, resolved by
# ``repair.core.resolve_config``.
DEFAULT_PRESET = "protect"
PRESETS: dict[str, dict] = {
    "protect": {},
    "paper": {"method": "deeprepair", "distill": 0.0, "distill_focus": "all", "interpolate": False, "average": 1,
              "mix_bound": "point"},
    "safe": {"method": "deeprepair", "average": 1, "epochs": 1, "train_subset": 0.8, "dc_repeat": 4, "distill": 1.0,
             "distill_focus": "all", "interpolate": False, "gate": True, "gate_router": "mlp",
             "gate_features": "deep+style"},
}


@dataclass
class RepairConfig:
    """What a repair run does and what it may spend (stored in the repaired checkpoint).

    The fields made with ``flag(...)`` are the ``repair`` command's flags; the others are Python-only."""

    method: str = flag("finetune", "the repair method (repair/methods.py; docs/repair.md): DeepRepair, a "
                       "baseline, or label-free test-time adaptation (bn-adapt, tent); the default recipe "
                       "fine-tunes (cross-entropy on Dt + Dc) under its protection", choices=METHODS)
    oracle_corruption: str | None = flag(None, "oracle method: the failures' true corruption name")
    fewshot_replay: int = flag(0, "fewshot method: training images replayed beside the failures", range="count")
    style: str = flag("wavelet", "style backend of the style ops", choices=STYLES)
    style_options: dict = field(default_factory=dict)
    style_alpha: float = 1.0         # strength of the style op (1 = full transfer)
    sampling: str = flag("eq4", "how a style op draws its reference failure: Eq. 4 within k-means clusters (eq4), "
                         "uniformly from all of them (uniform), or as the authors' code (per-class)",
                         choices=SAMPLINGS)
    clusters: int = flag(5, "N: number of k-means clusters of the failures = number of style ops",
                         range="positive_int")
    cluster_features: str = "pixels"  # pixels (the paper) or style (wavelet band energies)
    epochs: int = flag(3, "budget: passes over the fine-tuning set", range="positive_int")
    train_subset: int = flag(10000, "training images used (0 = all)", range="count")
    dc_repeat: int = flag(1, "copies of the failures in the fine-tuning set", range="positive_int")
    batch_size: int = flag(128, "images per step", range="positive_int")
    lr: float = flag(0.01, "learning rate", range="learning_rate")
    momentum: float = 0.9
    weight_decay: float = 5e-4
    jsd_weight: float = 12.0         # lambda of the JSD term
    width: int = 3                   # M chains
    severity: float = 3.0            # AugMix op severity
    aug_alpha: float = 1.0           # Dirichlet / Beta parameter
    val_fraction: float = 0.1        # of Dc held out for model selection (and 1,000 of Dt)
    selection: str = flag("auto", "model selection: best epoch on 10% of the failures held out (holdout, may keep "
                          "the original), the last epoch with no failures held out (last), or last when fewer than "
                          "20 would be held out, i.e. under 200 failures (auto)", choices=SELECTIONS)
    min_val_failures: int = 20       # ... auto: last when the validation split would hold fewer failures than this
    val_train: int = 1000
    patience: int = 5                # early stopping on the validation score
    distill: float = flag(1.0, "regression control: weight of distillation (KL) from the original model on "
                          "training inputs (0: none, the paper)", range="nonnegative")
    distill_t: float = 2.0           # its temperature
    interpolate: bool = flag(True, "regression control: mix original and repaired weights (WiSE-FT), choosing "
                             "the mix on the validation split (--no-interpolate: keep the fine-tuned weights, the paper)")
    max_break: float = flag(0.01, "with --interpolate or --gate: the break limit, in (0, 0.5]: the share of the "
                            "images the original gets right that the repair may get wrong, certified on the "
                            "validation images (--mix-bound)", range="break_limit")
    mix_bound: str = flag("clopper-pearson", "how the weight mix holds --max-break: the exact one-sided upper "
                          "confidence bound of the validation break rate (clopper-pearson) or the rate itself "
                          "(point: no guarantee)", choices=MIX_BOUNDS)
    confidence: float = 0.95         # ... of the break bound and of the field check
    average: int = flag(3, "protection: fine-tune this many repairs with seeds seed, seed+1, ... and average their "
                        "weights before the mix (1: one run)", range="positive_int")
    gate: bool = flag(False, "regression control: route inputs that look like the failures to the repaired model "
                      "and the rest to the original (saves both; repair/gate.py)")
    gate_features: str = flag("deep", "what the --gate router looks at: the original model's features and logits "
                              "(deep), wavelet statistics (style) or both", choices=GATE_FEATURES)
    gate_router: str = flag("linear", "the --gate router: logistic regression (linear) or one hidden layer of "
                            "128 units (mlp)", choices=GATE_ROUTERS)
    gate_calibration: int = flag(5000, "with --gate: also check the threshold's break rate on up to this many "
                                 "training images left out of fine-tuning (0: only the 1,000 validation images)",
                                 range="count")
    gate_bound: str = flag("wilson", "with --gate: hold the validation break rate (point) or its Wilson 95% upper "
                           "bound (wilson) to --max-break", choices=GATE_BOUNDS)
    gate_keep: float | None = flag(None, "with --gate: route only as much as keeps this share of the repair of the "
                                   "validation failures (e.g. 0.9) instead of routing up to --max-break; fewer clean "
                                   "images change", range="share", metavar="FRACTION")
    tune: str = flag("all", "which parameters are fine-tuned: all, first-block (stem + first stage, surgical "
                     "fine-tuning; rule in repair/tuning.py), bn (normalisation layers), head (last linear layer); "
                     "the rest stay bit-identical", choices=TUNES)
    distill_focus: str = flag("right", "with --distill: distil on all training inputs (all) or only on those the "
                              "original classifies right (right: focal distillation, Yan et al. 2021; losses.py)",
                              choices=DISTILL_FOCI)
    l2_pull: float = flag(0.0, "weight of an L2 pull ||theta - theta_original||^2 / 2 of the tuned weights to the "
                          "original's", range="nonnegative")
    field_weight: float = flag(1.0, "with --field: weight of the field images' term (distillation from the "
                               "original, or the pseudo-label loss)", range="nonnegative")
    field_labels: str = flag("original", "with --field: what the field images are taught with: the original's "
                             "answers (original: distillation) or the repairing network's own confident answers "
                             "(self: FixMatch-style pseudo-labels, a weak view labels an AugMix view; losses.py)",
                             choices=FIELD_LABELS)
    field_threshold: float = flag(0.95, "with --field-labels self: the confidence a pseudo-label needs",
                                  range="share")
    field_batch: int = 64            # ... field images per step (they also move BatchNorm's statistics)
    seed: int = flag(0, "seed of the split, the sampling and the training", range="seed")
    precision: str = "auto"

    @classmethod
    def preset(cls, name: str, **overrides) -> "RepairConfig":
        """A named recipe (``PRESETS``) with ``overrides`` on top."""
        if name not in PRESETS:
            raise DeepRepairError(f"unknown repair preset {name!r}; choose one of {list(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def check(self, n_failures: int) -> None:
        if self.method not in METHODS:
            raise DeepRepairError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.method == "oracle" and not self.oracle_corruption:
            raise DeepRepairError("the oracle method needs oracle_corruption (the true corruption name)")
        if n_failures == 0:
            raise DeepRepairError("the failure set is empty: collect at least one misclassified image")
        if self.epochs < 1 or self.batch_size < 1 or self.dc_repeat < 0:
            raise DeepRepairError("epochs and batch size must be >= 1, dc_repeat >= 0")
        if self.gate_features not in ("deep", "style", "deep+style"):
            raise DeepRepairError(f"gate_features must be 'deep', 'style' or 'deep+style', got {self.gate_features!r}")
        if self.gate_router not in ("linear", "mlp"):
            raise DeepRepairError(f"gate_router must be 'linear' or 'mlp', got {self.gate_router!r}")
        if self.gate_bound not in ("point", "wilson"):
            raise DeepRepairError(f"gate_bound must be 'point' or 'wilson', got {self.gate_bound!r}")
        if self.gate_keep is not None and not 0 < self.gate_keep <= 1:
            raise DeepRepairError(f"gate_keep must be in (0, 1] (a share of the validation repair), got {self.gate_keep!r}")
        if self.gate_calibration < 0:
            raise DeepRepairError("gate_calibration must be >= 0 (0 = the Dt validation images only)")
        if not 0 <= self.val_fraction < 1:
            raise DeepRepairError("val_fraction must be in [0, 1)")
        if self.selection not in SELECTIONS:
            raise DeepRepairError(f"selection must be one of {SELECTIONS}, got {self.selection!r}")
        if self.min_val_failures < 1:
            raise DeepRepairError("min_val_failures must be >= 1")
        if self.tune not in TUNES:
            raise DeepRepairError(f"tune must be one of {TUNES}, got {self.tune!r}")
        if self.distill_focus not in ("all", "right"):
            raise DeepRepairError(f"distill_focus must be 'all' or 'right', got {self.distill_focus!r}")
        if self.field_labels not in FIELD_LABELS:
            raise DeepRepairError(f"field_labels must be one of {FIELD_LABELS}, got {self.field_labels!r}")
        if not (0 < self.field_threshold <= 1):
            raise DeepRepairError(f"field_threshold must be in (0, 1], got {self.field_threshold!r}")
        for name in ("distill", "l2_pull", "field_weight"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise DeepRepairError(f"{name} must be a finite number >= 0, got {v!r}")
        if not 0 <= self.max_break <= 0.5:
            raise DeepRepairError(f"max_break must be in [0, 0.5] (the command line: (0, 0.5]), got {self.max_break!r}")
        if self.mix_bound not in MIX_BOUNDS:
            raise DeepRepairError(f"mix_bound must be one of {MIX_BOUNDS}, got {self.mix_bound!r}")
        if not 0.5 <= self.confidence < 1:
            raise DeepRepairError(f"confidence must be in [0.5, 1), got {self.confidence!r}")
        if self.average < 1:
            raise DeepRepairError("average must be >= 1 (the number of repairs averaged)")
        if self.field_batch < 1:
            raise DeepRepairError("field_batch must be >= 1")

    def resolved_selection(self, n_failures: int) -> str:
        """``holdout`` or ``last`` for a failure set of this size (``auto`` decides by its size)."""
        if self.selection != "auto":
            return self.selection
        return "holdout" if round(self.val_fraction * n_failures) >= self.min_val_failures else "last"
