"""The benchmark harness: the smoke profile end to end, resume after a kill, profiles."""

from __future__ import annotations

import json
import re

import pytest

from deeprepair.bench import list_cells, list_profiles, load_profile, restrict
from deeprepair.bench.profile import cell_hash
from deeprepair.cli import main
from deeprepair.errors import DeepRepairError


def test_profiles_are_valid_and_state_their_numbers():
    assert {"smoke", "cpu", "paper"} <= set(list_profiles())
    for name in ("smoke", "cpu", "paper"):
        p = load_profile(name)
        assert p["repair"]["epochs"] >= 1 and p["collect"] > 0 and p["seeds"]
    with pytest.raises(DeepRepairError, match="unknown profile"):
        load_profile("huge")
    with pytest.raises(DeepRepairError, match="not in profile"):
        restrict(load_profile("smoke"), None, ["snow"], None)


def test_cell_hash_changes_with_what_the_result_depends_on():
    p = load_profile("smoke")
    h = cell_hash(p, "resnet-20", "fog", "augmix", 0, "m1")
    assert h == cell_hash(p, "resnet-20", "fog", "augmix", 0, "m1")
    assert h != cell_hash(p, "resnet-20", "fog", "augmix", 1, "m1")
    assert h != cell_hash(p, "resnet-20", "fog", "augmix", 0, "m2")
    q = json.loads(json.dumps(p))
    q["repair"]["lr"] = 0.5
    assert h != cell_hash(q, "resnet-20", "fog", "augmix", 0, "m1")


def test_smoke_profile_end_to_end_and_resume(data_dir, tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["bench", "--profile", "smoke", "--data", str(data_dir), "--out", str(out), "--quiet",
            "--methods", "original", "finetune", "deeprepair", "deeprepair-uniform"]
    assert main(args) == 0
    cells = sorted((out / "cells").glob("*.json"))
    prof = restrict(load_profile("smoke"), None, None, ["original", "finetune", "deeprepair", "deeprepair-uniform"])
    assert len(cells) == len(list_cells(prof)) == 2 * 4
    report = (out / "report.md").read_text()
    assert "Table 2" in report and "Table 3" in report and (out / "report.html").stat().st_size > 5000
    # the folder records the whole profile, so a filtered run adds to its report instead of shrinking it
    assert json.loads((out / "profile.json").read_text())["methods"] == load_profile("smoke")["methods"]
    assert "DeepRepair against each method" in report and "Cross-failure accuracy" in report
    linked = re.findall(r"\(figures/(.+?\.png)\)", report)
    assert {"fig4-resnet-20.png", "fig5-resnet-20.png"} <= set(linked)
    assert all((out / "figures" / f).stat().st_size > 1000 for f in linked)
    one = json.loads(cells[0].read_text())
    assert set(one["cross"]) <= {"gaussian_noise", "fog"} and "clean_after" in one["metrics"]
    # rewriting the report from its cells keeps the bench's provenance (command, data)
    assert "- command: " in report and f"- data: {data_dir}" in report
    assert main(["report", str(out)]) == 0
    rewritten = (out / "report.md").read_text()
    assert "- command: " in rewritten and f"- data: {data_dir}" in rewritten

    # a killed run: remove one finished cell; the rerun redoes only it and leaves the others as they were
    stamps = {p: p.stat().st_mtime_ns for p in cells}
    victim = cells[3]
    victim.unlink()
    assert main(args) == 0
    for p, t in stamps.items():
        if p != victim:
            assert p.stat().st_mtime_ns == t
    assert victim.is_file()
    def table2(text):  # the accuracy tables (repair times differ between runs, accuracies must not)
        return text.split("### Table 2")[1].split("### Clean accuracy")[0]

    assert table2((out / "report.md").read_text()) == table2(report)

    # with a second architecture the report adds DeepRepair's record over every (arch, corruption) pair
    from deeprepair.bench.report import build

    assert "All architectures" not in report
    for p in sorted((out / "cells").glob("*.json")):
        c = json.loads(p.read_text())
        (out / "cells" / p.name.replace("resnet-20", "copy")).write_text(json.dumps({**c, "arch": "copy"}))
    md, _, _ = build(out)
    pooled = md.split("## All architectures")[1].split("## Figures")[0]
    assert re.search(r"\| finetune \| \d / 4 \|", pooled) and re.search(r"\| deeprepair-uniform \| \d / 4 \|", pooled)


def test_report_command_and_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a benchmark folder" in capsys.readouterr().err


def test_ray_executor_matches_the_local_executor(data_dir, tmp_path, capsys, monkeypatch):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'deeprepair[ray]')")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    methods = ["original", "finetune"]
    local, remote = tmp_path / "local", tmp_path / "ray"
    base = ["bench", "--profile", "smoke", "--data", str(data_dir), "--quiet", "--methods", *methods]
    assert main(base + ["--out", str(local)]) == 0
    import shutil

    shutil.copytree(local, remote)  # the same pre-trained model and failures; only the cells run again
    shutil.rmtree(remote / "cells")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert main(base + ["--out", str(remote), "--executor", "ray"]) == 0
    finally:
        ray.shutdown()
    a = {p.name: json.loads(p.read_text()) for p in (local / "cells").glob("*.json")}
    b = {p.name: json.loads(p.read_text()) for p in (remote / "cells").glob("*.json")}
    assert len(a) == 4 and a.keys() == b.keys()  # same cells, same config hashes
    for name in a:
        for key in ("clean_after", "dc_after", "de_after", "break_rate"):
            assert a[name]["metrics"].get(key) == pytest.approx(b[name]["metrics"].get(key), abs=0.02), (name, key)
