"""Repair end to end on small synthetic data: it fixes failures, is seeded, and resumes; it touches
less (``tune``) and protects what was right (focal distillation, L2 pull, unlabelled field images)."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn as nn

from deeprepair.data import ImageSet
from deeprepair.engine import predict
from deeprepair.errors import DeepRepairError
from deeprepair.models import Classifier, create_model
from deeprepair.repair import RepairConfig, compare, repair
from deeprepair.repair.losses import distill_loss, focal_weights
from deeprepair.repair.tuning import first_block, tuned_modules
from deeprepair.train import TrainConfig, fit

CLASSES = ["red", "green", "blue"]


def _data(n: int, seed: int, shift: float = 0.0) -> ImageSet:
    """Class = which colour channel is brightest; ``shift`` adds a strong haze that hides it."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    base = rng.uniform(40, 90, (n, 1, 1, 3))
    base[np.arange(n), 0, 0, y] += 70
    x = base + rng.normal(0, 12, (n, 16, 16, 3))
    x = (1 - shift) * x + shift * np.array([235.0, 40.0, 40.0])  # a reddish fog
    return ImageSet(np.clip(x, 0, 255).astype(np.uint8), y, CLASSES)


@pytest.fixture(scope="module")
def setup():
    train = _data(300, 0)
    torch.manual_seed(0)
    model = Classifier(create_model("resnet-20", 3))
    fit(model, train.x, train.y, TrainConfig(epochs=3, batch_size=32, lr=0.05, precision="fp32"),
        device=torch.device("cpu"))
    model.eval()
    fogged = _data(400, 1, shift=0.6)
    wrong = predict(model, fogged.x, precision="fp32") != fogged.y
    failures = fogged.subset(np.flatnonzero(wrong))
    assert len(failures) > 60, "the synthetic shift must make the model fail"
    return model, train, failures.subset(np.arange(40)), failures.subset(np.arange(40, len(failures)))


def test_repair_fixes_unseen_failures_of_the_same_kind(setup):
    model, train, dc, de = setup
    cfg = RepairConfig.preset("deeprepair-paper", method="deeprepair", epochs=4, train_subset=0, batch_size=32, lr=0.02,
                       dc_repeat=3, precision="fp32", clusters=2)  # fmt: skip
    repaired, report = repair(model, train, dc, cfg, device=torch.device("cpu"))
    res = compare(model, repaired, _data(150, 2), failures=dc, heldout=de, device=torch.device("cpu"),
                  precision="fp32")
    assert res["de_before"] == 0.0
    assert res["de_after"] > 0.5, res
    assert res["clean_after"] > 0.8, res
    assert report["best_epoch"] >= 1 and len(report["clusters"]) == 2


def test_repair_is_deterministic_and_resumes(setup, tmp_path):
    model, train, dc, _ = setup
    cfg = RepairConfig.preset("deeprepair-paper", method="augmix", epochs=2, train_subset=60, batch_size=32, precision="fp32",
                       patience=10)  # fmt: skip
    a, _ = repair(model, train, dc, cfg, device=torch.device("cpu"))
    b, _ = repair(model, train, dc, cfg, device=torch.device("cpu"))
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    state = tmp_path / "r.state.safetensors"
    with pytest.raises(KeyboardInterrupt):
        def stop(n, calls=[0]):  # noqa: B006  interrupt in the second epoch
            calls[0] += n
            if calls[0] > 60 + len(dc):
                raise KeyboardInterrupt
        repair(model, train, dc, cfg, device=torch.device("cpu"), state_path=state, progress=stop)
    c, rep = repair(model, train, dc, cfg, device=torch.device("cpu"), state_path=state)
    assert [h["epoch"] for h in rep["history"]] == [1, 2]
    for k, v in a.state_dict().items():
        assert torch.equal(v, c.state_dict()[k]), k


