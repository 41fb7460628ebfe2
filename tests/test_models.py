"""Model registry and checkpoints: parameter counts, bit-exact round trips, safe loading."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from deeprepair.errors import DeepRepairError
from deeprepair.models import Classifier, count_parameters, create_model, list_models, model_info
from deeprepair.models.checkpoint import load_checkpoint, load_model, read_user_weights, save_checkpoint

# (name, expected parameters +- 3%): the paper's three as in AugMix's CIFAR code, and CPU members
EXPECTED = {
    "allconvnet": 1.41e6, "densenet-bc-100-12": 0.769e6, "wrn-40-2": 2.24e6,
    "allconvnet-s": 0.355e6, "densenet-bc-40-12": 0.176e6, "wrn-16-2": 0.692e6, "resnet-20": 0.270e6,
}  # fmt: skip


def test_registry_lists_paper_and_cpu_profiles():
    assert set(list_models("paper")) == {"allconvnet", "densenet-bc-100-12", "wrn-40-2"}
    assert {"allconvnet-s", "densenet-bc-40-12", "wrn-16-2", "resnet-20"} <= set(list_models("cpu"))
    assert model_info("wrn-40-2")["family"] == "wideresnet"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parameter_counts(name):
    n = count_parameters(create_model(name))
    assert abs(n - EXPECTED[name]) / EXPECTED[name] < 0.03, n


@pytest.mark.parametrize("name", ["resnet-20", "wrn-16-2", "densenet-bc-40-12", "allconvnet-s"])
def test_forward_shape_and_num_classes(name):
    model = create_model(name, num_classes=7).eval()
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 7)


def test_unknown_model_and_bad_num_classes_are_clear_errors():
    with pytest.raises(DeepRepairError, match="unknown model 'resnet-99'.*resnet-20"):
        create_model("resnet-99")
    with pytest.raises(DeepRepairError, match="num_classes"):
        create_model("resnet-20", num_classes=1)


def test_classifier_normalises_inputs():
    net = nn.Identity()
    clf = Classifier(nn.Flatten(), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    x = torch.full((1, 3, 1, 1), 0.75)
    assert torch.allclose(clf(x), torch.ones(1, 3))
    assert isinstance(net, nn.Module)


def _trained_like(name: str = "resnet-20") -> Classifier:
    torch.manual_seed(0)
    model = Classifier(create_model(name))
    with torch.no_grad():  # non-trivial BN statistics, as after training
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_checkpoint_round_trip_is_bit_exact(tmp_path):
    model = _trained_like()
    x = torch.rand(4, 3, 32, 32)
    path = save_checkpoint(model, tmp_path / "m.safetensors", {"arch": "resnet-20", "num_classes": 10,
                                                                 "classes": list("abcdefghij")})
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["arch"] == "resnet-20" and meta["mean"] == [0.5, 0.5, 0.5]
    loaded, meta2 = load_checkpoint(path)
    assert meta2 == meta
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    # the metadata travels inside the safetensors header too
    (tmp_path / "m.json").unlink()
    assert load_checkpoint(path)[1]["arch"] == "resnet-20"


def test_checkpoint_with_wrong_architecture_is_a_clear_error(tmp_path):
    path = save_checkpoint(_trained_like(), tmp_path / "m.safetensors", {"arch": "wrn-16-2", "num_classes": 10})
    with pytest.raises(DeepRepairError, match="does not fit the model"):
        load_checkpoint(path)


def test_pickled_module_is_refused_unless_allowed(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(nn.Sequential(nn.Flatten(), nn.Linear(3, 2)), path)
    with pytest.raises(DeepRepairError, match="--allow-pickle"):
        read_user_weights(path)
    state = read_user_weights(path, allow_pickle=True)
    assert set(state) == {"1.weight", "1.bias"}


def test_user_state_dict_with_factory(tmp_path):
    net = create_model("resnet-20", 10)
    torch.save({"state_dict": {"module." + k: v for k, v in net.state_dict().items()}}, tmp_path / "w.pth")
    model, meta = load_model(tmp_path / "w.pth", factory="deeprepair.models.resnet:resnet_20",
                             num_classes=10, mean=(0.4, 0.4, 0.4), std=(0.2, 0.2, 0.2))
    assert meta["num_classes"] == 10 and meta["mean"] == [0.4, 0.4, 0.4]
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), net.eval()((x - 0.4) / 0.2))


def test_factory_class_count_mismatch_is_an_error(tmp_path):
    torch.save(create_model("resnet-20", 10).state_dict(), tmp_path / "w.pt")
    with pytest.raises(DeepRepairError, match="does not fit"):
        load_model(tmp_path / "w.pt", factory="deeprepair.models.resnet:resnet_20", num_classes=5)
    with pytest.raises(DeepRepairError, match="--num-classes"):
        load_model(tmp_path / "w.pt", factory="deeprepair.models.resnet:resnet_20")
    with pytest.raises(DeepRepairError, match="cannot import"):
        load_model(tmp_path / "w.pt", factory="nowhere.module:fn", num_classes=10)


def test_torchscript_model(tmp_path):
    net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4)).eval()
    torch.jit.save(torch.jit.script(net), tmp_path / "m.ts")
    model, meta = load_model(tmp_path / "m.ts")
    assert meta["num_classes"] == 4
    with pytest.raises(DeepRepairError, match="outputs 4 classes but 10"):
        load_model(tmp_path / "m.ts", num_classes=10)
    import copy  # repair fine-tunes a copy: its parameters must be leaves an optimiser takes

    twin = copy.deepcopy(model)
    assert all(p.is_leaf and p.requires_grad for p in twin.parameters())
    torch.optim.SGD(twin.parameters(), lr=0.1)


def test_missing_or_garbage_files_are_clear_errors(tmp_path):
    with pytest.raises(DeepRepairError, match="not found"):
        load_model(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(DeepRepairError, match="not a readable safetensors"):
        load_model(bad)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"junk")
    with pytest.raises(DeepRepairError, match="neither a deeprepair checkpoint nor a TorchScript"):
        load_model(junk)
