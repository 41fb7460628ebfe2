"""The studies that used to be scripts are bench profiles: repair (the comparison at equal
budget), rq1 (RQ1 and Table 1), fewdc (De against |Dc|, one run per size) and mixed (failures of
unknown type)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from deeprepair.bench import list_cells, load_profile, recipe_options
from deeprepair.bench.profile import cell_hash, expand
from deeprepair.cli import main
from deeprepair.errors import DeepRepairError

REPO = Path(__file__).resolve().parents[1]


# cells: the original once per corruption, every other method once per (corruption, seed)
@pytest.mark.parametrize("name, runs, cells", [("repair", 1, 5 + 6 * 5 * 3), ("rq1", 1, 4 * 19),
                                               ("fewdc", 5, 5 + 3 * 5 * 3), ("mixed", 1, 16 + 3 * 16 * 3)])
def test_study_profiles_load_and_list_their_cells(name, runs, cells):
    prof = load_profile(name)
    assert all(recipe_options(m)["method"] for m in prof["methods"] + prof["ablation"] if m != "original")
    parts = expand(prof)
    assert len(parts) == runs and all(len(list_cells(p)) == cells for _, p in parts)


def test_dc_size_is_in_the_hash_only_when_set():
    """Existing profiles' cells keep their hashes (the committed cpu cells are still found)."""
    prof = load_profile("cpu")
    cell = json.loads(next((REPO / "benchmarks" / "results" / "cpu" / "cells").glob("resnet-20__fog__augmix__*.json"))
                      .read_text())
    assert cell_hash(prof, "resnet-20", "fog", "augmix", cell["seed"], cell["model"]) == cell["hash"]
    sizes = {cell_hash(p, "resnet-20", "fog", "augmix", 0, "m") for _, p in expand(load_profile("fewdc"))}
    assert len(sizes) == 5


def test_dc_sizes_must_be_positive_whole_numbers(tmp_path):
    bad = {**load_profile("smoke"), "dc_sizes": [10, 0]}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(DeepRepairError, match="dc_sizes"):
        load_profile(str(tmp_path / "bad.json"))


def test_a_dc_size_sweep_runs_one_folder_per_size(tmp_path, data_dir):
    prof = {**load_profile("smoke"), "name": "sweep", "corruptions": ["fog"], "methods": ["original", "finetune"],
            "ablation": [], "dc_sizes": [10, 40], "collect": 40,
            "repair": {"epochs": 1, "train_subset": 30, "lr": 0.01, "batch_size": 32}}
    (tmp_path / "sweep.json").write_text(json.dumps(prof))
    out = tmp_path / "bench"
    assert main(["bench", "--profile", str(tmp_path / "sweep.json"), "--data", str(data_dir), "--out", str(out),
                 "--quiet"]) == 0
    mined = sorted((out / "mine" / "resnet-20").glob("*.npz"))
    assert mined and (out / "dc10" / "mine").resolve() == (out / "mine").resolve()
    for n in (10, 40):
        cells = [json.loads(p.read_text()) for p in sorted((out / f"dc{n}" / "cells").glob("*.json"))]
        assert sorted(c["method"] for c in cells) == ["finetune", "original"]
        assert json.loads((out / f"dc{n}" / "profile.json").read_text())["dc_size"] == n
        assert (out / f"dc{n}" / "report.md").is_file()
    small = json.loads(next((out / "dc10" / "cells").glob("*finetune*.json")).read_text())
    full = json.loads(next((out / "dc40" / "cells").glob("*finetune*.json")).read_text())
    assert small["hash"] != full["hash"] and small["collected"] == 10 < full["collected"]
    curve = (out / "report.md").read_text()  # the curve over the runs: one column per size
    assert "| 10 collected | 40 collected |" in curve and re.search(r"\| resnet-20 \| finetune \| \d", curve)
    assert (out / "figures" / "fewdc-curve.png").stat().st_size > 1000
    (out / "report.md").unlink()
    assert main(["report", str(out), "--quiet"]) == 0 and (out / "report.md").read_text() == curve


