"""The ``deeprepair`` command line, run in-process through ``deeprepair.cli.main``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deeprepair.cli import main
from deeprepair.corruptions import ALL_CORRUPTIONS
from deeprepair.errors import DeepRepairError

SUBCOMMANDS = ["corrupt", "demo", "corruptions", "train", "evaluate", "mine", "repair", "style", "train-style", "models", "bench"]


@pytest.fixture
def data_dir(tmp_path, smooth_images) -> Path:
    """A tiny npz dataset: train.npz and test.npz with 20 32x32 RGB images each."""
    d = tmp_path / "data"
    d.mkdir()
    for split, seed in (("train", 1), ("test", 2)):
        np.savez(d / f"{split}.npz", x=smooth_images(20, seed=seed), y=np.arange(20, dtype=np.int64) % 10)
    return d


@pytest.fixture(autouse=True)
def no_env_data(monkeypatch):
    monkeypatch.delenv("DEEPREPAIR_DATA", raising=False)


def assert_one_line_error(err: str) -> None:
    assert err.startswith("error: "), err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


# ------------------------------------------------------------------------------ help


@pytest.mark.parametrize("cmd", [[], *([c] for c in SUBCOMMANDS)], ids=["top", *SUBCOMMANDS])
def test_help_exits_0(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: deeprepair")
    if cmd:
        assert "--quiet" in out and "--json" in out


def test_preset_help_lists_only_the_options_each_preset_reads():
    from deeprepair.cli_parser import _preset_flags

    assert _preset_flags("finetune+focal+avg3+keptbn+certified") == "the defaults"
    assert _preset_flags("finetune+focal+avg2+keptbn+certified") == "--average 2"
    assert "--average-bn recompute" in _preset_flags("finetune+focal+avg2+certified")  # two runs: it is read
    one_run = _preset_flags("finetune+focal+mix")  # one run: nothing is averaged, so --average-bn is unread
    assert "--average 1" in one_run and "--average-bn" not in one_run and "--mix-steps 10" in one_run
    paper = _preset_flags("deeprepair-paper")  # no weight mix, no distillation: their options are not listed
    assert "--no-interpolate" in paper and "--mix-" not in paper and "--distill-focus" not in paper


def test_no_command_prints_help_and_returns_2(capsys):
    assert main([]) == 2
    assert "usage:" in capsys.readouterr().out


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert "deeprepair" in capsys.readouterr().out


# --------------------------------------------------------------------------- corrupt


def test_corrupt_writes_files(data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["corrupt", "--data", str(data_dir), "--out", str(out),
               "--corruptions", "fog", "contrast", "--severities", "1", "2"])  # fmt: skip
    assert rc == 0
    for name in ("fog", "contrast"):
        arr = np.load(out / f"{name}.npy")
        assert arr.shape == (40, 32, 32, 3) and arr.dtype == np.uint8
    assert np.array_equal(np.load(out / "labels.npy"), np.tile(np.arange(20) % 10, 2))
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["corruptions"]) == {"fog", "contrast"}
    assert "wrote" in capsys.readouterr().out


def test_corrupt_accepts_comma_separated_names(data_dir, tmp_path):
    out = tmp_path / "out"
    rc = main(["corrupt", "--data", str(data_dir), "--out", str(out), "--quiet",
               "--corruptions", "fog,contrast", "--severities", "1"])  # fmt: skip
    assert rc == 0
    assert (out / "fog.npy").exists() and (out / "contrast.npy").exists()


def test_corrupt_json(data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["corrupt", "--data", str(data_dir), "--out", str(out), "--json",
               "--corruptions", "contrast", "--severities", "3"])  # fmt: skip
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["out"] == str(out)
    assert result["manifest"]["corruptions"]["contrast"]["severities"] == [3]


def test_corrupt_quiet_prints_nothing(data_dir, tmp_path, capsys):
    rc = main(["corrupt", "--data", str(data_dir), "--out", str(tmp_path / "out"), "--quiet",
               "--corruptions", "contrast", "--severities", "1"])  # fmt: skip
    assert rc == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (tmp_path / "out" / "contrast.npy").exists()


def test_corrupt_rerun_same_command_succeeds(data_dir, tmp_path, capsys):
    args = ["corrupt", "--data", str(data_dir), "--out", str(tmp_path / "out"), "--quiet",
            "--corruptions", "fog", "--severities", "1"]  # fmt: skip
    assert main(args) == 0
    target = tmp_path / "out" / "fog.npy"
    stamp = target.stat().st_mtime_ns
    assert main(args) == 0
    assert target.stat().st_mtime_ns == stamp
    assert main([*args, "--seed", "9"]) == 2  # another seed would overwrite: refused
    assert_one_line_error(capsys.readouterr().err)
    assert target.stat().st_mtime_ns == stamp


def test_missing_data_dir_is_a_one_line_error(tmp_path, capsys):
    missing = tmp_path / "nope"
    rc = main(["corrupt", "--data", str(missing), "--out", str(tmp_path / "out")])
    assert rc == 2
    captured = capsys.readouterr()
    assert_one_line_error(captured.err)
    assert str(missing) in captured.err
    assert captured.out == ""


def test_no_data_and_no_env_is_a_one_line_error(tmp_path, capsys):
    rc = main(["corrupt", "--out", str(tmp_path / "out")])
    assert rc == 2
    err = capsys.readouterr().err
    assert_one_line_error(err)
    assert "DEEPREPAIR_DATA" in err and "--data" in err


def test_unknown_corruption_is_a_one_line_error(data_dir, tmp_path, capsys):
    rc = main(["corrupt", "--data", str(data_dir), "--out", str(tmp_path / "out"), "--corruptions", "fogg"])
    assert rc == 2
    err = capsys.readouterr().err
    assert_one_line_error(err)
    assert "fogg" in err and "contrast" in err


def test_corrupt_without_out_or_grid_is_an_error(data_dir, capsys):
    assert main(["corrupt", "--data", str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err)
    assert "--out" in err


def test_env_var_is_used_when_data_is_absent(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEEPREPAIR_DATA", str(data_dir))
    out = tmp_path / "out"
    rc = main(["corrupt", "--out", str(out), "--json", "--corruptions", "contrast", "--severities", "1"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["manifest"]["source"]["data"] == str(data_dir)
    assert np.load(out / "contrast.npy").shape == (20, 32, 32, 3)


def test_corrupt_grid(data_dir, tmp_path, capsys):
    png = tmp_path / "grid.png"
    rc = main(["corrupt", "--data", str(data_dir), "--grid", str(png), "--corruptions", "fog", "contrast"])
    assert rc == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(png) in capsys.readouterr().out


# ----------------------------------------------------------------------- corruptions


def test_corruptions_lists_19_names(capsys):
    assert main(["corruptions"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split()[0] for ln in lines] == list(ALL_CORRUPTIONS)


def test_corruptions_json(capsys):
    assert main(["corruptions", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert list(info) == list(ALL_CORRUPTIONS)
    assert sum(v["heldout"] for v in info.values()) == 4


# ------------------------------------------------------------------------------ demo


def test_demo_runs_end_to_end(trained, data_dir, tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--data", str(data_dir), "--model", str(trained), "--out", str(out), "--collect", "5",
               "--epochs", "1", "--train-subset", "10", "--json", "--quiet"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res["results"]) == {"finetune", "deeprepair", "augmix"}  # the default recipe first
    assert "finetune (the default recipe)" in (out / "demo.md").read_text()
    cmp = res["results"]["deeprepair"]["compare"]
    assert 0 <= cmp["clean_after"] <= 1 and 0 <= cmp["break_rate"] <= 1 and cmp["dc_before"] == 0.0
    assert (out / "demo.md").is_file() and (out / "fog.dc.npz").is_file()
    for method in res["results"]:  # its pictures, linked from demo.md
        page = (out / f"report-{method}.html").read_text()
        assert page.count("data:image/png;base64,") >= 2 and f"(report-{method}.html)" in (out / "demo.md").read_text()


def test_demo_without_model_explains_how_to_get_one(data_dir, tmp_path, capsys, monkeypatch):
    import deeprepair.cli as cli

    monkeypatch.setattr(cli, "_default_model", lambda: tmp_path / "missing.safetensors")
    assert main(["demo", "--data", str(data_dir), "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err)
    assert "deeprepair train" in err


def test_demo_falls_back_to_the_bundled_digits_offline(tmp_path, capsys, monkeypatch):
    import deeprepair.data as data
    import deeprepair.workflows.demo as demo_module

    def no_network(root):
        raise DeepRepairError("cannot download https://www.cs.toronto.edu/...: Name or service not known")

    monkeypatch.setattr(data, "download_cifar10", no_network)
    monkeypatch.setattr(demo_module, "DIGITS_EPOCHS", 2)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--collect", "50", "--epochs", "1", "--train-subset", "200",
            "--methods", "augmix", "--json"]
    assert main(args) == 0
    cap = capsys.readouterr()
    res = json.loads(cap.out)
    assert "digits" in cap.err and "could not be downloaded" in cap.err
    assert (out / "digits-resnet-20.safetensors").is_file()
    demo = json.loads((out / "demo.json").read_text())
    assert "digits" in demo["data"] and demo["model"].endswith("digits-resnet-20.safetensors")
    assert res["results"]["augmix"]["compare"]["dc_before"] == 0.0
    assert main(args[:3] + ["--offline", "--quiet"] + args[3:]) == 0  # reuses the tiny model
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------- console script


def test_console_script_help():
    candidates = [Path(__file__).resolve().parents[1] / ".venv/bin/deeprepair",
                  Path(sys.executable).parent / "deeprepair"]  # fmt: skip
    script = next((p for p in candidates if p.is_file() and os.access(p, os.X_OK)), None)
    if script is None:
        pytest.skip("the deeprepair console script is not installed")
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "usage: deeprepair" in proc.stdout
    for cmd in SUBCOMMANDS:
        assert cmd in proc.stdout


def test_closed_stdout_is_not_a_traceback():
    exe = Path(sys.executable).with_name("deeprepair")
    if not exe.exists():
        pytest.skip("console script not installed next to this Python")
    proc = subprocess.run(f"'{exe}' corruptions | head -n 1", shell=True, capture_output=True, text=True, timeout=120)
    assert proc.stdout.count("\n") == 1
    assert "Traceback" not in proc.stderr


def test_cli_bad_arguments_are_one_line_errors(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    x = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    np.savez(data / "test.npz", x=x, y=np.arange(6) % 3)
    (tmp_path / "afile").write_text("not a folder")
    cases = [
        ["corrupt", "--data", str(data), "--grid", str(tmp_path / "g.png"), "--index", "99"],
        ["corrupt", "--data", str(data), "--limit", "-1", "--out", str(tmp_path / "o")],
        ["corrupt", "--data", str(data), "--out", str(data), "--corruptions", "fog"],
        ["corrupt", "--data", str(data), "--out", str(tmp_path / "afile"), "--corruptions", "fog"],
    ]
    for argv in cases:
        assert main(argv + ["--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err and "Traceback" not in err
    assert sorted(p.name for p in data.iterdir()) == ["test.npz"]


# ------------------------------------------------------------------------------ train / evaluate / mine


@pytest.fixture
def trained(data_dir, tmp_path, capsys) -> Path:
    ckpt = tmp_path / "ck" / "m.safetensors"
    assert main(["train", "--arch", "resnet-20", "--data", str(data_dir), "--out", str(ckpt),
                 "--epochs", "1", "--batch-size", "8", "--quiet"]) == 0
    capsys.readouterr()
    return ckpt


def test_train_writes_checkpoint_with_provenance(trained):
    meta = json.loads(trained.with_suffix(".json").read_text())
    assert meta["arch"] == "resnet-20" and meta["num_classes"] == 10
    assert meta["train_command"].startswith("deeprepair train --arch resnet-20")
    assert len(meta["data_sha256"]) == 64 and 0 <= meta["clean_accuracy"] <= 1
    assert not trained.with_suffix(".state.safetensors").exists()


def test_train_refuses_to_overwrite_and_unknown_arch(trained, data_dir, capsys):
    assert main(["train", "--arch", "resnet-20", "--data", str(data_dir), "--out", str(trained)]) == 2
    assert_one_line_error(capsys.readouterr().err)
    assert main(["train", "--arch", "vgg-99", "--data", str(data_dir), "--out", str(trained.parent / "x.safetensors")]) == 2
    assert_one_line_error(capsys.readouterr().err)


def test_evaluate_and_mine(trained, data_dir, tmp_path, capsys):
    out = tmp_path / "ev"
    assert main(["evaluate", "--model", str(trained), "--data", str(data_dir), "--corruptions", "contrast",
                 "--out", str(out), "--json", "--quiet"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res["corruptions"]) == {"contrast"} and len(res["corruptions"]["contrast"]["severity"]) == 5
    assert (out / "rq1.md").is_file() and (out / "rq1.png").stat().st_size > 1000
    mine = tmp_path / "mine"
    assert main(["mine", "--model", str(trained), "--data", str(data_dir), "--corruptions", "contrast",
                 "--out", str(mine), "--collect", "10", "--json", "--quiet"]) == 0
    res = json.loads(capsys.readouterr().out)
    row = res["table1"]["contrast"]
    # leak-free split: failures of a collected photo at other severities are on neither side
    assert row["failures"] == row["collected"] + row["held_out"] + row["dropped"] and row["collected"] <= 10
    with np.load(mine / "contrast.dc.npz") as f:
        assert f["x"].shape == (row["collected"], 32, 32, 3) and f["x"].dtype == np.uint8
    # rerun resumes (nothing recomputed), another seed into the same folder is refused
    assert main(["mine", "--model", str(trained), "--data", str(data_dir), "--corruptions", "contrast",
                 "--out", str(mine), "--collect", "10", "--quiet"]) == 0
    assert main(["mine", "--model", str(trained), "--data", str(data_dir), "--corruptions", "contrast",
                 "--out", str(mine), "--collect", "10", "--seed", "5", "--quiet"]) == 2
    assert_one_line_error(capsys.readouterr().err)


def test_wrong_class_count_and_image_size_are_one_line_errors(trained, tmp_path, smooth_images, capsys):
    three = tmp_path / "three"
    three.mkdir()
    for split in ("train", "test"):
        np.savez(three / f"{split}.npz", x=smooth_images(6), y=np.arange(6) % 3)
    assert main(["evaluate", "--model", str(trained), "--data", str(three), "--corruptions", "contrast"]) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err)
    assert "10 outputs but the data has 3 classes" in err
    small = tmp_path / "small"
    small.mkdir()
    for split in ("train", "test"):
        np.savez(small / f"{split}.npz", x=smooth_images(10)[:, :16, :16], y=np.arange(10))
    assert main(["evaluate", "--model", str(trained), "--data", str(small), "--corruptions", "contrast"]) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err)
    assert "expects (32, 32, 3)" in err


def test_repair_command_and_its_errors(trained, data_dir, tmp_path, smooth_images, capsys):
    fails = tmp_path / "f.npz"
    np.savez(fails, x=smooth_images(12, seed=9), y=np.arange(12) % 10, severity=np.ones(12, int))
    out = tmp_path / "rep"
    args = ["repair", "--mix-bound", "point", "--model", str(trained), "--data", str(data_dir), "--failures", str(fails),
            "--eval-failures", str(fails), "--epochs", "1", "--train-subset", "10", "--quiet"]
    assert main(args + ["--out", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert {"clean_before", "clean_after", "break_rate", "de_after", "repair_rate"} <= set(res["compare"])
    assert res["compare"]["de_groups"]["severity 1"]["n"] == 12
    meta = json.loads((out / "model.json").read_text())
    assert meta["parent_sha256"] and meta["repair_config"]["method"] == "finetune"  # the default recipe
    assert meta["repair_config"]["interpolate"] and meta["repair_config"]["distill_focus"] == "right"
    assert main(args + ["--out", str(out)]) == 2  # never overwrites without --force
    assert_one_line_error(capsys.readouterr().err)

    empty = tmp_path / "empty.npz"
    np.savez(empty, x=np.zeros((0, 32, 32, 3), np.uint8), y=np.zeros(0, int))
    bad_labels = tmp_path / "bad.npz"
    np.savez(bad_labels, x=smooth_images(2), y=np.array([3, 12]))
    small = tmp_path / "small.npz"
    np.savez(small, x=smooth_images(2)[:, :16, :16], y=np.array([1, 2]))
    for f, msg in ((empty, "no failure images"), (bad_labels, "10 classes"), (small, "resize")):
        a = ["repair", "--model", str(trained), "--data", str(data_dir), "--failures", str(f),
             "--out", str(tmp_path / f.stem)]
        assert main(a) == 2
        err = capsys.readouterr().err
        assert_one_line_error(err)
        assert msg in err, err


def test_cli_method_list_matches_the_library():
    from deeprepair.cli import REPAIR_METHODS
    from deeprepair.repair import METHODS

    assert tuple(REPAIR_METHODS) == METHODS and "deeprepair" in METHODS


def test_train_style_then_repair_and_render_with_adain(trained, data_dir, tmp_path, smooth_images, capsys):
    ck = tmp_path / "style.safetensors"
    args = ["train-style", "--model", str(trained), "--data", str(data_dir), "--out", str(ck),
            "--epochs", "1", "--batch-size", "8", "--width", "8", "--quiet"]
    assert main(args + ["--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["layer"] == "net.blocks.2" and res["psnr"] > 0
    meta = json.loads(ck.with_suffix(".json").read_text())
    assert meta["train_command"].startswith("deeprepair train-style") and meta["encoder"]["arch"] == "resnet-20"
    assert not ck.with_suffix(".state.safetensors").exists()
    assert main(args) == 2  # never overwrites
    assert_one_line_error(capsys.readouterr().err)

    fails = tmp_path / "f.npz"
    np.savez(fails, x=smooth_images(12, seed=9), y=np.arange(12) % 10)
    base = ["repair", "--mix-bound", "point", "--model", str(trained), "--data", str(data_dir), "--failures",
            str(fails), "--method", "deeprepair", "--epochs", "1", "--train-subset", "10", "--clusters", "2", "--quiet", "--style",
            "adain"]
    assert main(base + ["--out", str(tmp_path / "noadain")]) == 2
    assert "--style-checkpoint" in capsys.readouterr().err
    assert main(base + ["--style-checkpoint", str(ck), "--out", str(tmp_path / "rep"), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["metadata"]["repair_config"]["style"] == "adain"
    png = tmp_path / "s.png"
    assert main(["style", "--content", str(fails), "--style", str(fails), "--index", "0", "1",
                 "--style-index", "2", "--backend", "adain", "--checkpoint", str(ck), "--out", str(png)]) == 0
    assert png.stat().st_size > 500


def test_repair_with_gate_saves_a_routed_model_that_loads(trained, data_dir, tmp_path, smooth_images, capsys):
    from deeprepair.models.checkpoint import load_checkpoint
    from deeprepair.repair.gate import GatedClassifier

    fails = tmp_path / "f.npz"
    np.savez(fails, x=smooth_images(12, seed=9), y=np.arange(12) % 10)
    held = tmp_path / "held.npz"  # clean images the original was not trained on, for the threshold
    np.savez(held, x=smooth_images(20, seed=11), y=np.arange(20) % 10)
    out = tmp_path / "rep"
    common = ["repair", "--mix-bound", "point", "--model", str(trained), "--data", str(data_dir), "--failures", str(fails),
              "--method", "finetune", "--epochs", "1", "--train-subset", "10", "--quiet", "--out", str(out)]
    assert main(common + ["--gate-holdout", str(held)]) == 2
    assert "add --gate" in capsys.readouterr().err
    assert main(common + ["--gate", "--gate-holdout", str(tmp_path / "missing.npz")]) == 2
    assert capsys.readouterr().err.startswith("error: --gate-holdout: ")
    assert main(common + ["--gate-keep", "0.9"]) == 2
    assert "add --gate" in capsys.readouterr().err
    assert main(common + ["--gate", "--gate-keep", "1.5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument --gate-keep: must be a number in (0, 1]") and err.count("\n") == 1
    assert main(common + ["--gate", "--gate-holdout", str(held), "--gate-router", "mlp", "--gate-features",
                          "deep+style", "--gate-keep", "0.9", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["metadata"]["gate"]["keep"] == 0.9
    assert res["metadata"]["gate"]["features"] == "deep+style" and res["metadata"]["gate"]["router"] == "mlp"
    assert res["metadata"]["gate"]["heldout_clean_images"] == 20 and res["metadata"]["gate"]["heldout_clean_change"] >= 0
    assert "routed repair" in (out / "report.md").read_text() and "held-out clean" in (out / "report.md").read_text()
    assert "keeps 90% of the validation repair" in (out / "report.md").read_text()
    model, meta = load_checkpoint(out / "model.safetensors")
    assert isinstance(model, GatedClassifier) and meta["gate"]["n_features"] > 0
    assert main(["evaluate", "--model", str(out / "model.safetensors"), "--data", str(data_dir),
                 "--corruptions", "contrast", "--out", str(tmp_path / "ev"), "--quiet"]) == 0


def test_safe_preset_fills_only_the_flags_left_unset():
    from deeprepair.cli import build_parser, resolve_repair_options

    base = ["repair", "--model", "m.safetensors", "--failures", "f.npz", "--out", "o"]
    plain = build_parser().parse_args(base)
    resolve_repair_options(plain, 50000)
    assert (plain.epochs, plain.train_subset, plain.dc_repeat, plain.distill, plain.gate,
            plain.gate_router, plain.gate_features) == (3, 10000, 1, 1.0, False, "linear", "deep")
    assert (plain.method, plain.distill_focus, plain.interpolate) == ("finetune", "right", True)  # the default
    paper = build_parser().parse_args(base + ["--preset", "deeprepair-paper"])
    resolve_repair_options(paper, 50000)
    assert (paper.method, paper.distill, paper.distill_focus, paper.interpolate, paper.gate) == (
        "deeprepair", 0.0, "all", False, False)
    off = build_parser().parse_args(base + ["--no-interpolate", "--distill", "0"])
    resolve_repair_options(off, 50000)
    assert (off.distill, off.interpolate) == (0.0, False)
    safe = build_parser().parse_args(base + ["--safe"])
    resolve_repair_options(safe, 50000)  # CIFAR-10: the 40,000 images regressions.md section 11 measured
    assert (safe.epochs, safe.train_subset, safe.dc_repeat, safe.distill, safe.gate,
            safe.gate_router, safe.gate_features) == (1, 40000, 4, 1.0, True, "mlp", "deep+style")
    assert (safe.distill_focus, safe.interpolate) == ("all", False)
    mine = build_parser().parse_args(base + ["--safe", "--epochs", "2", "--train-subset", "0",
                                             "--gate-router", "linear"])
    resolve_repair_options(mine, 50000)
    assert (mine.epochs, mine.train_subset, mine.gate_router, mine.distill) == (2, 0, "linear", 1.0)
    with pytest.raises(DeepRepairError, match="drop --safe"):  # test-time methods train nothing to gate
        resolve_repair_options(build_parser().parse_args(base + ["--safe", "--method", "tent"]), 50000)


def test_repair_safe_saves_a_distilled_routed_model(trained, data_dir, tmp_path, smooth_images, capsys):
    fails = tmp_path / "f.npz"
    np.savez(fails, x=smooth_images(12, seed=9), y=np.arange(12) % 10)
    out = tmp_path / "rep"
    assert main(["repair", "--model", str(trained), "--data", str(data_dir), "--failures", str(fails),
                 "--safe", "--quiet", "--json", "--out", str(out)]) == 0
    res = json.loads(capsys.readouterr().out)
    cfg = res["metadata"]["repair_config"]
    assert (cfg["epochs"], cfg["train_subset"], cfg["dc_repeat"], cfg["distill"], cfg["gate"]) == (1, 16, 4, 1.0, True)
    assert res["metadata"]["gate"]["router"] == "mlp" and res["metadata"]["gate"]["features"] == "deep+style"


def test_real_failures_workflow_mine_then_repair_with_field_photos(trained, data_dir, tmp_path, smooth_images, capsys):
    """mine --real (labelled field photos, no corruption) -> repair --field --eval-shifted: the field
    photos reach repair without labels, and no photo is both collected and evaluated."""
    real = tmp_path / "photos.npz"
    np.savez(real, x=smooth_images(40, seed=7), y=np.arange(40, dtype=np.int64) % 10)
    mine = tmp_path / "mine"
    assert main(["mine", "--model", str(trained), "--real", str(real), "--out", str(mine), "--collect", "6",
                 "--field-fraction", "0.5", "--json", "--quiet"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["collected"] == min(6, info["failures"]) > 0
    parts = {p: np.load(mine / f"real.{p}.npz") for p in ("dc", "unseen", "field", "eval")}
    assert "y" not in parts["field"].files
    dc, field, ev = (set(parts[p]["index"].tolist()) for p in ("dc", "field", "eval"))
    assert not dc & field and not dc & ev and not field & ev and len(dc | field | ev) == 40
    out = tmp_path / "rep"
    assert main(["repair", "--mix-bound", "point", "--model", str(trained), "--data", str(data_dir), "--failures", str(mine / "real.dc.npz"),
                 "--field", str(mine / "real.field.npz"), "--eval-shifted", str(mine / "real.eval.npz"),
                 "--method", "finetune", "--distill", "1", "--distill-focus", "right", "--tune", "first-block",
                 "--out", str(out), "--epochs", "1", "--train-subset", "10", "--batch-size", "8", "--json", "--quiet"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["repair"]["field_images"] == len(field)
    assert res["compare"]["shifted"]["images"] == len(ev)
    assert res["repair"]["config"]["tune"] == "first-block" and res["repair"]["config"]["distill_focus"] == "right"
    # the preset is one flag and the flags given with it win
    from deeprepair.cli import build_parser, resolve_repair_options

    a = build_parser().parse_args(["repair", "--model", "m", "--failures", "f", "--out", "o", "--preset",
                                   "deeprepair+distill+gate", "--tune", "bn"])
    resolve_repair_options(a, 50000)
    assert a.gate and a.tune == "bn" and a.train_subset == 40000


def test_output_cut_short_by_a_closed_pipe_ends_quietly():
    """`deeprepair corruptions --json | head -c 100`: the reader goes away, the command stops with
    status 0 and says nothing (BrokenPipeError is an OSError, so it must be caught first)."""
    import subprocess

    p = subprocess.Popen([sys.executable, "-m", "deeprepair", "corruptions", "--json"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.close()  # before the child writes anything
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 0 and "error" not in err and "Traceback" not in err, err


def test_train_holds_out_a_stratified_validation_split_and_repair_certifies_on_it(tmp_path, smooth_images, capsys):
    """train never trains on a stratified share of its images and records them; repair takes them
    as its calibration set (and leaves them out of fine-tuning); --val images the model trained on
    are refused; a set too small for the limit is an error naming the size it needs."""
    from deeprepair.models.checkpoint import load_checkpoint
    from deeprepair.train import holdout_split

    y = np.arange(200) % 10
    idx = holdout_split(y, 0.1, 0)
    assert len(idx) == 20 and np.bincount(y[idx], minlength=10).tolist() == [2] * 10
    assert np.array_equal(idx, holdout_split(y, 0.1, 0)) and not np.array_equal(idx, holdout_split(y, 0.1, 1))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for split, seed, n in (("train", 1, 60), ("test", 2, 30)):
        np.savez(data_dir / f"{split}.npz", x=smooth_images(n, seed=seed), y=np.arange(n, dtype=np.int64) % 10)
    ck = tmp_path / "m.safetensors"
    assert main(["train", "--arch", "resnet-20", "--data", str(data_dir), "--out", str(ck), "--epochs", "1",
                 "--batch-size", "8", "--val-split", "0.2", "--quiet"]) == 0
    _, meta = load_checkpoint(ck, "cpu")
    held = meta["val_split"]
    assert held["images"] == 10 and held["share"] == 0.2 and meta["train_images"] == 50  # 1 of each class's 6
    assert sorted(held["indices"]) == held["indices"] and len(set(held["indices"])) == 10
    fails = tmp_path / "f.npz"
    np.savez(fails, x=smooth_images(12, seed=9), y=np.arange(12) % 10)
    base = ["repair", "--model", str(ck), "--data", str(data_dir), "--failures", str(fails), "--epochs", "1",
            "--train-subset", "10", "--average", "1", "--quiet"]
    assert main(base + ["--out", str(tmp_path / "r1")]) == 2  # 10 held out: far too few for a 1% limit
    err = capsys.readouterr().err
    assert_one_line_error(err)
    assert "the validation set has" in err and "needs at least 299" in err
    with np.load(data_dir / "train.npz") as f:
        trained_on = np.setdiff1d(np.arange(len(f["y"])), held["indices"])[:5]
        np.savez(tmp_path / "seen.npz", x=f["x"][trained_on], y=f["y"][trained_on])
    assert main(base + ["--val", str(tmp_path / "seen.npz"), "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err)
    assert "5 of its 5 images are training images" in err
    val = tmp_path / "val.npz"
    np.savez(val, x=smooth_images(60, seed=31), y=np.arange(60) % 10)
    assert main(base + ["--val", str(val), "--max-break", "0.5", "--out", str(tmp_path / "r3"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["repair"]["calibration"] == {"source": "val", "images": 60}
    assert (tmp_path / "r3" / "report.html").read_text().count("data:image/png;base64,") >= 2
    assert main(base + ["--max-break", "0.6", "--out", str(tmp_path / "r4")]) == 2  # outside (0, 0.5]
    assert_one_line_error(capsys.readouterr().err)
