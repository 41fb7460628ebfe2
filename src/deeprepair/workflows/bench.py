"""``deeprepair bench`` and ``report``: run a benchmark profile into a folder (resumable cells)
and rebuild its report."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from ..errors import DeepRepairError
from .inputs import Outcome, Progress, no_progress


def run_bench(profile: str, data: str | None, out: str | Path, *, archs=None, corruptions=None, methods=None,
              executor: str = "local", address: str | None = None, device: str | None = None,
              log: Callable[[str], None] = lambda msg: None, progress: Progress = no_progress,
              command: str = "") -> Outcome:
    """Every (arch, corruption, method, seed) cell of ``profile`` (restricted to the given names) on
    ``data``; finished cells in out/cells are kept. Writes the report. A profile with ``dc_sizes``
    runs once per size into ``out/dc<N>`` (each a bench folder with its report; they share
    ``out/mine`` and ``out/models``)."""
    from ..bench import list_cells, load_profile, restrict, run, write_report
    from ..bench.profile import expand
    from ..bench.report import read_json_object
    from ..data import resolve_data_dir

    full = load_profile(profile)
    prof = restrict(full, archs, corruptions, methods)
    root = resolve_data_dir(data)
    if not root.is_dir():  # before anything is written to --out
        raise DeepRepairError(f"data folder {root} does not exist: check --data or DEEPREPAIR_DATA")
    out = Path(out)
    if out.resolve() == Path(root).resolve():
        raise DeepRepairError(f"--out {out} is the input data folder: choose a separate output folder")
    runs = list(zip(expand(prof), expand(full)))
    for (sub, _), _ in runs:
        old = out / sub / "profile.json"
        if old.is_file() and read_json_object(old, "benchmark profile record").get("name") != prof["name"]:
            raise DeepRepairError(f"{out / sub} holds a run of another profile; choose a new --out")
    bench_data_guard(out, Path(root))
    t0 = time.perf_counter()
    results, reports = [], []
    with progress(sum(len(list_cells(p)) for (_, p), _ in runs), "bench") as bar:
        for (sub, p), (_, record) in runs:
            if sub:
                _share(out, out / sub, ("mine", "models"))
            results += run(p, str(root), out / sub, executor=executor, address=address, device=device,
                           log=log, progress=bar.update, record=record)
            reports.append(write_report(out / sub, provenance={"command": command, "data": str(root),
                                                                "seconds": round(time.perf_counter() - t0, 1)})[0])
    if len(runs) == 1:
        return Outcome({"out": str(out), "cells": len(results), "report": str(reports[0])},
                       [f"{len(results)} cells in {out}/cells; report: {reports[0]} and {reports[0].with_suffix('.html')}"])
    from ..bench.report import write_sweep

    subs = [sub for (sub, _), _ in runs]
    curve = write_sweep(out, subs)
    return Outcome({"out": str(out), "cells": len(results), "report": str(curve), "runs": [str(r) for r in reports]},
                   [f"{len(results)} cells in {out}/{{{','.join(subs)}}}/cells; the curve: {curve}; "
                    f"each run's report: {', '.join(str(r) for r in reports)}"])


def _share(out: Path, sub: Path, names: tuple[str, ...]) -> None:
    """``sub/<name>`` as a link to ``out/<name>``: the runs of one sweep mine and train once."""
    sub.mkdir(parents=True, exist_ok=True)
    for name in names:
        (out / name).mkdir(parents=True, exist_ok=True)
        link = sub / name
        if not link.exists() and not link.is_symlink():
            link.symlink_to(Path("..") / name, target_is_directory=True)


def bench_data_guard(out: Path, root: Path) -> None:
    """A benchmark folder keeps its models, failures and cells: refuse to add to one made from other
    data (recorded in ``OUT/data.json``: the sha256 of every file of --data)."""
    import hashlib

    from ..bench.report import read_json_object
    from ..data import sha256_file
    from ..data.io import atomic_write_bytes

    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(f"{p.relative_to(root)}\0{sha256_file(p)}\n".encode())
    record, now = out / "data.json", {"data": str(root), "sha256": h.hexdigest()}
    if record.is_file():
        if read_json_object(record, "record of the benchmark's data").get("sha256") != now["sha256"]:
            raise DeepRepairError(f"{out} holds a benchmark run on other data than {root}; choose a new --out")
    else:
        atomic_write_bytes(record, json.dumps(now, indent=2).encode())


def rebuild_report(folder: str | Path) -> Outcome:
    """Rebuild the Markdown and HTML report of a benchmark folder from its cells."""
    from ..bench import write_report

    out = Path(folder)
    subs = sorted((p.parent.name for p in out.glob("dc*/profile.json")), key=lambda s: int(s[2:]) if s[2:].isdigit() else 0)
    if subs and not (out / "cells").is_dir():  # the runs of a dc_sizes profile: each run's report, then the curve
        from ..bench.report import write_sweep

        pages = [write_report(out / s) for s in subs]
        curve = write_sweep(out, subs)
        return Outcome({"markdown": str(curve), "runs": [str(md) for md, _ in pages]},
                       [f"wrote {curve} and the report of {', '.join(subs)}"])
    if not (out / "cells").is_dir() or not (out / "profile.json").is_file():
        raise DeepRepairError(f"{out} is not a benchmark folder (no cells/ or profile.json): run `deeprepair bench` first")
    md, page = write_report(out)
    return Outcome({"markdown": str(md), "html": str(page)}, [f"wrote {md} and {page}"])
