"""The robustness record: run the fuzz corpus, the property-based command lines and the kill tests, count what happened.

    python benchmarks/robustness.py            # runs tests/test_fuzz.py, tests/test_cli_properties.py and
                                               # tests/test_resume_kill.py (about 8-10 minutes on 2 cores),
                                               # writes benchmarks/results/robustness.md and .json
    python benchmarks/robustness.py --fuzz-only    # skip the kill tests (about 4 minutes)
    python benchmarks/robustness.py --tmpfs    # as root where tmpfs can be mounted: also run every command
                                               # onto a real 2 MB tmpfs filled to 8-600 KB free, and read-only

Each case of the corpus logs one JSON line (``DEEPREPAIR_FUZZ_LOG``); this script reads them back and
counts per class: cases tried, one-line errors (exit 2, one ``error:`` line), valid edge cases that
ran (exit 0), tracebacks, silent wrong results (exit 0 where an error was due, or a wrong result),
inputs modified, half-written output left as if finished, and for the kill -9 tests the resumed runs
identical to an uninterrupted one, and for the kills between final writes (each command stopped right
after each file it puts in place, then rerun) the reruns that finished with an uninterrupted run's outputs.
The property-based command lines (hypothesis) are one class, the generated options that did nothing another.
It exits 1 when any count that must be 0 is not (or pytest failed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_OUT, REPO_ROOT, provenance, provenance_markdown, write_results  # noqa: E402

COLUMNS = ("tried", "one_line_errors", "ran_ok", "tracebacks", "silent_wrong", "inputs_modified", "partial_output")


def _as_a_user() -> list[str]:
    """As root: run the tests without the capability to write into read-only folders (setpriv), so that
    the corpus's chmod cases run instead of being skipped."""
    import shutil

    if getattr(os, "geteuid", lambda: 1)() != 0 or not shutil.which("setpriv"):
        return []
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", "--"]