def test_original_model_is_not_modified(setup):
    model, train, dc, _ = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    repair(model, train, dc, RepairConfig.preset("deeprepair-paper", method="finetune", epochs=1, train_subset=30, precision="fp32"),
           device=torch.device("cpu"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_repair_input_errors(setup):
    model, train, dc, _ = setup
    with pytest.raises(DeepRepairError, match="empty"):
        repair(model, train, dc.subset(np.arange(0)), device=torch.device("cpu"))
    with pytest.raises(DeepRepairError, match="resize"):
        repair(model, train, ImageSet(np.zeros((2, 8, 8, 3), np.uint8), np.array([0, 1]), CLASSES),
               device=torch.device("cpu"))
    with pytest.raises(DeepRepairError, match="method"):
        repair(model, train, dc, method="magic", device=torch.device("cpu"))
    with pytest.raises(DeepRepairError, match="unknown repair option"):
        repair(model, train, dc, epochz=3, device=torch.device("cpu"))


@pytest.mark.parametrize("method", ["fewshot", "cutout", "mixup", "cutmix", "sensei", "oracle"])
def test_every_baseline_runs_and_changes_the_model(setup, method):
    model, train, dc, _ = setup
    cfg = RepairConfig.preset("deeprepair-paper", method=method, epochs=1, train_subset=30, batch_size=16, precision="fp32",
                       oracle_corruption="fog" if method == "oracle" else None, fewshot_replay=10)
    repaired, report = repair(model, train, dc, cfg, device=torch.device("cpu"))
    assert report["history"] and report["finetune_images"] == (len(dc) + (10 if method == "fewshot" else 30))  # auto: none held out
    changed = any(not torch.equal(v, model.state_dict()[k]) for k, v in report_state(repaired).items())
    assert changed or report["best_epoch"] == 0


def report_state(m):
    return {k: v for k, v in m.state_dict().items() if v.is_floating_point()}


def test_sensei_search_is_at_least_as_hard_as_the_input(setup):
    from deeprepair.repair.methods import Sensei

    model, train, dc, _ = setup
    x = torch.from_numpy(np.array(train.x[:32])).permute(0, 3, 1, 2).float() / 255
    y = torch.from_numpy(train.y[:32])
    s = Sensei(lambda: __import__("contextlib").nullcontext(), n_examples=32)
    _, best = s.search(model, x, y, np.arange(32), np.random.default_rng(0))
    with torch.no_grad():
        base = torch.nn.functional.cross_entropy(model.eval()(x), y, reduction="none")
    assert torch.all(best >= base - 1e-6)


def test_oracle_needs_the_corruption_name(setup):
    model, train, dc, _ = setup
    with pytest.raises(DeepRepairError, match="oracle_corruption"):
        repair(model, train, dc, method="oracle", device=torch.device("cpu"))


def test_interpolation_endpoints_are_exact(setup):
    from deeprepair.repair.core import interpolate_weights

    model, train, dc, _ = setup
    repaired, _ = repair(model, train, dc, RepairConfig.preset("deeprepair-paper", method="finetune", epochs=1, train_subset=30,
                                                         precision="fp32"), device=torch.device("cpu"))
    for a, ref in ((0.0, model), (1.0, repaired)):
        m = interpolate_weights(model, repaired, a)
        for k, v in m.state_dict().items():
            if v.is_floating_point():
                assert torch.equal(v, ref.state_dict()[k]), (a, k)


def test_the_fisher_path_has_the_same_ends_and_moves_the_weights_the_original_relies_on_later(setup):
    """fisher_mix: a = 0 is the original and a = 1 the repair, bit for bit; with equal Fisher
    information it is the linear mix; a weight the original's Fisher marks important stays nearer
    the original than the linear mix puts it. A repair along it reports the path it walked."""
    from deeprepair.repair.protection import fisher_diag, fisher_mix, interpolate_weights

    model, train, dc, _ = setup
    repaired, report = repair(model, train, dc, RepairConfig(epochs=1, train_subset=60, batch_size=32, average=1,
                                                             precision="fp32", mix_path="fisher", max_break=0.5,
                                                             mix_bound="point", mix_steps=4),
                              device=torch.device("cpu"))
    assert report["interpolation"]["path"] == "fisher" and len(report["interpolation"]["grid"]) >= 1
    other = interpolate_weights(model, model, 1.0)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    f_o = fisher_diag(model, train.x, train.y, torch.device("cpu"), images=64)
    assert all(torch.isfinite(v).all() and (v >= 0).all() for v in f_o.values()) and any(v.sum() > 0 for v in f_o.values())
    for a, ref in ((0.0, model), (1.0, other)):
        for k, v in fisher_mix(model, other, f_o, f_o, a).state_dict().items():
            assert torch.equal(v, ref.state_dict()[k]), (a, k)
    same, lin = fisher_mix(model, other, f_o, f_o, 0.5).state_dict(), interpolate_weights(model, other, 0.5).state_dict()
    assert all(torch.allclose(same[k].float(), lin[k].float(), atol=1e-6) for k in f_o)
    heavy = {k: v + 1.0 for k, v in f_o.items()}  # the original's weights all matter more than the repair's
    light = {k: torch.zeros_like(v) for k, v in f_o.items()}
    mixed, so = fisher_mix(model, other, heavy, light, 0.5).state_dict(), model.state_dict()
    assert all((mixed[k] - so[k]).abs().sum() < (lin[k] - so[k]).abs().sum() for k in f_o if (lin[k] != so[k]).any())


def test_distilling_the_runs_trains_one_more_network_toward_their_mean_output(setup, monkeypatch):
    """combine="distill" (ELODI-style): after the K runs, one more run from the original is
    distilled toward their mean softened output; that run, not the weight average, is returned."""
    import deeprepair.repair.core as core

    model, train, dc, _ = setup
    cfg = RepairConfig(epochs=1, train_subset=60, batch_size=32, average=2, precision="fp32", interpolate=False,
                       selection="last")
    seen = []
    real = core.distill_loss
    monkeypatch.setattr(core, "distill_loss", lambda s, t, temp, w=None: seen.append(w is None) or real(s, t, temp, w))
    avg, rep_avg = repair(model, train, dc, cfg, device=torch.device("cpu"))
    assert rep_avg["averaging"]["averaged"] == 2 and seen and not any(seen)  # focal distillation only (weighted)
    n_avg = len(seen)
    dist, rep = repair(model, train, dc, dataclasses.replace(cfg, combine="distill"), device=torch.device("cpu"))
    assert rep["averaging"]["combined"] == "distill" and len(rep["averaging"]["val_scores"]) == 2
    extra = seen[n_avg:]
    assert sum(extra) == n_avg // 2 and len(extra) == 2 * n_avg  # the third run: focal + one ensemble term a step
    assert len(rep["history"]) == len(rep_avg["history"]) == 1
    sa, sd = avg.state_dict(), dist.state_dict()
    assert any(not torch.equal(sa[k], sd[k]) for k in sa if sa[k].is_floating_point())


def test_regression_control_options_run_and_report(setup):
    model, train, dc, de = setup
    cfg = RepairConfig.preset("deeprepair-paper", method="finetune", epochs=2, train_subset=60, batch_size=32, lr=0.02, precision="fp32",
                       distill=1.0, interpolate=True, max_break=0.001, dc_repeat=2)
    repaired, report = repair(model, train, dc, cfg, device=torch.device("cpu"))
    interp = report["interpolation"]
    assert interp is not None and 0 <= interp["alpha"] <= 1
    chosen = next(r for r in interp["grid"] if r["alpha"] == interp["alpha"])
    assert chosen["val_break"] <= 0.0 or interp["alpha"] == 0.0


def test_interpolation_search_reads_only_validation_data(setup, monkeypatch):
    """The weight mix is handed the split; it must never see De or a test set."""
    import deeprepair.repair.core as core
    import deeprepair.repair.protection as protection
    import deeprepair.repair.split as split

    model, train, dc, de = setup
    seen = []
    real_predict = core.predict

    def spy(m, x, **kw):
        seen.append(len(x))
        return real_predict(m, x, **kw)

    for module in (core, protection, split):
        monkeypatch.setattr(module, "predict", spy)
    repair(model, train, dc, RepairConfig.preset("deeprepair-paper", method="finetune", epochs=1, train_subset=30, precision="fp32",
                                          interpolate=True, selection="holdout"), device=torch.device("cpu"))
    assert len(de) not in (30, 4)
    assert set(seen) == {30, 4}  # the 30 held-back Dt images and 4 held-back Dc images, nothing else


@pytest.mark.parametrize("method", ["bn-adapt", "tent"])
def test_test_time_baselines_leave_the_original_untouched(setup, method):
    model, train, dc, _ = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapted, report = repair(model, train, dc, RepairConfig.preset("deeprepair-paper", method=method, epochs=1, precision="fp32"),
                             device=torch.device("cpu"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    out = adapted(torch.rand(4, 3, 16, 16))
    assert out.shape == (4, 3)
    assert report["history"] == []


@pytest.mark.parametrize("features", ["deep", "style"])
def test_gate_tells_failures_from_clean_images(setup, features):
    from deeprepair.repair.gate import LinearGate, _descriptors

    model = setup[0]
    desc = lambda d: _descriptors(model, d.x, features, torch.device("cpu"), "fp32")[0]  # noqa: E731
    gate = LinearGate(desc(_data(10, 0)).shape[1], squares=features == "style")
    gate.fit(desc(_data(200, 5)), desc(_data(200, 6, shift=0.6)))
    with torch.no_grad():
        sc, sf = gate(desc(_data(100, 7))), gate(desc(_data(100, 8, shift=0.6)))
    assert (sc < 0).float().mean() > 0.9 and (sf > 0).float().mean() > 0.9


@pytest.mark.parametrize("features", ["deep", "style"])
def test_gated_model_answers_each_input_with_one_network(setup, features):
    from deeprepair.repair.gate import GatedClassifier, LinearGate

    model, train, dc, _ = setup
    repaired, _ = repair(model, train, dc, RepairConfig.preset("deeprepair-paper", method="finetune", epochs=1, train_subset=30,
                                                         precision="fp32"), device=torch.device("cpu"))
    n = 64 + 3 + 2 if features == "deep" else 15
    x = torch.rand(6, 3, 16, 16)
    with torch.no_grad():
        gate = LinearGate(n, squares=features == "style")
        assert torch.equal(GatedClassifier(model, repaired, gate, 1e9, features).eval()(x), model(x))
        assert torch.equal(GatedClassifier(model, repaired, gate, -1e9, features).eval()(x), repaired(x))
        g = GatedClassifier(model, repaired, gate, 0.0, features).eval()
        torch.nn.init.normal_(g.gate.linear.weight)
        r = g.route(x)
        expect = torch.where(r[:, None], repaired(x), model(x))
        assert torch.allclose(g(x), expect, atol=1e-6)


def test_gated_repair_fixes_failures_and_keeps_clean_predictions(setup, monkeypatch, tmp_path):
    import deeprepair.repair.gate as gate_mod
    from deeprepair.models.checkpoint import load_checkpoint, save_checkpoint

    model, train, dc, de = setup
    seen = []
    real_desc, real_predict = gate_mod._descriptors, gate_mod.predict

    def spy_desc(m, x, *a, **kw):
        seen.append(len(x))
        return real_desc(m, x, *a, **kw)

    def spy_predict(m, x, **kw):
        seen.append(len(x))
        return real_predict(m, x, **kw)

    monkeypatch.setattr(gate_mod, "_descriptors", spy_desc)
    monkeypatch.setattr(gate_mod, "predict", spy_predict)
    cfg = RepairConfig.preset("deeprepair-paper", method="finetune", epochs=3, train_subset=0, batch_size=32, lr=0.05, precision="fp32",
                       dc_repeat=3, gate=True, max_break=0.001, selection="holdout", gate_bound="point")
    gated, report = repair(model, train, dc, cfg, device=torch.device("cpu"))
    # the gate is fitted on the 270 fine-tuning images of Dt and 36 of Dc, its threshold chosen on
    # the 30 held-back Dt and 4 held-back Dc images; De is never read
    assert set(seen) == {270, 36, 30, 4} and len(de) not in seen
    assert report["gate"]["val_break"] == 0.0 and report["gate"]["features"] == "deep"
    clean = _data(150, 2)
    res = compare(model, gated, clean, heldout=de, device=torch.device("cpu"), precision="fp32")
    raw = compare(model, gated.repaired, clean, heldout=de, device=torch.device("cpu"), precision="fp32")
    assert res["break_rate"] < raw["break_rate"], (res, raw)
    assert res["de_after"] > res["de_before"] + 0.3, res
    path = save_checkpoint(gated, tmp_path / "gated.safetensors",
                           {"arch": "resnet-20", "num_classes": 3, "input_size": [16, 16, 3], "gate": report["gate"]})
    loaded, _ = load_checkpoint(path)
    x = torch.rand(5, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), gated(x))
    with pytest.raises(DeepRepairError, match="gated"):
        repair(loaded, train, dc, RepairConfig.preset("deeprepair-paper", method="finetune"), device=torch.device("cpu"))


@pytest.mark.parametrize("method", ["bn-adapt", "tent"])
def test_test_time_baselines_answer_each_image_independently_of_its_batch(setup, method):
    model, train, dc, _ = setup
    adapted, _ = repair(model, train, dc, RepairConfig.preset("deeprepair-paper", method=method, epochs=1, precision="fp32"),
                        device=torch.device("cpu"))
    x = torch.rand(8, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(adapted(x)[:2], adapted(x[:2]), atol=1e-5)
        assert not adapted.training


def test_gate_calibration_images_are_left_out_of_fine_tuning_and_validation(setup):
    from deeprepair.repair.core import make_split

    _, train, dc, _ = setup
    base = RepairConfig.preset("deeprepair-paper", method="finetune", train_subset=100, gate_calibration=0)
    a = make_split(train, dc, base)
    b = make_split(train, dc, dataclasses.replace(base, gate_calibration=150))
    assert a.calibration is None and np.array_equal(a.x, b.x) and np.array_equal(a.val_train.x, b.val_train.x)
    # 300 images: 30 validation, 100 fine-tuning, so at most 170 are left for calibration
    assert len(b.calibration) == 150
    rows = lambda x: {r.tobytes() for r in x}  # noqa: E731
    assert not rows(b.calibration.x) & (rows(b.x) | rows(b.val_train.x))
    with pytest.raises(DeepRepairError, match="gate_bound"):
        RepairConfig.preset("deeprepair-paper", gate_bound="upper").check(10)


def test_dc_share_repeats_few_failures_to_the_share_and_leaves_many_alone(setup):
    from deeprepair.repair.core import make_split

    cfg = RepairConfig(dc_share=1 / 12)
    assert cfg.failure_copies(10000, 900) == 1  # the default's own share at 1,000 failures: unchanged
    assert cfg.failure_copies(10000, 100) == 9 and cfg.failure_copies(10000, 90) == 10
    assert dataclasses.replace(cfg, dc_repeat=3).failure_copies(10000, 900) == 3  # never below --dc-repeat
    assert RepairConfig().failure_copies(10000, 100) == 1  # 0: exactly --dc-repeat
    _, train, dc, _ = setup
    base = RepairConfig.preset("deeprepair-paper", method="finetune", train_subset=100, selection="last")
    one, shared = make_split(train, dc, base), make_split(train, dc, dataclasses.replace(base, dc_share=0.5))
    n = len(dc)
    assert one.is_failure.sum() == n and shared.is_failure.sum() == n * round(100 / n)
    assert np.array_equal(shared.x[~shared.is_failure], one.x[~one.is_failure])
    assert all(np.array_equal(shared.x[shared.is_failure][k * n:(k + 1) * n], dc.x) for k in range(round(100 / n)))
    with pytest.raises(DeepRepairError, match="dc_share"):
        RepairConfig(dc_share=1.0).check(10)


def test_wilson_bound_makes_the_gate_threshold_more_cautious(setup):
    from deeprepair.repair.core import make_split
    from deeprepair.repair.gate import fit_gate

    model, train, dc, _ = setup
    cfg = RepairConfig.preset("deeprepair-paper", method="finetune", epochs=1, train_subset=0, batch_size=32, lr=0.2, precision="fp32")
    repaired, _ = repair(model, train, dc, cfg, device=torch.device("cpu"))
    split = make_split(train, dc, cfg)
    found = {}
    for bound in ("point", "wilson"):
        _, info = fit_gate(model, repaired, split, 0.05, torch.device("cpu"), "fp32", bound=bound)
        assert info["bound"] == bound and info["val_break_upper"] >= info["val_break"]
        found[bound] = info
    # 30 validation images: a 95% upper bound below 5% needs zero breaks and still exceeds it, so
    # the Wilson rule routes nothing, while the point estimate may route
    assert found["wilson"]["routed_clean"] == 0.0 and found["wilson"]["routed_failures"] == 0.0
    assert found["point"]["val_break"] <= 0.05


def test_selection_last_trains_on_every_failure_and_keeps_the_final_epoch(setup):
    from deeprepair.repair.core import make_split

    model, train, dc, _ = setup
    base = RepairConfig.preset("deeprepair-paper", method="finetune", epochs=2, train_subset=60, batch_size=32, lr=0.02, precision="fp32",
                        selection="holdout")
    held = make_split(train, dc, base)
    last = make_split(train, dc, dataclasses.replace(base, selection="last"))
    assert len(held.val_failures) == 4 and len(held.dc_fit) == 36
    assert last.val_failures is None and len(last.dc_fit) == len(dc)
    _, report = repair(model, train, dc, dataclasses.replace(base, selection="last"), device=torch.device("cpu"))
    assert report["selection"] == "last" and report["best_epoch"] == 2 and report["failures_used"] == len(dc)


def test_auto_selection_holds_out_failures_only_when_there_are_enough():
    cfg = RepairConfig.preset("deeprepair-paper", selection="auto", min_val_failures=20)
    assert cfg.resolved_selection(100) == "last" and cfg.resolved_selection(200) == "holdout"
    default = RepairConfig.preset("deeprepair-paper")  # auto: no failures held out below 200, the paper's holdout from 200 on
    assert default.resolved_selection(25) == "last" and default.resolved_selection(1000) == "holdout"
    with pytest.raises(DeepRepairError, match="selection"):
        RepairConfig.preset("deeprepair-paper", selection="best").check(10)


def test_gate_without_held_out_failures_still_bounds_the_break_rate(setup):
    from deeprepair.repair.core import make_split
    from deeprepair.repair.gate import fit_gate

    model, train, dc, _ = setup
    cfg = RepairConfig.preset("deeprepair-paper", method="finetune", epochs=1, train_subset=0, batch_size=32, lr=0.2, precision="fp32",
                       selection="last")
    repaired, _ = repair(model, train, dc, cfg, device=torch.device("cpu"))
    _, info = fit_gate(model, repaired, make_split(train, dc, cfg), 0.05, torch.device("cpu"), "fp32")
    assert info["threshold_failures"].startswith("training") and info["val_break"] <= 0.05


def _brute_force_threshold(sc, cb, ca, sf, fb, fa, max_break, bound, heldout=None):
    """The threshold search as first written: one pass over every candidate."""
    from deeprepair.bounds import wilson

    rows = []
    for t in np.unique(np.concatenate([sc, sf, [np.inf, -np.inf]])):
        right_c, right_f = np.where(sc > t, ca, cb), np.where(sf > t, fa, fb)
        broke = int((cb & ~right_c).sum())
        rate = broke / max(cb.sum(), 1)
        upper = wilson(broke, int(cb.sum()))[1]
        ok = (upper if bound == "wilson" else rate) <= max_break
        if heldout is not None:
            ok = ok and right_c[heldout].sum() >= cb[heldout].sum()
        rows.append((ok or not np.isfinite(t) and t > 0, right_f.mean(), -rate, t))
    return max(r for r in rows if r[0])[3]


def _brute_force_keep(sc, cb, ca, sf, fb, fa, max_break, bound, keep):
    """``keep`` as specified: the highest allowed threshold whose validation repair is >= keep
    times the repair with everything routed, else the plain choice."""
    from deeprepair.bounds import wilson

    def allowed(t):
        broke = int((cb & ~np.where(sc > t, ca, cb)).sum())
        rate = broke / max(cb.sum(), 1)
        return t == np.inf or (wilson(broke, int(cb.sum()))[1] if bound == "wilson" else rate) <= max_break

    def repair(t):
        return int(np.where(sf > t, fa, fb).sum()) - int(fb.sum())

    ts = np.unique(np.concatenate([sc, sf, [np.inf, -np.inf]]))
    enough = [t for t in ts if allowed(t) and repair(t) >= keep * repair(-np.inf)]
    return max(enough) if enough else _brute_force_threshold(sc, cb, ca, sf, fb, fa, max_break, bound)


@pytest.mark.parametrize("bound", ["point", "wilson"])
@pytest.mark.parametrize("with_heldout", [False, True])
def test_choose_threshold_matches_a_brute_force_search(bound, with_heldout):
    from deeprepair.repair.gate import choose_threshold

    rng = np.random.default_rng(3)
    for _ in range(20):
        n, m = int(rng.integers(400, 900)), int(rng.integers(5, 60))
        sc, sf = rng.normal(0, 1, n).round(2), rng.normal(1.5, 1, m).round(2)  # rounded: ties between scores
        cb = rng.random(n) < 0.95
        ca = np.where(sc > 0.5, rng.random(n) < 0.9, cb)  # the repaired model errs more on routed clean images
        fb, fa = np.zeros(m, bool), rng.random(m) < 0.7
        heldout = rng.random(n) < 0.5 if with_heldout else None
        got = choose_threshold(sc, cb, ca, sf, fb, fa, 0.02, bound, heldout)
        assert got["threshold"] == _brute_force_threshold(sc, cb, ca, sf, fb, fa, 0.02, bound, heldout)
        if with_heldout:
            routed = sc > got["threshold"]
            assert np.where(routed, ca, cb)[heldout].sum() >= cb[heldout].sum()
            assert got["heldout_clean_change"] >= 0


@pytest.mark.parametrize("keep", [0.5, 0.9, 1.0])
def test_choose_threshold_keep_routes_least_for_that_share_of_the_repair(keep):
    from deeprepair.repair.gate import choose_threshold

    rng = np.random.default_rng(4)
    for _ in range(10):
        n, m = int(rng.integers(400, 900)), int(rng.integers(5, 60))
        sc, sf = rng.normal(0, 1, n).round(2), rng.normal(1.5, 1, m).round(2)
        cb = rng.random(n) < 0.95
        ca = np.where(sc > 0.5, rng.random(n) < 0.9, cb)
        fb, fa = np.zeros(m, bool), rng.random(m) < 0.7
        plain = choose_threshold(sc, cb, ca, sf, fb, fa, 0.02, "wilson")
        got = choose_threshold(sc, cb, ca, sf, fb, fa, 0.02, "wilson", keep=keep)
        assert got["threshold"] == _brute_force_keep(sc, cb, ca, sf, fb, fa, 0.02, "wilson", keep)
        assert got["threshold"] >= plain["threshold"]  # never routes more than the plain rule
        assert got["val_break"] <= plain["val_break"]
    with pytest.raises(ValueError, match="keep"):
        choose_threshold(sc, cb, ca, sf, fb, fa, 0.02, keep=1.5)


def test_gate_holdout_keeps_clean_accuracy_on_the_heldout_images(setup):
    from deeprepair.repair.core import make_split
    from deeprepair.repair.gate import fit_gate

    model, train, dc, _ = setup
    cfg = RepairConfig.preset("deeprepair-paper", method="finetune", epochs=1, train_subset=0, batch_size=32, lr=0.2, precision="fp32",
                       selection="last")
    repaired, _ = repair(model, train, dc, cfg, device=torch.device("cpu"))
    held = _data(200, 5)  # clean images the original model never saw
    gated, info = fit_gate(model, repaired, make_split(train, dc, cfg), 0.2, torch.device("cpu"), "fp32",
                           bound="point", clean_heldout=held)
    assert info["heldout_clean_images"] == 200 and info["heldout_clean_change"] >= 0
    before = (predict(model, held.x, precision="fp32") == held.y).mean()
    after = (predict(gated.eval(), held.x, precision="fp32") == held.y).mean()
    assert after >= before


def test_gate_says_when_no_training_images_are_left_to_calibrate_on(setup):
    model, train, dc, _ = setup
    cfg = RepairConfig.preset("deeprepair-paper", method="finetune", epochs=1, train_subset=0, batch_size=32, precision="fp32", gate=True)
    with pytest.warns(UserWarning, match="no training images were left out"):
        _, report = repair(model, train, dc, cfg, device=torch.device("cpu"))
    assert "calibration_note" in report["gate"]


def test_mlp_router_on_deep_and_style_features_saves_loads_and_keeps_the_global_rng(setup, tmp_path):
    from deeprepair.models.checkpoint import load_checkpoint, save_checkpoint
    from deeprepair.repair.gate import MLPGate

    model, train, dc, _ = setup
    cfg = RepairConfig.preset("deeprepair-paper", method="finetune", epochs=1, train_subset=0, batch_size=32, lr=0.05, precision="fp32",
                       dc_repeat=3, gate=True, gate_router="mlp", gate_features="deep+style", selection="holdout",
                       max_break=0.2)
    gated, report = repair(model, train, dc, cfg, device=torch.device("cpu"))
    assert isinstance(gated.gate, MLPGate) and report["gate"]["router"] == "mlp"
    assert report["gate"]["features"] == "deep+style" and report["gate"]["n_features"] > 14  # deep (>= 14) + style
    path = save_checkpoint(gated, tmp_path / "gated.safetensors",
                           {"arch": "resnet-20", "num_classes": 3, "input_size": [16, 16, 3], "gate": report["gate"]})
    loaded, _ = load_checkpoint(path)
    x = torch.rand(6, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), gated(x)) and torch.equal(loaded.route(x), gated.route(x))
    # fitting is seeded and leaves the caller's random stream alone
    clean, fails = torch.randn(50, 4), torch.randn(20, 4) + 2
    torch.manual_seed(7)
    a = MLPGate(4).fit(clean, fails, seed=3)
    after_a = torch.rand(1)
    torch.manual_seed(7)
    b = MLPGate(4).fit(clean, fails, seed=3)
    assert torch.equal(torch.rand(1), after_a)
    assert torch.equal(a(clean), b(clean)) and (a(fails).mean() > a(clean).mean())
    with pytest.raises(DeepRepairError, match="gate_router"):
        RepairConfig.preset("deeprepair-paper", gate_router="forest").check(10)

# ------------------------------------------- touching less, protecting what was right
# (tune; focal distillation, L2 pull; unlabelled field images; the presets that combine them)

CPU = torch.device("cpu")
SMALL = dict(epochs=1, train_subset=60, batch_size=32, lr=0.05, precision="fp32", method="finetune")


def test_first_block_of_registry_models_is_the_stem_and_first_stage():
    r20 = Classifier(create_model("resnet-20", 10))
    names = first_block(r20, (32, 32, 3))
    assert "net.conv1" in names and "net.bn1" in names
    assert {"net.blocks.2.conv2", "net.blocks.2.bn2"} <= set(names)
    assert not any(n.startswith(("net.blocks.3", "net.fc")) for n in names)
    wrn = Classifier(create_model("wrn-16-2", 10))
    wn = first_block(wrn, (32, 32, 3))
    assert wn and not any("fc" in n or "linear" in n for n in wn) and len(wn) < len(tuned_modules(wrn, "all", (32, 32, 3)))


def test_first_block_rule_on_a_user_model_whose_stem_downsamples_at_once():
    """An ImageNet-style stem (stride-2 conv, then a stage at that size) stays with its stage."""
    net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, 1, 1), nn.ReLU(),  # stage 1 keeps 16x16
                        nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),  # stage 2 halves it
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3))
    assert first_block(Classifier(net), (32, 32, 3)) == ["net.0", "net.1", "net.3"]


