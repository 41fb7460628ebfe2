"""The top-level package: ``from deeprepair import repair, corrupt, load_checkpoint, load_dataset``,
resolved lazily (``import deeprepair`` does not import torch), and every checkpoint kind loading
through ``deeprepair.load_checkpoint``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_import_deeprepair_is_cheap():
    assert _run("import sys, deeprepair; print('torch' in sys.modules, deeprepair.__version__)").startswith("False ")


def test_public_names():
    import deeprepair
    from deeprepair import corrupt, load_checkpoint, load_dataset, repair
    from deeprepair.corruptions import corrupt as corrupt_impl
    from deeprepair.data import load_dataset as load_dataset_impl
    from deeprepair.models.checkpoint import load_checkpoint as load_checkpoint_impl
    from deeprepair.repair.core import repair as repair_impl

    assert corrupt is corrupt_impl and load_dataset is load_dataset_impl
    assert load_checkpoint is load_checkpoint_impl
    assert repair.repair is repair_impl and callable(repair)
    assert {"corrupt", "load_checkpoint", "load_dataset", "repair"} <= set(dir(deeprepair))
    with pytest.raises(AttributeError):
        deeprepair.no_such_name  # noqa: B018


def test_calling_the_repair_package_calls_repair(monkeypatch):
    from deeprepair import repair

    monkeypatch.setattr(repair, "repair", lambda *a, **kw: (a, kw))
    assert repair(1, 2, config=3) == ((1, 2), {"config": 3})


def _save_gated(path) -> None:
    import torch

    from deeprepair.models import Classifier, create_model
    from deeprepair.models.checkpoint import save_checkpoint
    from deeprepair.repair.gate import GatedClassifier, LinearGate

    torch.manual_seed(0)
    make = lambda: Classifier(create_model("resnet-20", 3), (0.5,) * 3, (0.5,) * 3)  # noqa: E731
    n = 64 + 3 + 2  # resnet-20's penultimate features, logits, entropy, top logit
    gated = GatedClassifier(make(), make(), LinearGate(n), 0.25, "deep")
    save_checkpoint(gated, path, {"arch": "resnet-20", "num_classes": 3, "input_size": [16, 16, 3],
                                  "gate": {"features": "deep", "router": "linear", "n_features": n}})


def test_routed_checkpoints_load_through_the_package_and_models_never_import_repair(tmp_path):
    path = tmp_path / "gated.safetensors"
    _save_gated(path)
    # a fresh interpreter: deeprepair.load_checkpoint registers the routed kind itself
    assert _run(f"import deeprepair; m, meta = deeprepair.load_checkpoint({str(path)!r}); "
                "print(type(m).__name__, float(m.threshold))") == "GatedClassifier 0.25"
    # models.checkpoint alone does not import repair: it says how to load a routed checkpoint
    msg = _run(f"""
import sys
from deeprepair.errors import DeepRepairError
from deeprepair.models.checkpoint import load_checkpoint
try:
    load_checkpoint({str(path)!r})
except DeepRepairError as exc:
    print(exc)
print('deeprepair.repair' in sys.modules)
""")
    assert "routed repair" in msg and "deeprepair.load_checkpoint" in msg and msg.endswith("False")
