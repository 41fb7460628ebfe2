"""``deeprepair evaluate``: a model on clean and corrupted test images (RQ1). ``model_on_test`` (the
model, the test split and its corrupted source, checked against each other) serves ``mine`` too.

Named ``evaluation``, not after its command: ``deeprepair.evaluate`` is the library module it calls,
and no module name appears twice in the package."""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import DeepRepairError
from .inputs import ModelSpec, Outcome, Progress, check_images, corruption_names, load_split, no_progress, open_model, out_dir


def model_on_test(spec: ModelSpec, data: str | None, *, corrupted: str | None = None, corruption_seed: int = 0,
                  corruptions: list[str] | None = None, heldout: bool = False, limit: int = 0, out=None):
    """(root, test split, model, metadata, device, corrupted source, corruption names)."""
    from ..corruptions import ALL_CORRUPTIONS, CORRUPTIONS
    from ..evaluate import CorruptedSource

    root, test = load_split(data, "test", limit, out)
    model, meta, device = open_model(spec, test.classes, test.x)
    check_images(test, meta, "test")
    folder = Path(corrupted) if corrupted else None
    if folder is not None and not folder.is_dir():
        raise DeepRepairError(f"--corrupted {folder} is not a folder: give the output of "
                              "`deeprepair corrupt` (or CIFAR-10-C), or leave it out to render on the fly")
    source = CorruptedSource(test.x, test.y, folder, seed=corruption_seed)
    if corruptions:
        names = corruption_names(corruptions, heldout=False)
    else:
        names = source.names() if folder is not None else list(ALL_CORRUPTIONS if heldout else CORRUPTIONS)
    return root, test, model, meta, device, source, names


def evaluate_to_folder(spec: ModelSpec, data: str | None, out: str | None = None, *, name: str | None = None,
                       force: bool = False, command: str = "", progress: Progress = no_progress, **source) -> Outcome:
    """Accuracy of ``spec``'s model on clean data and every corruption x severity; the report goes
    to ``out`` (default runs/evaluate/<name>). ``source``: model_on_test's corrupted-image options."""
    from ..evaluate import evaluate_model, severity_table, write_report

    root, test, model, meta, device, src, names = model_on_test(spec, data, out=out, **source)
    label = name or Path(spec.path).stem
    if name is not None and (not name.strip() or any(c in name for c in "/\\") or name.startswith(".")):
        raise DeepRepairError(f"--name {name!r} is a label, not a path: use letters, digits, '-' or '_' "
                              "(give the folder with --out)")
    folder = Path(out or Path("runs") / "evaluate" / label)
    if (folder / "rq1.json").exists() and not force:
        raise DeepRepairError(f"{folder} holds a report (rq1.json); choose another --out or pass --force to replace it")
    out_dir(folder)
    t0 = time.perf_counter()
    with progress(len(test) * (1 + 5 * len(names)), f"evaluate {label}") as bar:
        res = evaluate_model(model, src, names, device=device, precision=spec.precision, progress=bar.update)
    secs = time.perf_counter() - t0
    res["img_per_s"] = len(test) * (1 + 5 * len(names)) / secs
    res["seconds"] = secs
    res["model"] = {"path": str(spec.path), "arch": meta["arch"]}
    res["precision"] = spec.precision
    paths = write_report({label: res}, folder, extra={"data": str(root), "command": command})
    mean = (f", mean over {res['main_corruptions']} corruptions {res['mean_corrupted']:.2%}"
            if res["mean_corrupted"] is not None else "")
    return Outcome(res, [f"{label}: clean {res['clean']:.2%}" + mean, severity_table(res),
                         f"{res['img_per_s']:,.0f} img/s including rendering ({secs:.0f} s); wrote "
                         + ", ".join(str(p) for p in paths)])  # fmt: skip
