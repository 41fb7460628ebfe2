"""One vocabulary: a repair is a training method plus a protection, named the same way in the
command line, the Python API and bench; results written under former names read back under
today's, with the same hashes and numbers; a former name is refused with its replacement."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from deeprepair.bench.profile import RENAMED, cell_hash, current_name, label, load_profile, recipe_options
from deeprepair.bench.report import read_cell, read_record
from deeprepair.errors import DeepRepairError
from deeprepair.repair_config import DEFAULT_PRESET, PRESETS, RENAMED_PRESETS, RepairConfig

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
# a folder of committed cells written under former names (ft-focal+interp, dr-focal+interp)
LEAKFREE = RESULTS / "leakfree"


def _old_cells():
    return [p for p in sorted((LEAKFREE / "cells").glob("*.json")) if p.stem.split("__")[2] in RENAMED]


def test_a_renamed_result_reads_back_under_its_new_name_with_the_same_hash_and_numbers():
    olds = _old_cells()
    assert olds, "the committed leakfree cells were written under the former names"
    record = read_record(LEAKFREE / "profile.json")
    assert "finetune+focal+mix" in record["methods"] and "ft-focal+interp" not in record["methods"]
    for path in olds:
        raw = json.loads(path.read_text())
        cell = read_cell(path)
        assert cell["method"] == RENAMED[raw["method"]] != raw["method"]
        assert cell["metrics"] == raw["metrics"] and cell["repair"] == raw["repair"]
        h = cell_hash(record, cell["arch"], cell["corruption"], cell["method"], cell["seed"], cell["model"])
        assert h == path.stem.rsplit("__", 1)[-1] == raw["hash"]


def test_a_rerun_finds_the_cell_written_under_the_former_name(tmp_path):
    from deeprepair.bench.runner import cell_file

    path = _old_cells()[0]
    arch, corruption, old, seed, h = path.stem.split("__")
    (tmp_path / "cells").mkdir()
    shutil.copy(path, tmp_path / "cells" / path.name)
    record = read_record(LEAKFREE / "profile.json")
    model_id = json.loads(path.read_text())["model"]
    ctx = SimpleNamespace(out=tmp_path, prof=record, model=lambda a: (None, None, model_id))
    found = cell_file(ctx, (arch, corruption, RENAMED[old], int(seed[1:])))
    assert found == tmp_path / "cells" / path.name  # finished: not redone
    fresh = cell_file(ctx, (arch, corruption, RENAMED[old], int(seed[1:]) + 7))
    assert RENAMED[old] in fresh.name and not fresh.exists()  # a new cell is written under the new name


def test_every_former_bench_name_has_the_options_it_had():
    # the options (and so the hash) of each former name as it was defined before the renames
    before = {"ft-focal": {"method": "finetune", "distill": 1.0, "distill_focus": "right"},
              "dr-fb-focal+field": {"method": "deeprepair", "tune": "first-block", "distill": 1.0,
                                    "distill_focus": "right", "field": True},
              "ft-focal+pseudo+interp": {"method": "finetune", "distill": 1.0, "distill_focus": "right",
                                         "field": True, "field_labels": "self", "interpolate": True},
              "dr-adain": {"method": "deeprepair", "style": "adain",
                           "style_options": {"checkpoint": "checkpoints/style-resnet-20.safetensors"}},
              "dr-safe": {"method": "deeprepair", "epochs": 1, "train_subset": 0.8, "dc_repeat": 4, "distill": 1.0,
                          "distill_focus": "all", "interpolate": False, "gate": True, "gate_router": "mlp",
                          "gate_features": "deep+style"}}
    for old, opts in before.items():
        assert recipe_options(current_name(old)) == opts, old
    for new in RENAMED.values():
        recipe_options(new)  # every new name is a valid bench method


def test_a_former_name_is_refused_with_its_replacement(tmp_path):
    with pytest.raises(DeepRepairError, match="bench method 'ft-focal\\+interp' is now called 'finetune\\+focal\\+mix'"):
        recipe_options("ft-focal+interp")
    prof = {**load_profile("smoke"), "methods": ["original", "dr-uniform"]}
    (tmp_path / "p.json").write_text(json.dumps(prof))
    with pytest.raises(DeepRepairError, match="'dr-uniform' is now called 'deeprepair-uniform'"):
        load_profile(str(tmp_path / "p.json"))
    for old, new in RENAMED_PRESETS.items():
        with pytest.raises(DeepRepairError, match=re.escape(f"preset '{old}' is now called '{new}'")):
            RepairConfig.preset(old)


def test_a_former_preset_on_the_command_line_is_one_line_naming_its_replacement(capsys):
    from deeprepair.cli import main

    assert main(["repair", "--model", "m", "--failures", "f", "--out", "o", "--preset", "paper"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and "'deeprepair-paper'" in err


def test_bench_names_and_presets_say_the_same_thing():
    # the default recipe: the preset and the bench method of the same name hold the same options
    default = RepairConfig.preset(DEFAULT_PRESET)
    bench = RepairConfig.preset("deeprepair-paper", **recipe_options(DEFAULT_PRESET))
    assert default == bench
    # DeepRepair as the paper states it is the bench method "deeprepair" (no protection)
    assert RepairConfig.preset("deeprepair-paper") == RepairConfig.preset("deeprepair-paper",
                                                                         **recipe_options("deeprepair"))
    assert set(PRESETS) >= {DEFAULT_PRESET, "deeprepair-paper", "deeprepair+distill+gate"}
    assert label("ft-focal+avg3+certified") == label("finetune+focal+avg3+certified")  # the renamed cells
    assert label(DEFAULT_PRESET).startswith("fine-tune + focal distillation + 3 runs averaged + their BatchNorm "
                                            "statistics averaged too + certified weight mix")
    assert label("ft-focal+interp") == label("finetune+focal+mix") == ("fine-tune + focal distillation + weight mix "
                                                                      "(point estimate)")


def test_an_unknown_bench_name_explains_the_grammar():
    with pytest.raises(DeepRepairError, match="unknown bench method 'augmix\\+armour'.*\\+protection"):
        recipe_options("augmix+armour")
    assert recipe_options("augmix+focal+mix") == {"method": "augmix", "distill": 1.0, "distill_focus": "right",
                                                  "interpolate": True}