@pytest.mark.parametrize("tune", ["first-block", "bn", "head"])
def test_tune_leaves_every_other_parameter_and_buffer_bit_identical(setup, tune):
    model, train, dc, _ = setup
    repaired, report = repair(model, train, dc, RepairConfig.preset("deeprepair-paper", tune=tune, **SMALL), device=CPU)
    tuned = set(tuned_modules(model, tune, train.x.shape[1:]))
    before, after = dict(model.named_modules()), dict(repaired.named_modules())
    changed = 0
    for name, m in before.items():
        own = {k: v for k, v in m.state_dict().items() if "." not in k}  # its own parameters and buffers
        for k, v in own.items():
            same = torch.equal(v, after[name].state_dict()[k])
            if name in tuned:
                changed += not same
            else:
                assert same, f"{name}.{k} changed although --tune {tune} does not tune it"
    assert changed > 0 and 0 < report["tuned_parameters"] < sum(p.numel() for p in model.parameters())


def test_recomputing_batchnorm_statistics_after_averaging_leaves_the_untuned_layers_as_they_were(setup):
    """After averaging first-block runs, only the first block's BatchNorm statistics may be
    recomputed: a frozen layer keeps the original's (the --tune promise)."""
    from deeprepair.repair.protection import recalibrate_bn

    model, train, _, _ = setup
    net = copy.deepcopy(model)
    tuned = set(tuned_modules(net, "first-block", train.x.shape[1:]))
    recalibrate_bn(net, train.x, CPU, only=tuned)
    before, after = dict(model.named_modules()), dict(net.named_modules())
    bns = [n for n, m in before.items() if isinstance(m, nn.BatchNorm2d)]
    assert any(n in tuned for n in bns) and any(n not in tuned for n in bns)
    for n in bns:
        same = torch.equal(before[n].running_var, after[n].running_var)
        assert same == (n not in tuned), f"{n}: recomputed {not same}, tuned {n in tuned}"
    assert not net.training


