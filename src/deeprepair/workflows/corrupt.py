"""``deeprepair corrupt``: render corrupted copies of a dataset split (CIFAR-10-C layout) and/or
a grid figure of one image under every corruption and severity."""

from __future__ import annotations

import time

from ..errors import DeepRepairError
from .inputs import Outcome, Progress, corruption_names, load_split, no_progress


def corrupt_dataset(data: str | None, out: str | None, *, split: str = "test", corruptions: list[str] | None = None,
                    heldout: bool = False, severities: list[int] | None = None, seed: int = 0,
                    threads: int | None = None, grid: str | None = None, index: int = 0, limit: int = 0,
                    progress: Progress = no_progress) -> list[Outcome]:
    """Write ``grid`` (a PNG of image ``index``) and/or ``out`` (every corruption x severity of the
    split, resumable, with a manifest); one Outcome for each."""
    from ..corruptions.generate import generate, grid_figure

    if heldout and corruptions:
        raise DeepRepairError("--heldout adds the 4 held-out corruptions to the default 15: with --corruptions, name "
                              "them (or give `all`) and drop --heldout")
    if index and not grid:
        raise DeepRepairError("--index picks the image of the --grid figure: add --grid PNG or drop --index")
    if grid:
        from ..data.io import check_figure_path

        check_figure_path(grid, "--grid")
    root, ds = load_split(data, split, limit, out)
    names = corruption_names(corruptions, heldout=grid is not None or heldout)
    done = []
    if grid:
        if not 0 <= index < len(ds):
            raise DeepRepairError(f"--index {index} is out of range: the {split} split has {len(ds)} images")
        path = grid_figure(ds.x[index], names, grid, seed=seed)
        done.append(Outcome({"grid": str(path)}, [f"wrote {path}"]))
        if not out:
            return done
    if not out:
        raise DeepRepairError("pass --out DIR for the corrupted set (or --grid PNG for a figure)")
    sev = severities or [1, 2, 3, 4, 5]
    from ..engine import check_threads

    threads = check_threads(threads)
    setup = warm_up(ds.x, names, sev, seed)
    t0 = time.perf_counter()
    with progress(len(ds) * len(sev) * len(names), "corrupt") as bar:
        manifest = generate(ds.x, ds.y, out, names, sev, seed=seed, threads=threads,
                            source={"data": str(root), "split": split, "limit": limit}, progress=bar.update)
    secs = time.perf_counter() - t0
    n = len(names) * len(sev) * len(ds)
    lines = [f"wrote {len(names)} corruptions x {len(sev)} severities x {len(ds)} images to {out} "
             f"in {secs:.1f} s ({n / secs:,.0f} img/s; manifest.json lists sha256 and parameters)",
             f"set-up before that: {setup:.1f} s (numba compiles its kernels on the first run after an install "
             "and caches them; later runs load them)"]  # fmt: skip
    return done + [Outcome({"out": str(out), "seconds": round(secs, 2), "setup_seconds": round(setup, 2),
                            "manifest": manifest}, lines)]


def warm_up(x, names: list[str], severities: list[int], seed: int) -> float:
    """Seconds to run every corruption and severity once on two images: numba's compile (first run
    after an install; cached in the package's ``__pycache__``, or numba's user cache where that is
    read-only) and lazy imports, so that the timed throughput is the steady one."""
    from ..corruptions import corrupt

    t0 = time.perf_counter()
    for name in names:
        for s in severities:
            corrupt(x[:2], name, s, seed=seed)
    return time.perf_counter() - t0
