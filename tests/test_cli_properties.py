"""Property-based tests of the command-line contract, with hypothesis.

Command lines are generated from the argparse parser itself (``deeprepair.cli_parser.build_parser``):
for each command a quick valid invocation on tiny data made here, then inputs dropped or pointed at
a missing path or an empty folder, and options of that command's parser added with valid values
(in range, or one of the choices), invalid ones (out of range, NaN, text, an unknown choice) and
paths. An option added later to the parser is generated without changing this file. Each line runs
in-process (``deeprepair.cli.main``) and must hold:

- exit 0 with complete outputs (no resume state, part or temporary file left), or exit 2 with one
  ``error:`` line on stderr;
- never a traceback (an exception escaping ``main``);
- every input byte-identical afterwards;
- every option given either changes the run record or is refused
  (``test_every_option_given_changes_the_run_record_or_is_refused``).

The examples these properties found are kept as explicit ``@example`` cases. CI runs the
``ci`` profile (a fixed number of examples per command, derandomised: at least 300 command lines);
``HYPOTHESIS_PROFILE=long`` runs ten times as many, randomised. With ``DEEPREPAIR_FUZZ_LOG=path``
each example appends its outcome as one JSON line (read by ``benchmarks/robustness.py``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from deeprepair.cli import main
from deeprepair.cli_parser import build_parser

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
SCALE = {"ci": 1, "long": 10}.get(PROFILE, 1)
settings.register_profile("ci", deadline=None, derandomize=True, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.function_scoped_fixture],
                          phases=[Phase.explicit, Phase.generate])
settings.register_profile("long", parent=settings.get_profile("ci"), derandomize=False)


def _settings(n: int):
    return settings(settings.get_profile(PROFILE if PROFILE in ("ci", "long") else "ci"), max_examples=n * SCALE)


# ----------------------------------------------------------------------------- the world

N_TRAIN, N_TEST, N_FAIL = 30, 20, 6


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """Inputs every example reads (and must leave byte-identical)."""
    import torch

    from conftest import _smooth_images
    from deeprepair.models import Classifier, create_model
    from deeprepair.models.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("world")
    (root / "data").mkdir()
    np.savez(root / "data" / "train.npz", x=_smooth_images(N_TRAIN, 1), y=np.arange(N_TRAIN) % 10)
    np.savez(root / "data" / "test.npz", x=_smooth_images(N_TEST, 2), y=np.arange(N_TEST) % 10)
    np.savez(root / "fail.npz", x=_smooth_images(N_FAIL, 3), y=np.arange(N_FAIL) % 10)
    torch.manual_seed(0)
    save_checkpoint(Classifier(create_model("resnet-20", 10)), root / "model.safetensors",
                    {"arch": "resnet-20", "num_classes": 10})
    (root / "empty").mkdir()
    return {"DATA": root / "data", "MODEL": root / "model.safetensors", "FAIL": root / "fail.npz",
            "EMPTY": root / "empty", "ROOT": root}


def _hashes(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------- the command lines

# a quick valid invocation of each command ({NAME}: a path of the world; {OUT}: a fresh folder)
BASE = {
    "corrupt": ["--data", "{DATA}", "--out", "{OUT}", "--corruptions", "fog", "--severities", "1"],
    "evaluate": ["--model", "{MODEL}", "--data", "{DATA}", "--corruptions", "fog", "--out", "{OUT}"],
    "mine": ["--model", "{MODEL}", "--data", "{DATA}", "--corruptions", "fog", "--collect", "4", "--out", "{OUT}"],
    "repair": ["--model", "{MODEL}", "--data", "{DATA}", "--failures", "{FAIL}", "--out", "{OUT}", "--epochs", "1",
               "--batch-size", "16", "--train-subset", "20", "--preset", "finetune+focal+mix"],  # tiny: no certified limit
    "train": ["--arch", "resnet-20", "--data", "{DATA}", "--out", "{OUT}/m.safetensors", "--epochs", "1",
              "--batch-size", "16"],
    "train-style": ["--model", "{MODEL}", "--data", "{DATA}", "--out", "{OUT}/s.safetensors", "--epochs", "1",
                    "--batch-size", "16", "--width", "8"],
    "style": ["--content", "{FAIL}", "--style", "{FAIL}", "--style-index", "5", "--out", "{OUT}/s.png"],  # not itself
    "corruptions": [],
    "models": [],
    "report": ["{OUT}"],
    # a profile or the demo runs for minutes: generated lines of these two always name a missing --data
    "bench": ["--profile", "smoke", "--data", "{MISSING}", "--out", "{OUT}"],
    "demo": ["--data", "{MISSING}", "--out", "{OUT}", "--collect", "2", "--epochs", "1", "--train-subset", "10"],
}
KEEP = {"bench": ("--data",), "demo": ("--data",)}  # never dropped nor replaced
OUTPUTS = ("--out", "--grid", "--figure")  # where a command writes: always a fresh path under {OUT}
NEVER = ("--help", "--version", "--compile")  # --compile: minutes of compiling; not a property of the contract
COSTLY_INTS = {"epochs": 2, "width": 16, "clusters": 3, "gate_calibration": 40}  # valid values at most this
PATHS = ("{DATA}", "{MODEL}", "{FAIL}", "{EMPTY}", "{MISSING}", "")
WORDS = ("fog", "contrast", "resnet-20", "cpu", "smoke", "bogus", "fog,contrast", "all", "-1", "x:y",
         "deeprepair.models.resnet:resnet_20")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


SUBPARSERS = _subparsers()


def _options(cmd: str) -> list[argparse.Action]:
    return [a for a in SUBPARSERS[cmd]._actions
            if a.option_strings and a.option_strings[-1] not in NEVER and a.dest != "help"
            and a.option_strings[-1] not in KEEP.get(cmd, ())]


def _number_values(t) -> st.SearchStrategy[str]:
    """Valid (in the option's declared range, small where it costs time) and invalid values of a
    range-checked number type (``cli_parser._number``)."""
    lo, hi = t.lo, t.hi
    if t.kind is int:
        lo_v = (lo or 0) + (1 if t.lo_open else 0)
        valid = st.integers(lo_v, lo_v + 3 if hi is None else min(hi, lo_v + 3)).map(str)
        bad = [str(lo_v - 1)] if lo is not None else []
        bad += [str(hi + 1)] if hi is not None else []
    else:
        lo_v = 0.0 if lo is None else float(lo)
        hi_v = lo_v + 1.0 if hi is None else min(float(hi), lo_v + 1.0)
        valid = st.floats(lo_v, hi_v, exclude_min=t.lo_open, exclude_max=t.hi_open and hi_v == hi,
                          allow_nan=False).map(lambda v: f"{v:.6g}")
        bad = ([f"{lo_v - 0.5:g}"] if lo is not None else []) + ([f"{float(hi) + 0.5:g}"] if hi is not None else [])
    return st.one_of(valid, st.sampled_from(bad + ["nan", "inf", "abc", ""]))


def _values(cmd: str, action: argparse.Action) -> st.SearchStrategy[list[str]]:
    """The argument words of one option (empty for a flag)."""
    if action.nargs == 0:
        return st.just([])
    t = action.type
    if action.option_strings[-1] in OUTPUTS:
        one = st.sampled_from(["{OUT}/o.png", "{OUT}/o", "{DATA}", "{MODEL}"])
    elif action.choices is not None:
        one = st.one_of(st.sampled_from([str(c) for c in action.choices]), st.just("bogus"))
    elif hasattr(t, "lo"):
        one = _number_values(t)
        cap = COSTLY_INTS.get(action.dest)
        if cap is not None:
            one = one.map(lambda v: v if not v.lstrip("-").isdigit() or int(v) <= cap else str(cap))
    elif t is int or t is float:
        one = st.sampled_from(["0", "1", "-1", "abc"])
    else:
        one = st.sampled_from(PATHS + WORDS)
    if action.nargs in ("+", "*"):
        return st.lists(one, min_size=1, max_size=2)
    return st.lists(one, min_size=action.nargs, max_size=action.nargs) if isinstance(action.nargs, int) else one.map(
        lambda v: [v])


def _base_inputs(cmd: str) -> list[str]:
    """The options of the base line that name an input (and may be dropped or pointed elsewhere)."""
    base = BASE[cmd]
    return [base[i] for i in range(len(base) - 1)
            if base[i].startswith("--") and base[i + 1].startswith("{") and base[i] not in OUTPUTS
            and base[i] not in KEEP.get(cmd, ())]


@st.composite
def plans(draw, cmd: str):
    """(command, dropped base options, base inputs pointed elsewhere, options added with their words)."""
    inputs = _base_inputs(cmd)
    drop = tuple(draw(st.lists(st.sampled_from(inputs), max_size=1, unique=True))) if inputs and draw(
        st.integers(0, 5)) == 0 else ()
    moved = ()
    if inputs and draw(st.integers(0, 5)) == 0:
        flag = draw(st.sampled_from(inputs))
        moved = ((flag, draw(st.sampled_from(("{MISSING}", "{EMPTY}", "{DATA}", "{MODEL}", "{FAIL}")))),)
    actions = _options(cmd)
    chosen = draw(st.lists(st.sampled_from(actions), max_size=3, unique_by=lambda a: a.dest)) if actions else []
    opts = tuple((a.option_strings[-1], tuple(draw(_values(cmd, a)))) for a in chosen)
    return cmd, drop, moved, opts


def command_line(plan, world: dict[str, Path], out: Path) -> list[str]:
    cmd, drop, moved, opts = plan
    base = list(BASE[cmd])
    for flag, value in moved:
        base[base.index(flag) + 1] = value
    added = {flag for flag, _ in opts}
    argv, i = [cmd], 0
    while i < len(base):  # the base line, less what is dropped or given again by an added option
        word = base[i]
        if word.startswith("--"):
            n = 1
            while i + n < len(base) and not base[i + n].startswith("--"):
                n += 1
            if word not in drop and word not in added:
                argv += base[i:i + n]
            i += n
        else:
            argv.append(word)
            i += 1
    for flag, words in opts:
        argv += [f"{flag}={words[0]}"] if len(words) == 1 and words[0].startswith("-") else [flag, *words]
    names = {k: str(v) for k, v in world.items()} | {"OUT": str(out), "MISSING": str(out.parent / "missing" / "x")}
    for k, v in names.items():
        argv = [a.replace("{" + k + "}", v) for a in argv]
    return argv + ["--quiet"]


# ------------------------------------------------------------------------- the invariants

STATE = (".state.safetensors", ".run.json", ".tmp")


def _complete(cmd: str, argv: list[str], out: Path) -> list[str]:
    """What is missing from the output of a command that exited 0 (empty: complete)."""
    def arg(flag: str) -> str | None:
        hits = [a.split("=", 1)[1] if "=" in a else argv[i + 1] for i, a in enumerate(argv)
                if a == flag or a.startswith(flag + "=")]
        return hits[-1] if hits else None

    problems = [str(p) for p in out.parent.rglob("*") if p.name.endswith(STATE) or ".parts" in p.parts]
    target = Path(arg("--out")) if arg("--out") else None
    if cmd == "repair":
        if not any((target / m).is_file() for m in ("model.safetensors", "model_state.pt")):
            problems.append("no repaired model")
        problems += [r for r in ("report.json", "report.md") if not (target / r).is_file()]
    elif cmd in ("train", "train-style", "style") and target is not None:
        problems += [] if target.is_file() else [f"no {target.name}"]
    elif cmd == "corrupt" and target is not None:
        manifest = target / "manifest.json"
        if not manifest.is_file():
            problems.append("no manifest.json")
        else:
            names = json.loads(manifest.read_text())["corruptions"]
            problems += [f"{n}.npy" for n in names if not (target / f"{n}.npy").is_file()]
            problems += [] if names else ["a manifest of no corruption"]
    elif cmd == "corrupt":
        problems += [] if arg("--grid") and Path(arg("--grid")).is_file() else ["no --grid figure"]
    elif cmd == "mine":
        record = target / "mining.json"
        if not record.is_file():
            problems.append("no mining.json")
        elif arg("--real") is None:
            names = json.loads(record.read_text())["corruptions"]
            problems += [f"{n}.{p}.npz" for n in names for p in ("dc", "split") if not (target / f"{n}.{p}.npz").is_file()]
            problems += [] if names else ["no corruption mined"]
        else:
            problems += [] if (target / "real.dc.npz").is_file() else ["no real.dc.npz"]
    elif cmd == "evaluate":
        problems += [] if (target / "rq1.json").is_file() else ["no rq1.json"]
    return problems


def _log(row: dict) -> None:
    path = os.environ.get("DEEPREPAIR_FUZZ_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")


def _run(argv: list[str], capfd) -> tuple[int | str, str, str]:
    capfd.readouterr()
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse: --help and bad arguments
        rc = e.code
    except BaseException as e:  # noqa: BLE001  a traceback
        import traceback

        rc = "traceback: " + "".join(traceback.format_exception(e))[-2000:]
    out, err = capfd.readouterr()
    return rc, out, err


def check_contract(plan, world: dict[str, Path], capfd) -> tuple[list[str], Path, int | str]:
    """Run one generated command line; assert the invariants. Returns (argv, its folder, rc); the
    caller removes the folder."""
    cmd = plan[0]
    work = Path(tempfile.mkdtemp(prefix="prop-"))
    out = work / "out"
    argv = command_line(plan, world, out)
    before = _hashes(world["ROOT"])
    rc, stdout, err = _run(argv, capfd)
    changed = sorted(k for k, v in _hashes(world["ROOT"]).items() if before.get(k) != v)
    changed += sorted(set(_hashes(world["ROOT"])) - set(before))
    lines = err.strip().splitlines()
    incomplete = _complete(cmd, argv, out) if rc == 0 else []
    row = {"class": "property-based command lines", "case": f"{cmd}: {' '.join(argv[1:])}"[:300],
           "expect": "ok" if rc == 0 else "error", "rc": rc if isinstance(rc, int) else 1,
           "stderr": err.strip()[-300:], "traceback": isinstance(rc, str) or "Traceback" in err,
           "one_line_error": rc == 2 and len(lines) == 1 and lines[0].startswith("error: "),
           "silent_wrong": bool(incomplete), "inputs_modified": changed, "partial_output": incomplete}
    _log(row)
    where = " ".join(argv)
    assert not row["traceback"], f"{where}\n{rc if isinstance(rc, str) else err}"
    assert rc in (0, 2), (where, rc, err)
    if rc == 2:
        assert row["one_line_error"], (where, err)
    else:
        assert not incomplete, (where, incomplete)
    assert not changed, (where, changed)
    return argv, work, rc


def _plan_test(cmd: str, n: int):
    @_settings(n)
    @given(plan=plans(cmd))
    def test(world, capfd, plan):
        _, work, _ = check_contract(plan, world, capfd)
        shutil.rmtree(work, ignore_errors=True)

    test.__name__ = f"test_{cmd.replace('-', '_')}_command_lines_keep_the_contract"
    return test


# examples per command in the ci profile (>= 300 in all; `long` runs ten times as many)
EXAMPLES = {"repair": 45, "train": 35, "train-style": 20, "evaluate": 30, "mine": 30, "corrupt": 35, "style": 30,
            "corruptions": 20, "models": 10, "report": 15, "bench": 30, "demo": 30}
assert sum(EXAMPLES.values()) >= 300 and set(EXAMPLES) == set(BASE) == set(SUBPARSERS)

test_repair_command_lines_keep_the_contract = example(
    plan=("repair", (), (("--failures", "{EMPTY}"),), ()))(  # an empty folder of failures
    example(plan=("repair", (), (), (("--style-checkpoint", ("{MODEL}",)), ("--style", ("adain",)))))(
        _plan_test("repair", EXAMPLES["repair"])))
test_train_command_lines_keep_the_contract = example(plan=("train", (), (), (("--mean", ("0.5",)),)))(
    _plan_test("train", EXAMPLES["train"]))
test_train_style_command_lines_keep_the_contract = _plan_test("train-style", EXAMPLES["train-style"])
test_evaluate_command_lines_keep_the_contract = example(
    plan=("evaluate", (), (), (("--corrupted", ("{EMPTY}",)),)))(_plan_test("evaluate", EXAMPLES["evaluate"]))
test_mine_command_lines_keep_the_contract = example(  # an empty --corrupted folder was once "nothing to do"
    plan=("mine", ("--corruptions",), (), (("--corrupted", ("{EMPTY}",)),)))(_plan_test("mine", EXAMPLES["mine"]))
test_corrupt_command_lines_keep_the_contract = example(  # --grid over an input once overwrote it with a figure
    plan=("corrupt", (), (), (("--grid", ("{MODEL}",)),)))(_plan_test("corrupt", EXAMPLES["corrupt"]))
test_style_command_lines_keep_the_contract = _plan_test("style", EXAMPLES["style"])
test_corruptions_command_lines_keep_the_contract = _plan_test("corruptions", EXAMPLES["corruptions"])
test_models_command_lines_keep_the_contract = _plan_test("models", EXAMPLES["models"])
test_report_command_lines_keep_the_contract = _plan_test("report", EXAMPLES["report"])
test_bench_command_lines_keep_the_contract = example(  # a binary file as --profile was a traceback
    plan=("bench", (), (), (("--profile", ("{MODEL}",)),)))(example(  # a missing --data left records in --out
    plan=("bench", (), (), (("--out", ("{DATA}",)),)))(_plan_test("bench", EXAMPLES["bench"])))
test_demo_command_lines_keep_the_contract = _plan_test("demo", EXAMPLES["demo"])


# ------------------------------------------- every option given changes the run record or is refused

EFFECT_COMMANDS = {"repair": 14, "train": 6, "train-style": 4, "mine": 8, "corrupt": 8, "evaluate": 6, "style": 6}
NO_RECORD = ("--quiet", "--json", "--device", "--threads", "--force", "--resume", "--precision", "--no-channels-last")
# ^ what is printed, where and how fast it runs, and flow: they are not meant to change what a run produces
# (--precision: auto is fp32 or bf16 by machine, so giving its resolved value changes nothing)
ECHO = {"config", "repair_config", "train_config", "command", "repair_command", "train_command", "seed", "collect",
        "split_by", "precision", "source", "data", "model", "parent", "failures", "gate_holdout", "out", "path",
        "corruptions", "limit", "classes", "encoder", "history", "versions", "device", "style_options"}
# ^ settings echoed into records: an option counts by what it changes in the results, not by its echo


# what an untrained model's results cannot show: evaluate's record is accuracies, and a random-init network
# gets the same share right under fog rendered with any seed (mine's failure sets show the seed)
UNSEEN = {"evaluate": ("--corruption-seed",)}


def _valid_values(action: argparse.Action) -> st.SearchStrategy[list[str]]:
    if action.nargs == 0:
        return st.just([])
    if action.choices is not None:
        one = st.sampled_from([str(c) for c in action.choices])
    elif hasattr(action.type, "lo"):
        t = action.type
        lo_v = (t.lo or 0) + (1 if t.lo_open else 0)
        cap = COSTLY_INTS.get(action.dest, lo_v + 3)
        one = (st.integers(lo_v, min(cap, lo_v + 3) if t.hi is None else min(t.hi, cap, lo_v + 3)).map(str)
               if t.kind is int else st.sampled_from(["0.05", "0.3", "0.9"]).filter(
                   lambda v: not _out_of_range(t, v)))
    else:
        one = st.sampled_from(("{FAIL}", "{DATA}", "{MODEL}", "fog", "contrast", "resnet-20"))
    n = action.nargs if isinstance(action.nargs, int) else 1
    return st.lists(one, min_size=n, max_size=n)


def _out_of_range(t, text: str) -> bool:
    v = float(text)
    return ((t.lo is not None and (v <= t.lo if t.lo_open else v < t.lo))
            or (t.hi is not None and (v >= t.hi if t.hi_open else v > t.hi)))


@st.composite
def one_option(draw, cmd: str):
    actions = [a for a in _options(cmd) if a.option_strings[-1] not in NO_RECORD + OUTPUTS + UNSEEN.get(cmd, ())]
    a = draw(st.sampled_from(actions))
    return cmd, (), (), ((a.option_strings[-1], tuple(draw(_valid_values(a)))),)


def _strip_echo(obj):
    if isinstance(obj, dict):
        return {k: _strip_echo(v) for k, v in obj.items() if k not in ECHO and "seconds" not in k
                and k not in ("img_per_s", "wall", "aug_share")}
    if isinstance(obj, list):
        return [_strip_echo(v) for v in obj]
    return obj


def run_record(out: Path) -> dict:
    """What a run produced, less timings and the echo of its settings: arrays and weights by content,
    JSON records by their results."""
    rec = {}
    for p in sorted(out.rglob("*")):
        if not p.is_file() or p.suffix == ".md":
            continue
        rel = str(p.relative_to(out))
        if p.suffix == ".json":
            rec[rel] = _strip_echo(json.loads(p.read_text().replace(str(out), "OUT")))
        elif p.suffix == ".safetensors":
            from safetensors.numpy import load_file

            rec[rel] = {k: hashlib.sha256(v.tobytes()).hexdigest() for k, v in load_file(str(p)).items()}
        elif p.suffix == ".npz":
            with np.load(p) as f:
                rec[rel] = {k: hashlib.sha256(f[k].tobytes()).hexdigest() for k in f.files}
        elif p.suffix == ".png":  # PNG bytes carry no timestamps here; a figure differs by its pixels
            rec[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            rec[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return rec


def _settings_of(argv: list[str]) -> dict:
    """The parsed (and for repair, preset-resolved) settings of a command line."""
    from deeprepair.cli import resolve_repair_options

    args = build_parser().parse_args(argv)
    if args.command == "repair":  # a preset counts by the settings it resolves to (the default recipe is one)
        resolve_repair_options(args)
        args.preset = args.safe = None
    return {k: v for k, v in vars(args).items() if k not in ("quiet", "json", "out", "grid", "figure")}


def check_option_effect(plan, world: dict[str, Path], capfd) -> str | None:
    """None when the option was refused, given at its default, or changed the run record; else why not."""
    argv, work, rc = check_contract(plan, world, capfd)
    try:
        if rc != 0:
            return None
        flag = plan[3][0][0]
        without = (plan[0], plan[1], plan[2], ())
        out2 = work / "without"
        argv2 = command_line(without, world, out2)
        if _settings_of(argv) == _settings_of(argv2):
            return None  # the option was given at its default value
        rc2, _, err2 = _run(argv2, capfd)
        assert rc2 == 0, err2
        same = run_record(work / "out") == run_record(out2)
        why = None if not same else f"{flag} {' '.join(plan[3][0][1])} did nothing: {' '.join(argv)}"
        _log({"class": "options that do nothing (generated)", "case": " ".join(argv)[:300],  # ran: it changed the
              "expect": "error" if why else "ok", "rc": 0, "stderr": why or "", "traceback": False,  # record
              "one_line_error": False, "silent_wrong": bool(why), "inputs_modified": [], "partial_output": []})
        return why
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _effect_test(cmd: str, n: int):
    @_settings(n)
    @given(plan=one_option(cmd))
    def test(world, capfd, plan):
        why = check_option_effect(plan, world, capfd)
        assert why is None, why

    test.__name__ = f"test_every_{cmd.replace('-', '_')}_option_given_changes_the_run_record_or_is_refused"
    return test


test_every_repair_option_given_changes_the_run_record_or_is_refused = example(
    plan=("repair", (), (), (("--style-checkpoint", ("{MODEL}",)),)))(_effect_test("repair", EFFECT_COMMANDS["repair"]))
test_every_train_option_given_changes_the_run_record_or_is_refused = _effect_test("train", EFFECT_COMMANDS["train"])
test_every_train_style_option_given_changes_the_run_record_or_is_refused = _effect_test(
    "train-style", EFFECT_COMMANDS["train-style"])
test_every_mine_option_given_changes_the_run_record_or_is_refused = _effect_test("mine", EFFECT_COMMANDS["mine"])
test_every_corrupt_option_given_changes_the_run_record_or_is_refused = _effect_test("corrupt", EFFECT_COMMANDS["corrupt"])
test_every_evaluate_option_given_changes_the_run_record_or_is_refused = _effect_test(
    "evaluate", EFFECT_COMMANDS["evaluate"])
test_every_style_option_given_changes_the_run_record_or_is_refused = _effect_test("style", EFFECT_COMMANDS["style"])
