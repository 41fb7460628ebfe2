"""The commands as library functions (``deeprepair.workflows``) and the CLI's two tables: the
dispatch table covers every subcommand, and the repair flags are RepairConfig's flagged fields."""

from __future__ import annotations

import argparse
from dataclasses import fields

import numpy as np
import pytest

from deeprepair.errors import DeepRepairError


def _subparsers():
    from deeprepair.cli import build_parser

    return next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_every_subcommand_has_a_command_function():
    from deeprepair.cli import COMMANDS

    assert set(_subparsers()) == set(COMMANDS)


def test_repair_flags_are_the_flagged_config_fields_with_their_defaults_in_the_help():
    from deeprepair.repair import RepairConfig

    flagged = {f.name: f for f in fields(RepairConfig) if "help" in f.metadata}
    actions = {a.dest: a for a in _subparsers()["repair"]._actions}
    for name, f in flagged.items():
        a = actions[name]
        flag = "--" + name.replace("_", "-")
        # a yes/no field also has its --no- form, so that a default of True can be turned off
        want = [flag, "--no-" + flag[2:]] if isinstance(f.default, bool) else [flag]
        assert a.option_strings == want and a.default is None, name
        if f.default is not None and not isinstance(f.default, bool):
            assert f"(default: {f.default})" in a.help, name
        if f.metadata["choices"] == "methods":  # the method registry's names
            from deeprepair.repair import METHODS

            assert tuple(a.choices) == METHODS, name
        elif f.metadata["choices"]:
            assert list(a.choices) == list(f.metadata["choices"]), name


def test_train_then_repair_from_python(tmp_path, smooth_images):
    from deeprepair.repair import RepairConfig
    from deeprepair.train import TrainConfig
    from deeprepair.workflows import ModelSpec
    from deeprepair.workflows.repairing import run_repair
    from deeprepair.workflows.training import train_to_file

    data = tmp_path / "data"
    data.mkdir()
    for split, seed in (("train", 1), ("test", 2)):
        np.savez(data / f"{split}.npz", x=smooth_images(20, seed=seed), y=np.arange(20, dtype=np.int64) % 10)
    ckpt = tmp_path / "m.safetensors"
    done = train_to_file("resnet-20", str(data), ckpt, TrainConfig(epochs=1, batch_size=8))
    assert done.result["checkpoint"] == str(ckpt) and ckpt.is_file()
    fails = tmp_path / "f.npz"
    np.savez(fails, x=smooth_images(8, seed=9), y=np.arange(8) % 10)
    cfg = RepairConfig.preset("deeprepair+distill+gate", method="finetune", gate=False, distill=0.0)  # train_subset: a share, 0.8
    out = run_repair(ModelSpec(str(ckpt)), str(data), str(fails), tmp_path / "rep", cfg)
    assert out.result["repair"]["config"]["train_subset"] == 16 and (tmp_path / "rep" / "report.md").is_file()
    with pytest.raises(DeepRepairError, match="exists"):
        run_repair(ModelSpec(str(ckpt)), str(data), str(fails), tmp_path / "rep", cfg)