@pytest.mark.parametrize("how", ["kept", "recompute"])
def test_averaged_batchnorm_statistics_are_recomputed_only_when_asked(setup, monkeypatch, how):
    """The default keeps the averaged statistics even when the average scores below the better
    run; ``average_bn="recompute"`` recomputes them then."""
    from types import SimpleNamespace

    from deeprepair.repair import protection

    model, train, _, _ = setup
    runs = [SimpleNamespace(best_epoch=1, best_score=0.9, best_state=copy.deepcopy(model.state_dict()))
            for _ in range(2)]
    monkeypatch.setattr(protection, "validation_score", lambda *a, **k: {"val_score": 0.5})  # the average scores lower
    called = []
    monkeypatch.setattr(protection, "recalibrate_bn", lambda *a, **k: called.append(1))
    info = protection.combine_runs(copy.deepcopy(model), runs, SimpleNamespace(x=train.x),
                                   RepairConfig(average_bn=how), CPU, "fp32")
    assert info["averaged"] == 2 and not info["bn_recomputed"] and len(called) == (how == "recompute")


def test_focal_weights_are_zero_where_the_original_is_wrong():
    teacher = torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    y = torch.tensor([0, 0, 2, 1])
    w = focal_weights(teacher, y)
    assert w.tolist() == [1.0, 0.0, 1.0, 0.0]
    student = torch.randn(4, 3)
    # inputs the original got wrong contribute nothing, whatever the student says there
    other = student.clone()
    other[[1, 3]] = torch.randn(2, 3) * 10
    assert torch.allclose(distill_loss(student, teacher, 2.0, w), distill_loss(other, teacher, 2.0, w))
    assert distill_loss(student, teacher, 2.0) != distill_loss(other, teacher, 2.0)


