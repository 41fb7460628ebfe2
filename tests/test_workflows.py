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
    from deeprepair.workflows.repair import run_repair
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


def _tiny_data(tmp_path, smooth_images):
    data = tmp_path / "data"
    data.mkdir()
    for split, seed in (("train", 1), ("test", 2)):
        np.savez(data / f"{split}.npz", x=smooth_images(20, seed=seed), y=np.arange(20, dtype=np.int64) % 10)
    fails = tmp_path / "f.npz"
    np.savez(fails, x=smooth_images(8, seed=9), y=np.arange(8) % 10)
    return str(data), str(fails)


def test_a_repaired_factory_module_is_safetensors_and_its_old_pt_form_still_reads(tmp_path, smooth_images):
    """repair writes a user's --factory module as model.safetensors (its own weights, the normalisation
    in the header), read back with the same flags; the model_state.pt that repair wrote before (a
    Classifier state dict) still reads, to the same outputs."""
    import torch

    from deeprepair.models import create_model
    from deeprepair.models.checkpoint import load_model
    from deeprepair.repair import RepairConfig
    from deeprepair.workflows import ModelSpec
    from deeprepair.workflows.repair import run_repair

    data, fails = _tiny_data(tmp_path, smooth_images)
    factory = "deeprepair.models.resnet:resnet_20"
    torch.manual_seed(0)
    net = create_model("resnet-20", 10)
    torch.save(net.state_dict(), tmp_path / "own.pt")
    spec = ModelSpec(str(tmp_path / "own.pt"), factory=factory, num_classes=10, mean=[0.4] * 3, std=[0.2] * 3)
    cfg = RepairConfig.preset("deeprepair-paper", method="finetune", epochs=1, batch_size=8, train_subset=16,
                              precision="fp32")
    done = run_repair(spec, data, fails, tmp_path / "rep", cfg)
    rep = tmp_path / "rep" / "model.safetensors"
    assert rep.is_file() and not (tmp_path / "rep" / "model_state.pt").exists()
    assert "model.safetensors" in done.lines[-1]
    model, meta = load_model(rep, factory=factory, num_classes=10)  # no --mean/--std: the header has them
    assert meta["mean"] == [0.4] * 3 and meta["std"] == [0.2] * 3 and meta["arch"] == f"factory:{factory}"
    assert any(not torch.equal(a, b) for a, b in zip(model.net.state_dict().values(), net.state_dict().values()))
    torch.save(model.state_dict(), tmp_path / "model_state.pt")  # the form repair wrote before
    old, old_meta = load_model(tmp_path / "model_state.pt", factory=factory, num_classes=10)
    assert old_meta["mean"] == pytest.approx([0.4] * 3) and old_meta["std"] == pytest.approx([0.2] * 3)  # float32 buffers
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(old(x), model(x))
    with pytest.raises(DeepRepairError, match=f"--factory {factory}"):  # the code to run is the user's to name
        load_model(rep)


def test_a_repaired_torchscript_module_is_safetensors_read_with_its_original(tmp_path, smooth_images):
    """A TorchScript module is repaired (a copy of it fine-tuned) into model.safetensors, read back with
    --model alone: the module from the TorchScript file it was repaired from, checked by its hash."""
    import shutil

    import torch

    from deeprepair.models import create_model
    from deeprepair.models.checkpoint import load_model
    from deeprepair.repair import RepairConfig
    from deeprepair.workflows import ModelSpec
    from deeprepair.workflows.repair import run_repair

    data, fails = _tiny_data(tmp_path, smooth_images)
    torch.manual_seed(0)
    script = tmp_path / "own.ts"
    torch.jit.save(torch.jit.script(create_model("resnet-20", 10).eval()), script)
    cfg = RepairConfig.preset("deeprepair-paper", method="finetune", epochs=1, batch_size=8, train_subset=16,
                              precision="fp32")
    done = run_repair(ModelSpec(str(script)), data, fails, tmp_path / "rep", cfg)
    rep = tmp_path / "rep" / "model.safetensors"
    model, meta = load_model(rep)
    assert meta["arch"] == "torchscript:own.ts" and meta["num_classes"] == 10
    from deeprepair.data import load_dataset
    from deeprepair.engine import predict

    test = load_dataset(data, split="test")
    assert (predict(model, test.x, precision="fp32") == test.y).mean() == done.result["compare"]["clean_after"]
    shutil.copy(script, tmp_path / "kept.ts")
    script.write_bytes(b"changed")
    with pytest.raises(DeepRepairError, match="own.ts, which is changed"):
        load_model(rep)
    script.unlink()
    with pytest.raises(DeepRepairError, match="not found: put the original file back"):
        load_model(rep)
    shutil.copy(tmp_path / "kept.ts", rep.parent / "own.ts")  # the original beside the repair will do
    assert load_model(rep)[1]["arch"] == "torchscript:own.ts"
