"""RepairConfig: presets written out in full, and one check of every field against the choices and
ranges its metadata declares (the same ones the command line's flags use)."""

from __future__ import annotations

from dataclasses import fields

import pytest

from deeprepair.errors import DeepRepairError
from deeprepair.repair_config import DEFAULT_PRESET, PRESETS, RANGES, RepairConfig, describe_range, in_range

RECIPE_GROUPS = ("method", "epochs", "train_subset", "dc_repeat", "dc_share", "batch_size", "lr", "tune", "selection", "distill",
                 "distill_focus", "l2_pull", "average", "average_bn", "interpolate", "mix_bound", "mix_steps", "max_break", "gate",
                 "gate_features", "gate_router", "gate_calibration", "gate_bound", "gate_keep")


def test_every_preset_is_written_out_in_full_and_the_default_is_the_dataclass_default():
    for name, values in PRESETS.items():
        assert tuple(values) == RECIPE_GROUPS, name  # the same fields, in the same order, in every preset
    assert RepairConfig() == RepairConfig.preset(DEFAULT_PRESET)


def _outside(name: str):
    kind, lo, hi, lo_open, hi_open = RANGES[name]
    if hi is not None:
        return hi + (0 if hi_open else 1)
    return lo - (0 if lo_open else 1)


def test_check_refuses_every_out_of_range_or_unknown_value_its_metadata_names():
    checked = 0
    for f in fields(RepairConfig):
        meta = f.metadata
        bad = []
        if isinstance(meta.get("choices"), tuple):
            bad.append("no-such-choice")
        if meta.get("range"):
            bad += [_outside(meta["range"]), float("nan"), True]
            if RANGES[meta["range"]][0] is int:
                bad.append(1.5)
        for value in bad:
            with pytest.raises(DeepRepairError, match=f"^{f.name} must be"):
                RepairConfig(**{f.name: value}).check(10)
            checked += 1
    assert checked > 60  # every declared range and choice was exercised


def test_the_ranges_read_as_they_check():
    assert in_range(1, "positive_int") and not in_range(0, "positive_int") and not in_range(2.5, "count")
    assert in_range(0, "below_one") and not in_range(1, "below_one") and in_range(1, "share")
    assert not in_range(0, "share") and not in_range(float("inf"), "nonnegative")
    assert describe_range("below_one") == "a number in [0, 1)" and describe_range("positive_int") == "an integer >= 1"


def test_the_cross_field_rules_still_hold():
    with pytest.raises(DeepRepairError, match="oracle method needs oracle_corruption"):
        RepairConfig(method="oracle").check(10)
    with pytest.raises(DeepRepairError, match="failure set is empty"):
        RepairConfig().check(0)
    RepairConfig(method="oracle", oracle_corruption="fog", gate_keep=0.9).check(10)


def test_the_command_line_ranges_are_the_configs():
    from deeprepair.cli_parser import RANGE_TYPES

    for name, (kind, lo, hi, lo_open, hi_open) in RANGES.items():
        t = RANGE_TYPES[name]
        assert (t.kind, t.lo, t.hi, t.lo_open, t.hi_open) == (kind, lo, hi, lo_open, hi_open)
