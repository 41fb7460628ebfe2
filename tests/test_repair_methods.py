"""The repair-method registry: every method is registered once beside its objective, and the
command line, ``repair()`` and ``bench`` read the names from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from deeprepair.data import ImageSet
from deeprepair.errors import DeepRepairError
from deeprepair.models import Classifier, create_model
from deeprepair.repair import RepairConfig, repair
from deeprepair.repair import methods as M

SRC = Path(__file__).resolve().parents[1] / "src"


def _tiny(n: int, seed: int) -> ImageSet:
    rng = np.random.default_rng(seed)
    return ImageSet(rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8), np.arange(n) % 3, ["a", "b", "c"])


@pytest.fixture
def scratch_method(monkeypatch):
    """Register a method for one test only (the registry is restored afterwards)."""
    monkeypatch.setattr(M, "_METHODS", dict(M._METHODS))
    calls = []

    @M.register_method("scratch", reads=("jsd_weight",), about="a test's own method", label="Scratch")
    class Scratch(M.Objective):
        def loss(self, model, x, y, idx, rng):
            calls.append(len(x))
            return super().loss(model, x, y, idx, rng)

    return calls


def test_every_method_is_registered_with_a_build_hook_or_as_test_time():
    names = M.method_names()
    assert {"finetune", "fewshot", "cutout", "mixup", "cutmix", "sensei", "augmix", "deeprepair", "oracle",
            "bn-adapt", "tent"} == set(names)
    for name in names:
        m = M.get_method(name)
        assert m.about and m.label
        assert (m.build is None) == m.test_time, name
        assert set(m.reads) <= {f for f in RepairConfig.__dataclass_fields__}, (name, m.reads)


def test_the_registry_builds_each_methods_own_objective():
    cfg = RepairConfig.preset("deeprepair-paper", clusters=2)
    dc = _tiny(12, 0)
    ctx = torch.autocast  # never entered here
    expect = {"finetune": M.Objective, "cutout": M.Cutout, "mixup": M.Mixup, "cutmix": M.CutMix,
              "sensei": M.Sensei, "augmix": M.JSDObjective, "deeprepair": M.JSDObjective}
    for name, cls in expect.items():
        objective, sampler = M.get_method(name).build(cfg, dc, 20, ctx)
        assert type(objective) is cls, name
        assert (sampler is not None) == (name == "deeprepair"), name
    ops = M.get_method("oracle").build(RepairConfig(oracle_corruption="fog"), dc, 20, ctx)[0].aug.style_ops
    assert isinstance(ops, M.OracleOps) and ops.name == "fog"


def test_a_method_added_in_its_own_module_reaches_repair_and_the_command_line(scratch_method):
    from deeprepair.cli_parser import build_parser

    args = build_parser().parse_args(["repair", "--model", "m", "--failures", "f", "--out", "o",
                                      "--method", "scratch"])
    assert args.method == "scratch"
    torch.manual_seed(0)
    model = Classifier(create_model("resnet-20", 3)).eval()
    cfg = RepairConfig.preset("deeprepair-paper", method="scratch", epochs=1, train_subset=30, batch_size=16,
                              precision="fp32")
    repair(model, _tiny(60, 1), _tiny(12, 2), cfg, device=torch.device("cpu"))
    assert scratch_method and sum(scratch_method) > 0  # the registered objective trained the model


def test_a_name_registered_twice_is_refused(scratch_method):
    with pytest.raises(ValueError, match="registered twice"):
        M.register_method("scratch", about="again")(M.Objective)


def test_an_unknown_method_gives_one_line_naming_the_known_ones():
    with pytest.raises(DeepRepairError, match="unknown repair method 'nope'; choose one of: .*deeprepair"):
        M.get_method("nope")


def test_building_the_parser_does_not_import_torch():
    code = ("import sys; from deeprepair.cli_parser import build_parser; p = build_parser(); "
            "p.parse_args(['corruptions']); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}).stdout
    assert out.strip() == "False"


def test_the_method_flag_reads_its_choices_from_the_registry():
    from deeprepair.cli_parser import REPAIR_METHODS, build_parser

    assert tuple(REPAIR_METHODS) == M.method_names()
    action = next(a for a in build_parser()._subparsers._group_actions[0].choices["repair"]._actions
                  if a.dest == "method")
    assert action.choices is REPAIR_METHODS


def test_reading_the_registry_imports_every_module_of_the_repair_package():
    """So a method in a module of its own under repair/ registers without being imported anywhere else."""
    import pkgutil

    import deeprepair.repair as pkg

    M.method_names()
    modules = {f"deeprepair.repair.{m.name}" for m in pkgutil.iter_modules(pkg.__path__)}
    assert {"deeprepair.repair.testtime", "deeprepair.repair.methods"} <= modules <= set(sys.modules)
