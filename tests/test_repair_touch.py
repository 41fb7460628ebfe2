"""Repair that touches less (``tune``) and protects what was right (focal distillation, L2 pull,
unlabelled field images): issue 22's building blocks, on small synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from deeprepair.data import ImageSet
from deeprepair.errors import DeepRepairError
from deeprepair.models import Classifier, create_model
from deeprepair.repair import RepairConfig, repair
from deeprepair.repair.losses import distill_loss, focal_weights
from deeprepair.repair.tuning import first_block, tuned_modules

from test_repair import _data, setup  # noqa: F401  (the shared fixture: model, train, Dc, De)

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
def test_tune_leaves_every_other_parameter_and_buffer_bit_identical(setup, tune):  # noqa: F811
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


def test_focal_distillation_and_l2_pull_change_the_repair(setup):  # noqa: F811
    model, train, dc, _ = setup
    plain, _ = repair(model, train, dc, RepairConfig.preset("deeprepair-paper", **SMALL), device=CPU)
    focal, _ = repair(model, train, dc, RepairConfig.preset("deeprepair-paper", distill=1.0, distill_focus="right", **SMALL), device=CPU)
    pulled, _ = repair(model, train, dc, RepairConfig.preset("deeprepair-paper", l2_pull=5.0, **SMALL), device=CPU)
    dist = lambda m: sum(((a - b) ** 2).sum() for a, b in zip(m.parameters(), model.parameters())).item()  # noqa: E731
    assert dist(pulled) < dist(plain)
    assert dist(focal) != dist(plain)


def test_field_images_need_no_labels_and_are_used(setup):  # noqa: F811
    model, train, dc, de = setup
    field = de.x[:30]  # an array of images: nothing carries a label
    with_field, report = repair(model, train, dc, RepairConfig.preset("deeprepair-paper", **SMALL), device=CPU, field=field)
    without, _ = repair(model, train, dc, RepairConfig.preset("deeprepair-paper", **SMALL), device=CPU)
    assert report["field_images"] == 30
    assert any(not torch.equal(a, b) for a, b in zip(with_field.state_dict().values(), without.state_dict().values()))


def test_bad_field_and_options_are_one_line_errors(setup):  # noqa: F811
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

    assert DEFAULT_PRESET == "finetune+focal+avg3+certified" and RepairConfig() == RepairConfig.preset(DEFAULT_PRESET)
    d, p = RepairConfig(), RepairConfig.preset("deeprepair-paper")
    assert (d.method, d.distill, d.distill_focus, d.interpolate) == ("finetune", 1.0, "right", True)
    assert (d.average, d.mix_bound) == (3, "clopper-pearson") and p.average == 1
    assert (p.method, p.distill, p.distill_focus, p.interpolate, p.gate) == ("deeprepair", 0.0, "all", False, False)
    safe = RepairConfig.preset("deeprepair+distill+gate")  # --safe, as measured in regressions.md section 11
    assert safe.gate and not safe.interpolate and safe.distill_focus == "all" and safe.method == "deeprepair"


def test_default_repair_certifies_its_break_limit_on_the_validation_images(setup):  # noqa: F811
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


def test_a_limit_no_mix_can_certify_keeps_the_original_and_says_so(setup):  # noqa: F811
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


def test_a_validation_set_too_small_for_the_limit_is_refused_with_the_size_it_needs(setup):  # noqa: F811
    model, train, dc, _ = setup
    with pytest.raises(DeepRepairError, match="needs at least 299"):
        repair(model, train, dc, RepairConfig(**SMALL), device=CPU, val=_data(200, 7))
    with pytest.raises(DeepRepairError, match="held-back training images"):  # 30 held back of 300
        repair(model, train, dc, RepairConfig(**SMALL), device=CPU)


def test_labelled_field_photos_keep_the_original_when_the_repair_is_not_better_there(setup):  # noqa: F811
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


def test_field_images_taught_with_their_own_answers_need_no_labels(setup):  # noqa: F811
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
