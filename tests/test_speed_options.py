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


def test_speed_regression_verdict_needs_every_round_to_agree():
    """benchmarks/speed_regression.py: a figure regresses only when today was slower than the old code by
    more than 5% in every round (rounds paired: the two ran one after the other)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "speed_regression.py"
    spec = importlib.util.spec_from_file_location("speed_regression", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.verdict([100, 50, 80], [90, 45, 72])[3] == "regressed"  # 10% slower in every round, however noisy
    assert mod.verdict([100, 100, 100], [97, 96, 98])[3] == "within noise"  # 3% slower: inside the 5%
    assert mod.verdict([100, 60, 100], [90, 80, 89])[3] == "within noise"  # one round faster: noise
    assert mod.verdict([100, 100], [120, 110])[3] == "faster"
    assert [round(v, 2) for v in mod.verdict([100, 100, 100, 100], [80, 90, 100, 110])[:3]] == [0.95, 0.8, 1.1]