def test_focal_distillation_and_l2_pull_change_the_repair(setup):
    model, train, dc, _ = setup
    plain, _ = repair(model, train, dc, RepairConfig.preset("deeprepair-paper", **SMALL), device=CPU)
    focal, _ = repair(model, train, dc, RepairConfig.preset("deeprepair-paper", distill=1.0, distill_focus="right", **SMALL), device=CPU)
    pulled, _ = repair(model, train, dc, RepairConfig.preset("deeprepair-paper", l2_pull=5.0, **SMALL), device=CPU)
    dist = lambda m: sum(((a - b) ** 2).sum() for a, b in zip(m.parameters(), model.parameters())).item()  # noqa: E731
    assert dist(pulled) < dist(plain)
    assert dist(focal) != dist(plain)


def test_field_images_need_no_labels_and_are_used(setup):
    model, train, dc, de = setup
    field = de.x[:30]  # an array of images: nothing carries a label
    with_field, report = repair(model, train, dc, RepairConfig.preset("deeprepair-paper", **SMALL), device=CPU, field=field)
    without, _ = repair(model, train, dc, RepairConfig.preset("deeprepair-paper", **SMALL), device=CPU)
    assert report["field_images"] == 30
    assert any(not torch.equal(a, b) for a, b in zip(with_field.state_dict().values(), without.state_dict().values()))


