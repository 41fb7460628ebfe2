"""Training: batched crop/flip, the schedule, determinism and bit-exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deeprepair.errors import DeepRepairError
from deeprepair.models import Classifier, create_model
from deeprepair.train import TrainConfig, crop_flip, fit, lr_at, read_state


def test_crop_flip_returns_a_padded_crop_or_its_mirror():
    x = torch.randint(0, 256, (16, 8, 8, 3), dtype=torch.uint8)
    out = crop_flip(x, torch.Generator().manual_seed(0), pad=2)
    padded = F.pad(x, (0, 0, 2, 2, 2, 2))
    for b in range(16):
        crops = [padded[b, i:i + 8, j:j + 8] for i in range(5) for j in range(5)]
        assert any(torch.equal(out[b], c) or torch.equal(out[b], c.flip(1)) for c in crops)


def test_crop_flip_varies_across_images_and_flips_about_half():
    x = torch.arange(8 * 8, dtype=torch.uint8).reshape(1, 8, 8, 1).repeat(400, 1, 1, 1)
    out = crop_flip(x, torch.Generator().manual_seed(1), pad=0)
    flipped = (out[:, 0, 0, 0] == 7).float().mean().item()
    assert 0.4 < flipped < 0.6


def test_lr_schedule_warms_up_then_decays_to_zero():
    cfg = TrainConfig(epochs=10, lr=0.2, warmup_epochs=1)
    lrs = [lr_at(cfg, s, 1000) for s in range(1000)]
    assert lrs[0] < 0.01 and max(lrs) == pytest.approx(0.2, rel=0.01)
    assert lrs[-1] < 1e-3 and np.argmax(lrs) == pytest.approx(100, abs=2)
    one = TrainConfig(epochs=10, lr=0.2, schedule="onecycle")
    assert lr_at(one, 300, 1000) == pytest.approx(0.2)


def _tiny(seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(48) % 3
    x = np.clip(rng.normal(60 + 60 * y[:, None, None, None], 20, (48, 16, 16, 3)), 0, 255).astype(np.uint8)
    return x, y


def _model() -> Classifier:
    torch.manual_seed(0)
    return Classifier(create_model("resnet-20", 3))


def _state_dict(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_fit_learns_separable_data_and_is_deterministic():
    x, y = _tiny()
    cfg = TrainConfig(epochs=3, batch_size=16, lr=0.05, precision="fp32", seed=3)
    a, b = _model(), _model()
    ra = fit(a, x, y, cfg, device=torch.device("cpu"), eval_x=x, eval_y=y)
    fit(b, x, y, cfg, device=torch.device("cpu"))
    assert ra.history[-1]["test_acc"] > 0.6
    for k, v in _state_dict(a).items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_resume_after_interruption_is_bit_identical(tmp_path):
    x, y = _tiny()
    cfg = TrainConfig(epochs=3, batch_size=16, lr=0.05, precision="fp32")
    full = _model()
    fit(full, x, y, cfg, device=torch.device("cpu"))

    state = tmp_path / "run.state.safetensors"
    calls = []

    def stop_after_first(row):
        calls.append(row)
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    part = _model()
    with pytest.raises(KeyboardInterrupt):
        fit(part, x, y, cfg, device=torch.device("cpu"), state_path=state, on_epoch=stop_after_first)
    assert read_state(state)["epochs_done"] == 1
    resumed = _model()
    res = fit(resumed, x, y, cfg, device=torch.device("cpu"), state_path=state)
    assert [h["epoch"] for h in res.history] == [1, 2, 3]
    for k, v in _state_dict(full).items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_resume_with_other_settings_is_refused(tmp_path):
    x, y = _tiny()
    state = tmp_path / "run.state.safetensors"
    fit(_model(), x, y, TrainConfig(epochs=1, batch_size=16, precision="fp32"), device=torch.device("cpu"),
        state_path=state)
    with pytest.raises(DeepRepairError, match="other settings"):
        fit(_model(), x, y, TrainConfig(epochs=2, batch_size=16, precision="fp32"),
            device=torch.device("cpu"), state_path=state)


def test_bad_config_is_a_clear_error():
    with pytest.raises(DeepRepairError, match="schedule"):
        TrainConfig(schedule="step").check()
    with pytest.raises(DeepRepairError, match="positive"):
        TrainConfig(epochs=0).check()


def test_state_files_from_before_a_new_option_still_resume():
    from dataclasses import asdict

    from deeprepair.train import TrainConfig, same_config

    cfg = TrainConfig(epochs=3)
    old = {k: v for k, v in asdict(cfg).items() if k != "compile"}  # written before `compile` existed
    assert same_config(old, cfg) and same_config(asdict(cfg), cfg)
    assert not same_config(old, TrainConfig(epochs=3, compile=True))
    assert not same_config({**old, "lr": 0.5}, cfg) and not same_config({**old, "extra": 1}, cfg)
    assert not same_config(None, cfg)


def test_repair_state_files_share_trains_resume_and_read_new_options_at_their_defaults():
    from dataclasses import asdict

    from deeprepair.repair_config import RepairConfig
    from deeprepair.train import same_config

    cfg = RepairConfig()
    old = {k: v for k, v in json.loads(json.dumps(asdict(cfg))).items() if k != "mix_steps"}
    assert same_config(old, cfg)  # a repair state saved before --mix-steps existed resumes
    assert not same_config(old, RepairConfig(mix_steps=5)) and not same_config({**old, "lr": 0.5}, cfg)
