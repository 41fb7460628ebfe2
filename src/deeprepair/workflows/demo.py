"""``deeprepair demo``: a deployed model meets one corruption; mine its failures from whole photos
(leak-free), repair a copy with each method, and report what a user lives with.

``demo_to_folder`` is the command: it resolves the data and the model (``demo_data``), then runs
``run_demo``; ``digits_fallback`` is its offline data (scikit-learn's bundled digits) and tiny model.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch.nn as nn

from ..data import ImageSet, load_failure_set
from ..errors import DeepRepairError
from ..repair_config import RepairConfig
from ..tables import markdown_table
from .inputs import ModelSpec, Outcome, Progress, check_images, load_split, no_progress, open_model, out_dir

DIGITS_EPOCHS = 15  # the offline demo's tiny model: ~97% on the digits' test split


def digits_fallback(out: Path, seed: int, device, progress: Progress = no_progress,
                    train_model: bool = True) -> tuple[ImageSet, ImageSet, Path | None]:
    """(train, test, checkpoint): the bundled digits and, with ``train_model``, a resnet-20 trained
    on them (kept in ``out`` and reused by later demos)."""
    import torch

    from ..data.digits import load_digits_dataset
    from ..models import Classifier, create_model
    from ..models.checkpoint import save_checkpoint
    from ..train import TrainConfig, fit

    train, test = load_digits_dataset()
    ckpt = out / "digits-resnet-20.safetensors"
    if not train_model:
        return train, test, None
    if ckpt.is_file():
        return train, test, ckpt
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = Classifier(create_model("resnet-20", 10))
    cfg = TrainConfig(epochs=DIGITS_EPOCHS, batch_size=64, lr=0.05, seed=seed)
    with progress(len(train) * cfg.epochs, "demo: train a tiny model on the digits") as bar:
        res = fit(model, train.x, train.y, cfg, device=device, eval_x=test.x, eval_y=test.y,
                  progress=lambda n, e: bar.update(n))
    save_checkpoint(model.cpu(), ckpt, {"arch": "resnet-20", "num_classes": 10, "classes": train.classes,
                                        "clean_accuracy": res.history[-1]["test_acc"], "seed": seed,
                                        "train_command": "deeprepair demo (offline digits fallback)"})
    return train, test, ckpt


def run_demo(model: nn.Module, train: ImageSet, test: ImageSet, out: Path, *, corruption: str = "fog",
             collect: int = 500, methods: tuple[str, ...] = ("finetune", "deeprepair", "augmix"), epochs: int = 2,
             train_subset: int = 5000, seed: int = 0, precision: str = "auto", device=None,
             average: int | None = None, progress: Progress = no_progress, say: Callable[[str], None] = lambda line: None,
             about: dict | None = None) -> dict:
    """Corrupt ``test`` at 5 severities, collect ``collect`` failures from whole photos, repair a
    copy of ``model`` with each method, compare; write ``out``/demo.md and demo.json. Returns
    ``{"results": {method: {"compare", "repair"}}, "table": markdown, "seconds"}``."""
    from ..data.io import atomic_write_bytes
    from ..evaluate import CorruptedSource, predict_corrupted
    from ..mining import export_collected, find_failures
    from ..bounds import clopper_pearson_min_n
    from ..engine import predict
    from ..repair import compare, repair, repair_report_markdown
    from ..train import holdout_split

    t0 = time.perf_counter()
    phases: dict[str, float] = {}  # where the demo's time goes (demo.json "seconds_by_phase")
    source = CorruptedSource(test.x, test.y, seed=seed)
    with progress(len(test) * 5, f"demo: corrupt + predict ({corruption})") as bar:
        preds, stack = predict_corrupted(model, source, corruption, device=device, precision=precision,
                                         progress=bar.update)
    phases["corrupt + predict the original"] = time.perf_counter() - t0
    n_fail = int(sum((p != test.y).sum() for p in preds))
    if n_fail < 2 * collect:  # keep at least half of the failures held out, to measure the repair on
        collect = n_fail // 2
        say(f"demo: only {n_fail} failures; collecting {collect} (half) so the rest stay held out")
    split = find_failures(corruption, preds, test.y, collect, test.num_classes, seed)
    if len(split.dc) == 0:
        raise DeepRepairError(f"the model makes no mistakes under {corruption}: nothing to repair")
    failures = load_failure_set(export_collected(split, stack, test.classes, out / f"{corruption}.dc.npz"),
                                test.classes)
    # the break limit is certified on half of the clean photos that are not sources of Dc (labelled images
    # the model never trained on, as --val); every number below leaves them out
    free = np.setdiff1d(np.arange(len(test)), split.dc_sources())
    cal = free[holdout_split(test.y[free], 0.5, seed)]
    val = test.subset(cal)
    bound = "clopper-pearson"
    n_right = int((predict(model, val.x, device=device, precision=precision) == val.y).sum())
    if n_right < clopper_pearson_min_n(RepairConfig().max_break):
        bound = "point"
        say(f"demo: {n_right} calibration images right is too few to certify a {RepairConfig().max_break:.0%} limit "
            f"(it needs >= {clopper_pearson_min_n(RepairConfig().max_break)}); the limit is held as a point estimate")
    excluded = np.union1d(split.dc_sources(), cal)
    de_keep = split.de[~np.isin(split.index[split.de] % len(test), cal)]
    de_sel = split.index[de_keep]
    heldout = ImageSet(stack[de_sel], split.y[de_keep], test.classes) if len(de_sel) else None
    groups = {f"severity {s}": split.severity[de_keep] == s for s in range(1, 6)} if heldout else None
    unseen = split.unseen()  # what a user lives with: every image of the photos the repair never saw
    unseen = unseen[~np.isin(unseen % len(test), cal)]
    shifted = ImageSet(stack[unseen], np.tile(test.y, 5)[unseen], test.classes)
    # the original's predictions, made once for all the repairs compared (compare's ``cache``); on
    # the shifted images they are the mining pass's own (same images, same model)
    before = {("shifted", id(model), len(shifted.x)): np.concatenate(preds)[unseen]}
    results = {}
    for method in methods:
        cfg = RepairConfig(method=method, epochs=epochs, train_subset=train_subset, seed=seed, precision=precision,
                           mix_bound=bound)
        if method != RepairConfig().method or average is not None:  # the comparisons: one run each
            cfg.average = average if (average is not None and method == RepairConfig().method) else 1
        n_ft = min(len(train), train_subset or len(train)) + len(failures)
        t1 = time.perf_counter()
        with progress(n_ft * epochs * cfg.runs_trained(), f"demo: repair ({method})") as bar:
            repaired, report = repair(model, train, failures, cfg, device=device, progress=bar.update, val=val)
        t2 = time.perf_counter()
        after: dict = {}
        cmp = compare(model, repaired, test, failures=failures, heldout=heldout, heldout_groups=groups,
                      shifted=shifted, dc_sources=excluded, device=device, precision=precision, cache=before,
                      predictions=after)
        phases[f"repair {method}"], phases[f"compare {method}"] = t2 - t1, time.perf_counter() - t2
        results[method] = {"compare": cmp, "repair": report}
        atomic_write_bytes(out / f"report-{method}.html",
                           _pictures(method, test, heldout, excluded, after, cmp, report).encode())
    table = demo_table(results, split, corruption, len(test), about or {})
    pictures = "Pictures (validation frontier, broken and fixed images, accuracy per class): " + ", ".join(
        f"[{m}](report-{m}.html)" for m in results)
    atomic_write_bytes(out / "demo.md", ("# deeprepair demo\n\n" + table + "\n" + pictures + "\n\n" + "\n".join(
        repair_report_markdown(m, r["compare"], r["repair"]) for m, r in results.items())).encode())
    seconds = time.perf_counter() - t0
    phases["the rest (split, calibration, Dc file, report)"] = seconds - sum(phases.values())
    atomic_write_bytes(out / "demo.json", json.dumps({"corruption": corruption, **(about or {}), "seconds": seconds,
                                                      "seconds_by_phase": phases, "results": results},
                                                     indent=2).encode())
    return {"results": results, "table": table, "seconds": seconds, "seconds_by_phase": phases}


def _pictures(method: str, test: ImageSet, heldout: ImageSet | None, excluded: np.ndarray, preds: dict, cmp: dict,
              report: dict) -> str:
    """report-METHOD.html (repair/pictures.py) from the (before, after) predictions ``compare``
    already made (``preds``)."""
    from ..repair import repair_report_markdown
    from ..repair.pictures import repair_html

    kw = {}
    if heldout is not None:
        kw = dict(heldout_x=heldout.x, heldout_y=heldout.y, heldout_before=preds["de"][0], heldout_after=preds["de"][1])
    return repair_html(f"deeprepair demo: {method}", repair_report_markdown(method, cmp, report), report,
                       list(test.classes), test_x=test.x, test_y=test.y,
                       test_before=preds["test"][0], test_after=preds["test"][1],
                       unseen=~np.isin(np.arange(len(test)), excluded), **kw)


def demo_table(results: dict, split, corruption: str, n_test: int, about: dict) -> str:
    """The numbers to look at first, before and after each repair."""
    pct = lambda v: f"{v * 100:.1f}"  # noqa: E731
    first = next(iter(results.values()))["compare"]
    rows = [["original", pct(first["shifted"]["before"]), "-", pct(first["clean_unseen"]["before"]), "-", "-",
             pct(first.get("de_before", 0)), "-"]]
    for method, r in results.items():
        c = r["compare"]
        label = f"{method} (the default recipe)" if method == RepairConfig().method else method
        mix = r["repair"].get("interpolation") or {}
        stated = (f"<= {mix['break_bound'] * 100:.2f}" if mix.get("bound") == "clopper-pearson"
                  else "none (point estimate)" if mix else "none")
        rows.append([label, pct(c["shifted"]["after"]), pct(c["shifted"]["break_rate"]), pct(c["clean_unseen"]["after"]),
                     f"{c['clean_unseen']['break_rate'] * 100:.2f}", stated, pct(c.get("de_after", 0)),
                     f"{r['repair']['seconds']:.0f}"])
    head = ["model", f"{corruption}, photos never seen (%)", "its break rate (%)", "clean, photos not in Dc (%)",
            "clean break rate: measured (%)", "stated, 95% bound (%)", "De, unseen failures (%)", "time (s)"]
    return "\n".join([f"data: {about.get('data', '?')}",
                      f"demo: {Path(str(about.get('model', 'model'))).name} under {corruption} (5 severities x "
                      f"{n_test:,} test images): {len(split.index):,} failures -> {len(split.dc):,} collected (Dc) "
                      f"from {len(split.dc_sources()):,} photos; {first.get('de_images', 0):,} failures of the other "
                      "photos held out (De), the photos that calibrate the break limit left out of every number",
                      "", markdown_table(head, rows)]) + "\n"


def demo_data(data: str | None, out: Path, *, offline: bool, seed: int, device, limit: int = 0,
              train_model: bool = True, progress: Progress = no_progress, say: Callable[[str], None] = print):
    """(description, train, test, checkpoint or None): --data / $DEEPREPAIR_DATA; else CIFAR-10
    downloaded to the user cache; else, offline, scikit-learn's bundled digits with a tiny model
    trained here (its checkpoint, with ``train_model``)."""
    from ..data import download_cifar10
    from ..engine import pick_device

    if data or os.environ.get("DEEPREPAIR_DATA", "").strip():
        root, train = load_split(data, "train", limit, out)
        return str(root), train, load_split(data, "test", limit, out)[1], None
    reason = "--offline"
    if not offline:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "deeprepair"
        say(f"demo: no --data given; fetching CIFAR-10 into {cache} (once)")
        try:
            data = str(download_cifar10(cache))
            root, train = load_split(data, "train", limit, out)
            return f"CIFAR-10 downloaded to {root}", train, load_split(data, "test", limit, out)[1], None
        except DeepRepairError as exc:
            reason = f"CIFAR-10 could not be downloaded ({str(exc)[:120]})"
    say(f"demo: no dataset and {reason}: using scikit-learn's bundled handwritten digits and a tiny "
        "ResNet-20 trained on them here")
    train, test, ckpt = digits_fallback(out, seed, pick_device(device), progress, train_model=train_model)
    note = (f"no dataset and {reason}: using scikit-learn's bundled handwritten digits ({len(train):,} train / "
            f"{len(test):,} test, 8x8 upsampled to 32x32) and a tiny ResNet-20 trained on them here")
    return note, train, test, ckpt


def demo_to_folder(spec: ModelSpec, data: str | None, out: str | Path, *, corruption: str = "fog",
                   collect: int = 500, methods: tuple[str, ...] = ("finetune", "deeprepair", "augmix"), epochs: int = 2,
                   train_subset: int = 5000, seed: int = 0, offline: bool = False, limit: int = 0,
                   bundled: Path | None = None, progress: Progress = no_progress, say: Callable[[str], None] = print) -> Outcome:
    """End to end: corrupt the test set, mine the model's failures, repair it with each method,
    compare; demo.md and demo.json in ``out``. ``spec.path`` None: the ``bundled`` checkpoint (or,
    on the offline digits, a tiny model trained here)."""
    from ..corruptions import get_corruption

    get_corruption(corruption)  # an unknown name is a one-line error before any work starts
    out = Path(out)
    note, train, test, ckpt = demo_data(data, out, offline=offline, seed=seed, device=spec.device, limit=limit,
                                        train_model=spec.path is None, progress=progress, say=say)
    if spec.path is None:
        spec = replace(spec, path=str(ckpt or bundled))
        if not Path(spec.path).is_file():
            raise DeepRepairError(f"no model given and the bundled {spec.path} is missing: train one "
                                  "with `deeprepair train --arch resnet-20 --out M.safetensors` and pass --model M.safetensors")
    model, meta, device = open_model(spec, test.classes, test.x)
    check_images(test, meta, "test")
    out_dir(out)
    res = run_demo(model, train, test, out, corruption=corruption, collect=collect, methods=tuple(methods),
                   epochs=epochs, train_subset=train_subset, seed=seed, precision=spec.precision,
                   device=device, progress=progress, say=say, about={"model": spec.path, "data": note})
    return Outcome({"out": str(out), "seconds": res["seconds"], "results": res["results"]},
                   [res["table"], f"one seed, one corruption: a demonstration, not a benchmark (see benchmarks/). "
                                  f"Wrote {out}/demo.md, demo.json and report-METHOD.html (pictures) in {res['seconds']:.0f} s"])