def test_bad_field_and_options_are_one_line_errors(setup):
    model, train, dc, _ = setup
    with pytest.raises(DeepRepairError, match="field images"):
        repair(model, train, dc, RepairConfig.preset("deeprepair-paper", **SMALL), device=CPU, field=np.zeros((3, 8, 8, 3), np.uint8))
    for bad in (dict(tune="last-layer"), dict(distill_focus="wrong"), dict(l2_pull=-1.0), dict(distill=float("nan"))):
        with pytest.raises(DeepRepairError):
            repair(model, train, dc, RepairConfig.preset("deeprepair-paper", **{**SMALL, **bad}), device=CPU)


def test_presets_are_named_recipes():
    safe = RepairConfig.preset("deeprepair+distill+gate", seed=3)
    assert safe.gate and safe.distill == 1.0 and safe.seed == 3
    with pytest.raises(DeepRepairError, match="preset"):
        RepairConfig.preset("nope")


def test_the_default_is_the_protected_fine_tune_and_deeprepair_paper_is_the_papers_method():
    from deeprepair.repair_config import DEFAULT_PRESET

    assert DEFAULT_PRESET == "finetune+focal+avg3+keptbn+certified" and RepairConfig() == RepairConfig.preset(DEFAULT_PRESET)
    d, p = RepairConfig(), RepairConfig.preset("deeprepair-paper")
    assert (d.method, d.distill, d.distill_focus, d.interpolate) == ("finetune", 1.0, "right", True)
    assert (d.average, d.average_bn, d.mix_bound) == (3, "kept", "clopper-pearson") and p.average == 1
    assert RepairConfig.preset("finetune+focal+avg2+certified").average_bn == "recompute"  # the previous default
    assert (p.method, p.distill, p.distill_focus, p.interpolate, p.gate) == ("deeprepair", 0.0, "all", False, False)
    safe = RepairConfig.preset("deeprepair+distill+gate")  # --safe, as measured in regressions.md section 11
    assert safe.gate and not safe.interpolate and safe.distill_focus == "all" and safe.method == "deeprepair"


