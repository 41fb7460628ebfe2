"""Speed options on bad input: a ``--threads`` or compile option the machine cannot honour gives a
one-line warning and falls back, never a traceback or a silent slowdown; ``corrupt`` times
numba's first-run compile apart from its throughput."""

from __future__ import annotations

import warnings

import pytest
import torch

from deeprepair.engine import CompileOrEager, check_threads, set_threads, usable_cores


def test_more_threads_than_cores_warns_once_and_uses_the_cores():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        n = check_threads(usable_cores() + 7)
    assert n == usable_cores()
    assert len(w) == 1 and "\n" not in str(w[0].message) and "using" in str(w[0].message)


def test_threads_within_the_cores_are_kept_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_threads(1) == 1 and check_threads(None) is None and check_threads(0) is None


def test_set_threads_caps_torch(monkeypatch):
    before = torch.get_num_threads()
    try:
        with pytest.warns(UserWarning, match="core"):
            assert set_threads(usable_cores() + 3) == usable_cores()
    finally:
        torch.set_num_threads(before)


def test_compile_that_fails_falls_back_to_eager_with_one_warning(monkeypatch):
    def broken(model):
        def run(*a, **k):
            raise RuntimeError("InductorError: C++ compile error\nlong log ...")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    m = torch.nn.Linear(4, 2)
    c = CompileOrEager(m)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out1 = c(torch.ones(3, 4))
        out2 = c(torch.ones(3, 4))
    assert torch.equal(out1, m(torch.ones(3, 4))) and torch.equal(out2, out1)
    assert len(w) == 1 and "\n" not in str(w[0].message) and "without it" in str(w[0].message)
    assert c.ok is False and list(c.state_dict()) == [f"model.{k}" for k in m.state_dict()]


def test_compile_unsupported_at_creation_falls_back(monkeypatch):
    def unsupported(model):
        raise RuntimeError("Dynamo is not supported on this Python")

    monkeypatch.setattr(torch, "compile", unsupported)
    with pytest.warns(UserWarning, match="not usable here"):
        c = CompileOrEager(torch.nn.Linear(2, 2))
    assert c(torch.zeros(1, 2)).shape == (1, 2)


def test_corrupt_reports_set_up_apart_from_throughput(data_dir, tmp_path):
    from deeprepair.workflows.corrupt import corrupt_dataset

    (res,) = corrupt_dataset(str(data_dir), str(tmp_path / "c"), corruptions=["contrast"], severities=[1])
    assert res.result["setup_seconds"] >= 0 and res.result["seconds"] >= 0  # tiny data: may round to 0.0 s
    assert any("set-up" in line for line in res.lines) and any("img/s" in line for line in res.lines)


def test_auto_precision_picks_bf16_where_the_cpu_has_bf16_units():
    """bf16 with AMX or AVX512-BF16 (Intel or AMD), fp32 without."""
    from deeprepair.engine import _cpu_has_fast_bf16

    intel = "vendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx512f"
    amd = "vendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx512f"
    assert _cpu_has_fast_bf16(intel + " avx512_bf16 amx_bf16 amx_tile\n")
    assert _cpu_has_fast_bf16(intel + " avx512_bf16 avx512_fp16\n") and _cpu_has_fast_bf16(amd + " avx512_bf16\n")
    assert not _cpu_has_fast_bf16(amd + "\n") and not _cpu_has_fast_bf16(intel + "\n")


def _trained_bn(seed: int = 0) -> torch.nn.Module:
    """A resnet-20 whose BatchNorm layers hold non-trivial statistics and affine weights, in eval mode."""
    from deeprepair.models import Classifier, create_model

    torch.manual_seed(seed)
    model = Classifier(create_model("resnet-20", 10))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.uniform_(m.bias, -0.2, 0.2)
    return model.eval()


def test_batchnorm_folded_inference_predicts_what_the_model_predicts():
    import numpy as np

    from deeprepair.engine import FOLD_MIN_IMAGES, fold_batchnorm, predict_logits

    model = _trained_bn()
    x = np.random.default_rng(0).integers(0, 256, (FOLD_MIN_IMAGES, 32, 32, 3), dtype=np.uint8)
    folded = fold_batchnorm(model, torch.rand(4, 3, 32, 32))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())  # it did fold
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # on a copy
    a = predict_logits(model, x, precision="fp32")  # folds: FOLD_MIN_IMAGES images
    b = predict_logits(model, x, precision="fp32", fold=False)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
    assert (a.argmax(1) == b.argmax(1)).all()
    assert not model.training


def test_batchnorm_folding_falls_back_to_the_model_where_it_cannot_trace_or_would_differ():
    from deeprepair.engine import fold_batchnorm

    class Branchy(torch.nn.Module):  # data-dependent control flow: torch.fx cannot trace it
        def __init__(self):
            super().__init__()
            self.net = _trained_bn()

        def forward(self, x):
            return self.net(x) if x.mean() > 0 else -self.net(x)

    branchy = Branchy().eval()
    assert fold_batchnorm(branchy, torch.rand(2, 3, 32, 32)) is branchy

    class Noisy(torch.nn.Module):  # traceable, but the folded copy would not compute the same thing
        def __init__(self):
            super().__init__()
            self.net = _trained_bn()

        def forward(self, x):
            return self.net(x) + torch.rand(1)

    noisy = Noisy().eval()
    assert fold_batchnorm(noisy, torch.rand(2, 3, 32, 32)) is noisy
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())  # nothing to fold
    assert fold_batchnorm(plain) is plain