def test_a_mixed_failure_set_is_drawn_across_the_other_corruptions(tmp_path, data_dir):
    prof = {**load_profile("smoke"), "name": "mixedt", "corruptions": ["gaussian_noise", "fog", "mixed"],
            "methods": ["original", "finetune"], "ablation": [], "collect": 20,
            "repair": {"epochs": 1, "train_subset": 30, "lr": 0.01, "batch_size": 32}}
    (tmp_path / "mixed.json").write_text(json.dumps(prof))
    out = tmp_path / "bench"
    assert main(["bench", "--profile", str(tmp_path / "mixed.json"), "--data", str(data_dir), "--out", str(out),
                 "--quiet"]) == 0
    with np.load(out / "mine" / "resnet-20" / "mixed.by-image.npz") as f:
        assert set(f["dc_type"].tolist()) == {0, 1} and list(f["types"]) == ["gaussian_noise", "fog"]
        collected = len(f["dc_y"])
    assert 0 < collected <= 20
    report = (out / "report.md").read_text()  # the model table: how the model was trained (RQ1's pre-training)
    assert "## Models" in report and "| resnet-20 |" in report.split("## Models")[1].split("\n## ")[0]
    cell = json.loads(next((out / "cells").glob("resnet-20__mixed__finetune__*.json")).read_text())
    assert set(cell["cross"]) == {"gaussian_noise", "fog", "mixed"} and cell["collected"] == collected
    with pytest.raises(DeepRepairError, match="mixed"):
        (tmp_path / "bad.json").write_text(json.dumps({**prof, "corruptions": ["mixed"]}))
        load_profile(str(tmp_path / "bad.json"))


def test_a_frontier_profile_scores_the_interpolation_path(tmp_path, data_dir):
    """frontier: each repaired network (not an interpolating method, not the original) is also
    scored at the given weights between the original's (0) and its own (1); the report tabulates
    and plots the path. The weights are in the hash and must lie strictly inside (0, 1)."""
    prof = {**load_profile("smoke"), "name": "fr", "corruptions": ["fog"], "ablation": [], "collect": 20,
            "methods": ["original", "finetune+focal", "finetune+focal+mix"], "shifted": True, "split_by": "image",
            "frontier": [0.5], "repair": {"epochs": 1, "train_subset": 30, "lr": 0.01, "batch_size": 32}}
    (tmp_path / "fr.json").write_text(json.dumps(prof))
    out = tmp_path / "bench"
    assert main(["bench", "--profile", str(tmp_path / "fr.json"), "--data", str(data_dir), "--out", str(out),
                 "--quiet"]) == 0
    cells = {c["method"]: c for c in (json.loads(p.read_text()) for p in (out / "cells").glob("*.json"))}
    assert "frontier" not in cells["original"] and "frontier" not in cells["finetune+focal+mix"]
    (row,) = cells["finetune+focal"]["frontier"]
    assert row["alpha"] == 0.5 and 0 <= row["break_rate"] <= 1 and 0 <= row["de_after"] <= 1
    assert {"shifted_after", "shifted_break_rate", "clean_unseen_break_rate"} <= set(row)
    report = (out / "report.md").read_text().split("## The trade-off along the interpolation path")[1].split("\n## ")[0]
    assert re.search(r"\| finetune\+focal \| 0 \| 0\.00 \| 0\.00 \| 0\.00 \| 0\.00 \| 1 \|", report)  # the original
    assert "| finetune+focal | 0.5 |" in report and "| finetune+focal | 1 |" in report and "finetune+focal+mix |" not in report
    assert (out / "figures" / "frontier-resnet-20.png").stat().st_size > 1000
    p = load_profile(str(tmp_path / "fr.json"))
    assert cell_hash(p, "resnet-20", "fog", "finetune+focal", 0, "m") != cell_hash({**p, "frontier": [0.25]}, "resnet-20",
                                                                             "fog", "finetune+focal", 0, "m")
    (tmp_path / "bad.json").write_text(json.dumps({**prof, "frontier": [0.5, 1.0]}))
    with pytest.raises(DeepRepairError, match="frontier"):
        load_profile(str(tmp_path / "bad.json"))