def test_default_repair_certifies_its_break_limit_on_the_validation_images(setup):
    """The default recipe's promise: the chosen mix's exact one-sided 95% bound of the break rate on
    the calibration images (--val: never trained on) is <= max_break, every smaller mix passed too
    (fixed-sequence testing), and the paper's recipe at the same budget reports its break too."""
    from deeprepair.bounds import clopper_pearson_upper

    model, train, dc, _ = setup
    val = _data(400, 7)  # labelled images the model never trained on
    small = {**SMALL, "lr": 0.2, "average": 2, "max_break": 0.05}
    protected, report = repair(model, train, dc, RepairConfig(**small), device=CPU, val=val)
    mix = report["interpolation"]
    chosen = next(r for r in mix["grid"] if r["alpha"] == mix["alpha"])
    assert chosen["break_bound"] <= 0.05 and mix["bound"] == "clopper-pearson"
    assert chosen["break_bound"] == pytest.approx(clopper_pearson_upper(chosen["breaks"], chosen["right_before"])
                                                  if mix["alpha"] > 0 else 0.0)
    assert all(r["passed"] for r in mix["grid"] if r["alpha"] <= mix["alpha"])
    assert report["calibration"]["source"] == "val" and report["calibration"]["images"] == 400
    assert report["averaging"]["runs"] == 2 and len(report["averaging"]["val_scores"]) == 2
    _, plain = repair(model, train, dc, RepairConfig.preset("deeprepair-paper", **{**SMALL, "lr": 0.2}), device=CPU)
    assert plain["interpolation"] is None and "val_break" in plain["validation_final"]