def run_pytest(modules: list[str], log: Path) -> tuple[int, float, str]:
    env = dict(os.environ, DEEPREPAIR_FUZZ_LOG=str(log), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    t0 = time.perf_counter()
    proc = subprocess.run([*_as_a_user(), sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *modules],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    summary = [ln for ln in proc.stdout.splitlines() if " passed" in ln or " failed" in ln]
    tail = summary[-1].strip("= ") if summary else "\n".join(proc.stdout.strip().splitlines()[-3:])
    return proc.returncode, time.perf_counter() - t0, tail


def tally(rows: list[dict]) -> tuple[dict, dict]:
    fuzz: dict[str, dict] = defaultdict(lambda: dict.fromkeys(COLUMNS, 0))
    kills: dict[str, dict] = defaultdict(lambda: {"kills": 0, "killed_mid_run": 0, "identical": 0, "rewritten": 0,
                                                  "leftovers": 0})
    windows: dict[str, dict] = defaultdict(lambda: {"windows": 0, "finished": 0, "identical": 0, "rewritten": 0,
                                                    "leftovers": 0})
    for r in rows:
        if r["class"] == "kill between final writes":
            k = windows[r["case"].split("-after-")[0]]
            k["windows"] += 1
            k["finished"] += r["rerun_rc"] == 0
            k["identical"] += bool(r["identical"])
            k["rewritten"] += bool(r["rewritten"])
            k["leftovers"] += bool(r["leftovers"])
            continue
        if r["class"] == "kill -9 resume":
            k = kills[r["case"].split("-kill-")[0]]
            k["kills"] += 1
            k["killed_mid_run"] += bool(r["killed"])
            k["identical"] += bool(r["identical"])
            k["rewritten"] += bool(r["rewritten"])
            k["leftovers"] += bool(r["leftovers"])
            continue
        c = fuzz[r["class"]]
        c["tried"] += 1
        c["one_line_errors"] += r["expect"] == "error" and bool(r["one_line_error"])
        c["ran_ok"] += r["expect"] == "ok" and r["rc"] == 0 and not r["silent_wrong"]
        c["tracebacks"] += bool(r["traceback"])
        c["silent_wrong"] += bool(r["silent_wrong"])
        c["inputs_modified"] += bool(r["inputs_modified"])
        c["partial_output"] += bool(r["partial_output"])
    return dict(fuzz), dict(kills), dict(windows)


TMPFS_COMMANDS = {  # command -> (argv with OUT, the file that marks its output finished)
    "evaluate": (["evaluate", "--model", "model.safetensors", "--data", "data", "--corruptions", "fog", "contrast",
                  "--out", "OUT"], "rq1.json"),
    "mine": (["mine", "--model", "model.safetensors", "--data", "data", "--corruptions", "fog", "contrast",
              "--collect", "4", "--out", "OUT"], "contrast.split.npz"),  # mining.json records each corruption done
    "repair": (["repair", "--model", "model.safetensors", "--data", "data", "--failures", "fail.npz", "--out", "OUT",
                "--method", "finetune", "--epochs", "2", "--batch-size", "16"], "report.json"),
    "corrupt": (["corrupt", "--data", "data", "--out", "OUT", "--corruptions", "fog", "contrast"], "manifest.json"),
    "train": (["train", "--arch", "resnet-20", "--data", "data", "--out", "OUT/m.safetensors", "--epochs", "2"],
              "m.safetensors"),
    "train-style": (["train-style", "--model", "model.safetensors", "--data", "data", "--out", "OUT/s.safetensors",
                     "--epochs", "1", "--width", "8"], "s.safetensors"),
    "style": (["style", "--content", "fail.npz", "--style", "fail.npz", "--out", "OUT/s.png"], "s.png"),
}


def run_tmpfs(log_rows: list[dict]) -> str | None:
    """Each command onto a real, small tmpfs: nearly full at several levels, then read-only. Returns
    why it could not run, or None."""
    import shutil

    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from conftest import write_tiny_workspace

    work = Path(tempfile.mkdtemp(prefix="deeprepair-tmpfs-"))
    mnt = work / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True).returncode:
        shutil.rmtree(work)
        return "tmpfs could not be mounted here (needs root)"
    try:
        write_tiny_workspace(work)
        env = dict(os.environ, OMP_NUM_THREADS="1")
        for free_kb in (*(8, 40, 90, 160, 300, 600), "read-only"):
            for name, (argv, done) in TMPFS_COMMANDS.items():
                for p in mnt.iterdir():
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
                if free_kb == "read-only":
                    subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
                else:
                    (mnt / "filler").write_bytes(b"\0" * (2048 * 1024 - free_kb * 1024))
                out = mnt / "out"
                proc = subprocess.run([sys.executable, "-m", "deeprepair", *[a.replace("OUT", str(out)) for a in argv],
                                       "--quiet"], cwd=work, env=env, capture_output=True, text=True)
                if free_kb == "read-only":
                    subprocess.run(["mount", "-o", "remount,rw", str(mnt)], check=True)
                lines = proc.stderr.strip().splitlines()
                finished = (out / done).is_file()
                tmp = [str(p) for p in mnt.rglob("*.tmp")]
                log_rows.append({
                    "class": "real full disk or read-only (tmpfs)", "case": f"{name}-{free_kb}" + ("" if free_kb == "read-only" else "k-free"),
                    "expect": "ok" if proc.returncode == 0 else "error", "rc": proc.returncode,
                    "stderr": proc.stderr.strip()[-300:], "traceback": "Traceback" in proc.stderr,
                    "one_line_error": proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "),
                    "silent_wrong": proc.returncode == 0 and not finished, "inputs_modified": [],
                    "partial_output": tmp + ([done] if proc.returncode != 0 and finished else [])})
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return None


def markdown(fuzz: dict, kills: dict, windows: dict, prov: dict, runs: list[dict], failures: list[dict]) -> str:
    total = {k: sum(c[k] for c in fuzz.values()) for k in COLUMNS}
    lines = ["# Robustness: hostile input, generated command lines, and kills", "",
             "Generated by `python benchmarks/robustness.py` from the outcomes the test modules log "
             "(`tests/test_fuzz.py`, `tests/test_cli_properties.py`, `tests/test_resume_kill.py`); do not edit "
             "by hand.", "",
             provenance_markdown(prov), ""]
    for r in runs:
        what = r["modules"][0].strip("()") if r["modules"][0].startswith("(") else f"`pytest {' '.join(r['modules'])}`"
        lines.append(f"- {what}: exit {r['rc']} in {r['seconds']:.0f} s ({r['tail'].splitlines()[-1] if r['tail'] else ''})")
    if _as_a_user():
        lines.append("- run as root without CAP_DAC_OVERRIDE (`setpriv`), so that folders made read-only with chmod "
                     "refuse writes as they do for a user")
    if any("skipped" in r["tail"] for r in runs):
        lines.append("- skipped: the cases that make a folder read-only with chmod, where this process ignores folder "
                     "permissions (root); the `writes-refused-*` cases simulate the same refusal for any user")
    lines += ["", "## The corpus", "",
              "Each case runs `deeprepair.cli.main([...])` in-process on inputs generated from small arrays. "
              "*One-line errors*: exit status 2 and one stderr line starting `error:`, as each case requires. "
              "*Ran*: valid edge cases (a one-image failure set, a 16-bit PNG, a grey or 64x64 set to corrupt) that "
              "must finish with exit 0 and a checked result. *Silent wrong*: exit 0 where an error was due, or a "
              "checked result that was wrong. *Partial output*: a finished-looking output file or a `.tmp` left "
              "behind.", "",
              "*Property-based command lines*: generated by hypothesis from each command's argparse parser "
              "(valid and invalid values, option combinations, dropped or missing inputs) on tiny data; each must "
              "exit 0 with complete outputs or 2 with one `error:` line, without a traceback, leaving its inputs "
              "unchanged (*silent wrong* here: exit 0 with incomplete outputs). *Options that do nothing* "
              "(corpus cases, and *generated*: one valid option added to a command that ran, rerun without it): "
              "an option given with a non-default value must be refused or change what the run produced "
              "(weights, arrays, results; not the echo of the setting); *silent wrong* counts those that did "
              "neither. *Empty inputs*: folders, trees and files that hold nothing to work on.", ""]
    if any(c.startswith("real full disk") for c in fuzz):
        lines += ["*Real full disk or read-only (tmpfs)*, with `--tmpfs`: each command in a subprocess writing onto a "
                  "real 2 MB tmpfs filled to leave 8, 40, 90, 160, 300 or 600 KB, then remounted read-only; a run "
                  "that fits is counted as ran (its finished file checked), one that does not must give one `error:` "
                  "line and leave neither a `.tmp` file nor its finished file (the corpus's `outputs` class simulates "
                  "the same failures in-process, for any user).", ""]
    lines += [
              "| class | tried | one-line errors | ran (valid edge cases) | tracebacks | silent wrong | inputs modified | partial output |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for cls in sorted(fuzz):
        c = fuzz[cls]
        lines.append(f"| {cls} | " + " | ".join(str(c[k]) for k in COLUMNS) + " |")
    lines.append("| **all** | " + " | ".join(f"**{total[k]}**" for k in COLUMNS) + " |")
    if kills:
        lines += ["", "## Kill -9 resume", "",
                  "Each command runs in a subprocess on tiny data (40 training / 20 test images, resnet-20), is "
                  "killed with SIGKILL just after a seeded random one of the changes it makes to its output "
                  "folder, and is rerun (`train` with `--resume`). *Identical*: the final outputs equal an "
                  "uninterrupted run's (arrays byte for byte, weights bit for bit, JSON records with timings "
                  "and the output path left out). *Rewritten*: a file finished at the kill was written again "
                  "(records every run rebuilds, such as corrupt's manifest and bench's report, are not counted). "
                  "*Left over*: resume state, parts or `.tmp` files still there after the rerun finished.", "",
                  "| command | kills | killed mid-run | resumed runs identical | finished files rewritten | left over |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name in sorted(kills):
            k = kills[name]
            lines.append(f"| {name} | {k['kills']} | {k['killed_mid_run']} | {k['identical']} / {k['kills']} | "
                         f"{k['rewritten']} | {k['leftovers']} |")
    if windows:
        lines += ["", "## Kills between final writes", "",
                  "Each command runs in-process on tiny data once, recording every file it puts in place and every "
                  "file it removes; for each of these final writes (on the files a finished folder keeps, and the "
                  "removals of its resume state) a fresh run is stopped right after it, as a SIGKILL would stop it "
                  "there, and the same command is rerun (`train` with `--resume`). *Finished*: the rerun exited 0. "
                  "*Identical*: with the files and outputs of an uninterrupted run. *Rewritten*: a file finished "
                  "at the stop was written again (records every run rebuilds are not counted). *Left over*: resume "
                  "state or parts still there.", "",
                  "| command | windows | reruns finished | identical | finished files rewritten | left over |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name in sorted(windows):
            k = windows[name]
            lines.append(f"| {name} | {k['windows']} | {k['finished']} / {k['windows']} | {k['identical']} / "
                         f"{k['windows']} | {k['rewritten']} | {k['leftovers']} |")
    if failures:
        lines += ["", "## Cases that did not hold", ""]
        lines += [f"- {f['class']}: {f['case']}: {f.get('stderr', '')[-160:]!r}" for f in failures]
    return "\n".join(lines) + "\n"


def bad(r: dict) -> bool:
    if r["class"] == "kill -9 resume":
        return not r["identical"] or bool(r["rewritten"]) or bool(r["leftovers"])
    if r["class"] == "kill between final writes":
        return r["rerun_rc"] != 0 or not r["identical"] or bool(r["rewritten"]) or bool(r["leftovers"])
    wanted = r["one_line_error"] if r["expect"] == "error" else r["rc"] == 0
    return (not wanted or r["traceback"] or r["silent_wrong"] or bool(r["inputs_modified"])
            or bool(r["partial_output"]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fuzz-only", action="store_true", help="skip the kill -9 tests")
    ap.add_argument("--tmpfs", action="store_true", help="also fill a real small tmpfs and make it read-only "
                    "under every command (root only)")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args()
    groups = [["tests/test_fuzz.py"], ["tests/test_cli_properties.py"]] + (
        [] if args.fuzz_only else [["tests/test_resume_kill.py"]])
    rows, runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for modules in groups:
            log = Path(tmp) / "log.jsonl"
            log.unlink(missing_ok=True)
            rc, secs, tail = run_pytest(modules, log)
            runs.append({"modules": modules, "rc": rc, "seconds": round(secs, 1), "tail": tail})
            rows += [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
            print(f"{' '.join(modules)}: exit {rc} in {secs:.0f} s", file=sys.stderr)
    if args.tmpfs:
        t0 = time.perf_counter()
        why = run_tmpfs(rows)
        runs.append({"modules": ["(real tmpfs: every command at 8-600 KB free, and read-only)"], "rc": 0 if why is None else 1,
                     "seconds": round(time.perf_counter() - t0, 1), "tail": why or "ran"})
    fuzz, kills, windows = tally(rows)
    failures = [r for r in rows if bad(r)]
    prov = provenance()
    md = markdown(fuzz, kills, windows, prov, runs, failures)
    md_path, _ = write_results(args.out, "robustness", md, {"provenance": prov, "runs": runs, "classes": fuzz,
                                                            "kill9": kills, "kill_windows": windows, "cases": rows})
    print(md)
    print(f"wrote {md_path}", file=sys.stderr)
    return 1 if failures or any(r["rc"] != 0 for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