def _cifar_like(tmp_path, smooth_images):
    """A data folder of 100 training and 300 test images, 10 classes."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for split, seed, n in (("train", 1, 100), ("test", 2, 300)):
        np.savez(data_dir / f"{split}.npz", x=smooth_images(n, seed=seed), y=np.arange(n, dtype=np.int64) % 10)
    return data_dir


def _bench_cells(tmp_path, prof: dict, data_dir) -> dict:
    """Run the profile ``prof`` through the CLI; its cells by method."""
    (tmp_path / f"{prof['name']}.json").write_text(json.dumps(prof))
    out = tmp_path / "bench"
    assert main(["bench", "--profile", str(tmp_path / f"{prof['name']}.json"), "--data", str(data_dir), "--out",
                 str(out), "--quiet"]) == 0
    return {c["method"]: c for c in (json.loads(p.read_text()) for p in (out / "cells").glob("*.json"))}


def test_a_calibration_profile_certifies_on_test_photos_no_evaluation_reads(tmp_path, smooth_images):
    """calibration: repair certifies its limit on that many clean test photos that are not sources
    of Dc, drawn per seed; De, the shifted set and the clean unseen photos all leave them out; the
    default's cell also scores its variants (k runs averaged x limits) from its own runs."""
    from deeprepair.bench.runner import Context, calibration_photos

    data_dir = _cifar_like(tmp_path, smooth_images)
    prof = {**load_profile("smoke"), "name": "cal", "corruptions": ["fog"], "ablation": [], "collect": 20,
            "data": {"train_subset": 0, "test_subset": 0},
            "methods": ["original", "finetune+focal+avg3+certified"], "shifted": True, "split_by": "image",
            "calibration": 120, "variants": {"average": [1, 2], "max_break": [0.5]},
            "repair": {"epochs": 1, "train_subset": 30, "lr": 0.01, "batch_size": 32, "average": 2,
                       "max_break": 0.5}}
    cells = _bench_cells(tmp_path, prof, data_dir)
    cell = cells["finetune+focal+avg3+certified"]
    assert cell["calibration_images"] == 120
    prot = cell["protection"]
    assert prot["calibration"]["source"] == "val" and prot["interpolation"]["bound"] == "clopper-pearson"
    assert prot["interpolation"]["break_bound"] <= 0.5
    assert [(v["average"], v["max_break"]) for v in cell["variants"]] == [(1, 0.5), (2, 0.5)]
    ctx = Context(load_profile(str(tmp_path / "cal.json")), str(data_dir), tmp_path / "bench",
                  __import__("torch").device("cpu"))
    f = ctx.failures("resnet-20", "fog")
    cal = calibration_photos(ctx, f, 0)
    assert len(cal) == 120 and not np.isin(cal, f["dc_sources"]).any()
    n_free = len(ctx.test) - len(f["dc_sources"])
    assert cell["metrics"]["clean_unseen"]["images"] == n_free - 120  # the calibration photos are left out
    assert cell["metrics"]["de_images"] == int((~np.isin(f["de_photo"], cal)).sum())
    for bad in ({"average": [0], "max_break": [0.01]}, {"average": [1], "max_break": [0.01], "mix_path": ["cubic"]}):
        (tmp_path / "bad.json").write_text(json.dumps({**prof, "variants": bad}))
        with pytest.raises(DeepRepairError, match="variants"):
            load_profile(str(tmp_path / "bad.json"))