def test_a_limit_no_mix_can_certify_keeps_the_original_and_says_so(setup):
    model, train, dc, _ = setup
    val = _data(400, 7)
    cfg = RepairConfig(**{**SMALL, "lr": 0.5, "average": 1, "max_break": 0.008})  # 0 breaks of ~390 bound ~0.77%
    out, report = repair(model, train, dc, cfg, device=CPU, val=val)
    if report["interpolation"]["alpha"] == 0:
        assert "original is kept" in report["kept_original"]
        assert all(torch.equal(a, b) for a, b in zip(out.state_dict().values(), model.state_dict().values()))
    else:  # a mix that broke none of the validation images passed: still certified
        chosen = next(r for r in report["interpolation"]["grid"] if r["alpha"] == report["interpolation"]["alpha"])
        assert chosen["breaks"] == 0 and chosen["break_bound"] <= 0.008


def test_a_validation_set_too_small_for_the_limit_is_refused_with_the_size_it_needs(setup):
    model, train, dc, _ = setup
    with pytest.raises(DeepRepairError, match="needs at least 299"):
        repair(model, train, dc, RepairConfig(**SMALL), device=CPU, val=_data(200, 7))
    with pytest.raises(DeepRepairError, match="held-back training images"):  # 30 held back of 300
        repair(model, train, dc, RepairConfig(**SMALL), device=CPU)


def test_labelled_field_photos_keep_the_original_when_the_repair_is_not_better_there(setup):
    model, train, dc, de = setup
    val = _data(400, 7)
    cfg = RepairConfig(**{**SMALL, "lr": 0.2, "average": 1, "max_break": 0.05})
    clean_field = _data(200, 8)  # field photos like the training data: the repair cannot be better there
    out, report = repair(model, train, dc, cfg, device=CPU, val=val, field_eval=clean_field)
    fc = report["field_check"]
    assert fc["images"] == 200 and fc["change_lower_bound"] <= (fc["won"] - fc["lost"]) / 200
    if not fc["passed"]:
        assert report["kept_original"] == "no repair helped on your field photos; the original is kept"
        assert all(torch.equal(a, b) for a, b in zip(out.state_dict().values(), model.state_dict().values()))
    shifted_field = ImageSet(de.x, de.y, de.classes)  # the failures' own kind: the repair is better there
    _, report = repair(model, train, dc, cfg, device=CPU, val=val, field_eval=shifted_field)
    if report["interpolation"]["alpha"] > 0:
        assert report["field_check"]["won"] > report["field_check"]["lost"]


def test_pseudo_labels_are_kept_only_where_the_weak_view_is_confident():
    from deeprepair.repair.losses import pseudo_label_loss

    weak = torch.tensor([[9.0, 0.0, 0.0], [0.1, 0.0, 0.0]])  # confident class 0; unsure
    strong = torch.randn(2, 3)
    loss, kept = pseudo_label_loss(weak, strong, 0.95)
    assert kept == 0.5
    assert torch.allclose(loss, nn.functional.cross_entropy(strong[:1], torch.tensor([0])) / 2)
    other = strong.clone()
    other[1] = torch.randn(3) * 10  # the unsure image's strong view contributes nothing
    assert torch.allclose(pseudo_label_loss(weak, other, 0.95)[0], loss)
    assert pseudo_label_loss(weak, strong, 1.0)[1] == 0.0


def test_field_images_taught_with_their_own_answers_need_no_labels(setup):
    model, train, dc, de = setup
    field = de.x[:30]
    cfg = RepairConfig.preset("deeprepair-paper", field_labels="self", field_threshold=0.5, **SMALL)
    a, report = repair(model, train, dc, cfg, device=CPU, field=field)
    b, _ = repair(model, train, dc, cfg, device=CPU, field=field)
    teacher, _ = repair(model, train, dc, RepairConfig.preset("deeprepair-paper", **SMALL), device=CPU, field=field)
    assert report["field_images"] == 30 and report["config"]["field_labels"] == "self"
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))  # seeded
    assert any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), teacher.state_dict().values()))
    for bad in (dict(field_labels="mine"), dict(field_threshold=0.0)):
        with pytest.raises(DeepRepairError, match="field_"):
            repair(model, train, dc, RepairConfig.preset("deeprepair-paper", **{**SMALL, **bad}), device=CPU, field=field)


def test_the_fisher_path_refuses_a_model_without_per_image_gradients_in_one_line():
    from deeprepair.repair.protection import fisher_diag

    scripted = torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 14 * 14, 3)))
    with pytest.raises(DeepRepairError, match="--mix-path linear"):
        fisher_diag(scripted, np.zeros((4, 16, 16, 3), np.uint8), np.zeros(4, int), torch.device("cpu"), images=4)
