"""Every repair option given on the command line is read by the chosen method or one of its
protections, or the command refuses it with one line naming what reads it; options left at their
defaults (or set by a preset) stay silent. A style checkpoint is checked to be one."""

from __future__ import annotations

import pytest

from conftest import write_tiny_workspace
from deeprepair.cli import main
from deeprepair.repair import RepairConfig
from deeprepair.repair.methods import unread_options


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return write_tiny_workspace(tmp_path_factory.mktemp("ws"))


def _repair(ws, tmp_path, *extra):
    return main(["repair", "--model", str(ws / "model.safetensors"), "--data", str(ws / "data"), "--failures",
                 str(ws / "fail.npz"), "--out", str(tmp_path / "out"), "--quiet", *extra])


@pytest.mark.parametrize("extra, says", [
    (["--style", "adain", "--style-checkpoint", "X"],
     "--style and --style-checkpoint are read by --method deeprepair; the default recipe (--method finetune) "
     "does not read them"),
    (["--clusters", "5"], "--clusters is read by --method deeprepair"),  # its default value, but given
    (["--method", "augmix", "--sampling", "uniform"], "--sampling is read by --method deeprepair; --method augmix"),
    (["--fewshot-replay", "10"], "--fewshot-replay is read by --method fewshot"),
    (["--oracle-corruption", "fog"], "--oracle-corruption is read by --method oracle"),
    (["--no-interpolate", "--max-break", "0.02"], "--max-break is read by the weight mix (--interpolate) or the gate"),
    (["--gate-router", "mlp"], "--gate-router is read by the gate (--gate)"),
    (["--preset", "deeprepair-paper", "--distill-focus", "right"],
     "--distill-focus is read by the distillation (--distill); --preset deeprepair-paper does not use it"),
    (["--field-weight", "2"], "--field-weight is read by the field images (--field)"),
    (["--method", "bn-adapt", "--lr", "0.1"], "--lr is read by the fine-tuning methods; --method bn-adapt (label-free adaptation) does not read it"),
])
def test_an_option_nothing_chosen_reads_is_refused_in_one_line(ws, tmp_path, capsys, extra, says):
    assert _repair(ws, tmp_path, *extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and says in err, err
    assert not (tmp_path / "out").exists()  # refused before any work


def test_options_left_to_a_preset_or_the_defaults_stay_silent():
    paper = RepairConfig.preset("deeprepair-paper")  # distill 0 but distill_focus set: not given, silent
    assert unread_options(paper, {}) is None
    assert unread_options(RepairConfig(), {"epochs": "--epochs", "seed": "--seed", "tune": "--tune"}) is None
    dr = RepairConfig(method="deeprepair", style="fourier")
    assert unread_options(dr, {"style": "--style", "clusters": "--clusters", "sampling": "--sampling"}) is None
    assert unread_options(RepairConfig(gate=True), {"max_break": "--max-break", "gate_router": "--gate-router"}) is None
    assert unread_options(RepairConfig(field_labels="self"), {"field_threshold": "--field-threshold"},
                          field=True) is None
    assert "pseudo-labels" in unread_options(RepairConfig(), {"field_threshold": "--field-threshold"}, field=True)
    assert unread_options(RepairConfig(method="tent"), {"epochs": "--epochs"}) is None


def test_a_style_checkpoint_that_is_not_one_is_refused(ws, tmp_path, capsys):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x80\x04not a safetensors file")
    for ck, says in ((ws / "model.safetensors", "is not a deeprepair style checkpoint"),
                     (junk, "is not a style checkpoint"), (tmp_path / "missing.safetensors", "not found")):
        assert _repair(ws, tmp_path, "--method", "deeprepair", "--style", "adain", "--style-checkpoint", str(ck)) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and len(err.splitlines()) == 1 and says in err, err


def test_a_style_decoder_checkpoint_passes_the_check(tmp_path):
    from deeprepair.models import Classifier, create_model
    from deeprepair.style.adain import FeatureEncoder, check_style_checkpoint, make_decoder, save_style_checkpoint

    enc = FeatureEncoder(Classifier(create_model("resnet-20", 10)))
    path = save_style_checkpoint(tmp_path / "s.safetensors", enc, make_decoder(16, 0, 8),
                                 {"encoder": {"arch": "resnet-20", "num_classes": 10}})
    assert check_style_checkpoint(path)["layer"] == enc.layer