def test_a_real_profile_with_the_field_check_reads_the_labelled_field_half(tmp_path, smooth_images):
    """A real-failures profile (cinic-certified's shape): the certified default with the field
    check reads the field half of the photos, labelled, and records what the check decided; the
    evaluation half stays unseen; the CIFAR-10 break is read on the photos calibration left out."""
    data_dir, photos = _cifar_like(tmp_path, smooth_images), tmp_path / "photos"
    photos.mkdir()
    np.savez(photos / "test.npz", x=smooth_images(160, seed=3), y=np.arange(160, dtype=np.int64) % 10)
    prof = {**load_profile("cinic-certified"), "name": "realcal", "real": {"data": str(photos), "split": "test",
                                                                            "field_fraction": 0.5},
            "data": {"train_subset": 0, "test_subset": 0}, "seeds": [0], "collect": 20, "calibration": 120,
            "repair": {"selection": "last", "epochs": 1, "train_subset": 30, "lr": 0.01, "batch_size": 32,
                       "average": 2, "max_break": 0.5}}
    cells = _bench_cells(tmp_path, prof, data_dir)
    checked = cells["finetune+focal+avg2+certified+fieldcheck"]
    fc = checked["field_check"]
    assert checked["field_photos"] == fc["images"] > 0 and fc["passed"] == (fc["change_lower_bound"] >= 0)
    assert checked["calibration_images"] == 120 and cells["finetune+focal+avg2+certified"]["field_check"] is None
    assert checked["metrics"]["clean_unseen"]["images"] == 300 - 120


def test_the_runs_averaged_are_chosen_by_the_one_standard_error_rule_on_validation_only():
    from deeprepair.bench.report import k_choice_rows

    def cell(i, vals, de=0.9):
        return {"corruption": f"c{i}", "seed": 0, "variants": [
            {"average": k, "max_break": 0.01, "de_after": de, "validation_final": {"val_failures_acc": v}}
            for k, v in vals.items()]}

    noise = [0.0, 0.02, -0.02, 0.01, -0.01]
    cells = [cell(i, {1: 0.20 + e, 2: 0.31 + e, 3: 0.30 + e + 0.02 * (-1) ** i}) for i, e in enumerate(noise)]
    rows, k = k_choice_rows(cells)
    assert k == 2 and [r[0] for r in rows] == [1, 2, 3] and rows[0][-1] == "no"
    flat = [cell(i, {1: 0.3, 2: 0.3, 3: 0.3}, de=0.1 * i) for i in range(5)]
    assert k_choice_rows(flat)[1] == 1  # ties: the fewest runs; De never enters
    assert k_choice_rows(cells[:1]) == ([], None)  # one cell has no standard error


def test_the_mix_path_is_chosen_on_validation_and_a_tie_keeps_the_linear_path():
    from deeprepair.bench.report import k_choice_rows, path_choice_rows

    def cell(i, lin, fis):
        return {"corruption": f"c{i}", "seed": 0, "variants": [
            {"average": 2, "max_break": 0.01, "mix_path": p, "validation_final": {"val_failures_acc": v}}
            for p, v in (("linear", lin), ("fisher", fis))]}

    better = [cell(i, 0.30 + e, 0.36 + e) for i, e in enumerate([0.0, 0.02, -0.01, 0.01])]
    rows, path = path_choice_rows(better, 2)
    assert path == "fisher" and [r[0] for r in rows] == ["linear", "fisher"] and rows[0][-1] == "no"
    tie = [cell(i, 0.30 + e, 0.30 - e) for i, e in enumerate([0.0, 0.02, -0.01, 0.01])]
    assert path_choice_rows(tie, 2)[1] == "linear"
    assert [r[:3] for r in k_choice_rows(better)[0]] == [[2, 4, "30.50"]]  # K is chosen on the linear path alone


def test_averaging_or_distilling_the_runs_is_chosen_on_validation_against_the_same_runs_averaged():
    from deeprepair.bench.report import combine_choice_rows

    def cell(i, avg, dist):
        return {"corruption": f"c{i}", "seed": 0, "method": "finetune+focal+elodi2+certified",
                "protection": {"interpolation": {"max_break": 0.01}},
                "repair": {"validation_final": {"val_failures_acc": dist}},
                "variants": [{"average": 2, "max_break": 0.01, "validation_final": {"val_failures_acc": avg}}]}

    noise = [0.0, 0.02, -0.01, 0.01]
    rows, how = combine_choice_rows([cell(i, 0.30 + e, 0.38 + e) for i, e in enumerate(noise)])
    assert how == "distill" and [r[0] for r in rows] == ["average", "distill"]
    assert combine_choice_rows([cell(i, 0.30 + e, 0.30 - e) for i, e in enumerate(noise)])[1] == "average"
    other = [{**cell(i, 0.3, 0.4), "method": "finetune+focal+avg2+certified"} for i in range(4)]
    assert combine_choice_rows(other) == ([], None)


def test_the_training_images_per_run_are_chosen_on_validation_and_a_tie_keeps_the_cheaper_recipe():
    from deeprepair.bench.report import budget_choice_rows, choice_tables

    def cell(i, method, val, limit=0.01):
        return {"corruption": f"c{i}", "seed": 0, "method": method, "protection": {"interpolation": {"max_break": limit}},
                "repair": {"validation_final": {"val_failures_acc": val}}}

    noise = [0.0, 0.02, -0.01, 0.01]
    full, half = "finetune+focal+avg2+certified", "finetune-half+focal+avg2+certified"
    worse = [c for i, e in enumerate(noise) for c in (cell(i, full, 0.35 + e), cell(i, half, 0.30 + e))]
    rows, n = budget_choice_rows(worse)
    assert n == 10000 and [r[0] for r in rows] == [5000, 10000] and rows[0][-1] == "no"
    tie = [c for i, e in enumerate(noise) for c in (cell(i, full, 0.30 + e), cell(i, half, 0.30 - e))]
    assert budget_choice_rows(tie)[1] == 5000
    assert "Chosen: 5,000 per run." in "\n".join(choice_tables(tie, {}))
    # only recipes that differ from the default in their training images alone, at the limit asked
    other = [c for i in range(4) for c in (cell(i, full, 0.3), cell(i, "finetune+focal+avg3+certified", 0.4))]
    assert budget_choice_rows(other) == ([], None)
    assert budget_choice_rows([cell(i, half, 0.3, limit=0.005) for i in range(4)] + worse[::2])[0] == []


def test_the_parameters_fine_tuned_are_chosen_on_validation_and_a_tie_keeps_the_cheaper_recipe():
    from deeprepair.bench.report import choice_tables, tune_choice_rows

    def cell(i, method, val):
        return {"corruption": f"c{i}", "seed": 0, "method": method, "protection": {"interpolation": {"max_break": 0.01}},
                "repair": {"validation_final": {"val_failures_acc": val}}}

    noise = [0.0, 0.02, -0.01, 0.01]
    full, fb, bn = ("finetune+focal+avg2+certified", "finetune-first-block+focal+avg2+certified",
                    "finetune-bn+focal+avg2+certified")
    worse = [c for i, e in enumerate(noise) for c in (cell(i, full, 0.35 + e), cell(i, fb, 0.30 + e), cell(i, bn, 0.2))]
    rows, tune = tune_choice_rows(worse)
    assert tune == "all" and [r[0] for r in rows] == ["bn", "first-block", "all"] and rows[1][-1] == "no"
    tie = [c for i, e in enumerate(noise) for c in (cell(i, full, 0.30 + e), cell(i, fb, 0.30 - e), cell(i, bn, 0.1))]
    assert tune_choice_rows(tie)[1] == "first-block"
    assert "Chosen: first-block." in "\n".join(choice_tables(tie, {}))
    # a first-block recipe that differs from the default in more than what it tunes is not a candidate
    other = [c for i in range(4) for c in (cell(i, full, 0.3), cell(i, "finetune-first-block+focal+mix", 0.4))]
    assert tune_choice_rows(other) == ([], None)
    # the weight of focal distillation is chosen the same way; a tie keeps the lighter weight
    focal3 = "finetune+focal3+avg2+certified"
    tie3 = [c for i, e in enumerate(noise) for c in (cell(i, full, 0.30 + e), cell(i, focal3, 0.30 - e))]
    assert "Chosen: 1." in "\n".join(choice_tables(tie3, {}))
    # and whether averaged BatchNorm statistics are recomputed; a tie keeps them as averaged (no extra pass)
    kept = "finetune+focal+avg2+keptbn+certified"
    tiebn = [c for i, e in enumerate(noise) for c in (cell(i, full, 0.30 + e), cell(i, kept, 0.30 - e))]
    assert "Chosen: kept." in "\n".join(choice_tables(tiebn, {}))
