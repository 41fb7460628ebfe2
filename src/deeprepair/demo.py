"""The demo as a library: a deployed model meets one corruption; mine its failures from whole
photos (leak-free), repair a copy with each method, and report what a user lives with.

``run_demo`` is what ``deeprepair demo`` runs once the data and the model are resolved;
``digits_fallback`` is its offline data (scikit-learn's bundled digits) and tiny model.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch.nn as nn

from .data import ImageSet
from .errors import DeepRepairError

DIGITS_EPOCHS = 15  # the offline demo's tiny model: ~97% on the digits' test split

# progress(total, description) -> a context manager whose value has update(n)
Progress = Callable[[int, str], contextlib.AbstractContextManager]


class _Silent:
    def update(self, n: int) -> None:
        pass


def _no_progress(total: int, desc: str):
    return contextlib.nullcontext(_Silent())


def digits_fallback(out: Path, seed: int, device, progress: Progress = _no_progress,
                    train_model: bool = True) -> tuple[ImageSet, ImageSet, Path | None]:
    """(train, test, checkpoint): the bundled digits and, with ``train_model``, a resnet-20 trained
    on them (kept in ``out`` and reused by later demos)."""
    import torch

    from .data.digits import load_digits_dataset
    from .models import Classifier, create_model
    from .models.checkpoint import save_checkpoint
    from .train import TrainConfig, fit

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
             progress: Progress = _no_progress, say: Callable[[str], None] = lambda line: None,
             about: dict | None = None) -> dict:
    """Corrupt ``test`` at 5 severities, collect ``collect`` failures from whole photos, repair a
    copy of ``model`` with each method, compare; write ``out``/demo.md and demo.json. Returns
    ``{"results": {method: {"compare", "repair"}}, "table": markdown, "seconds"}``."""
    from .data.io import atomic_write_bytes
    from .evaluate import CorruptedSource, iter_predictions
    from .mining import export_collected, find_failures
    from .data import load_failure_set
    from .repair import RepairConfig, compare, repair, repair_report_markdown

    t0 = time.perf_counter()
    phases: dict[str, float] = {}  # where the demo's time goes (demo.json "seconds_by_phase")
    source = CorruptedSource(test.x, test.y, seed=seed)
    preds, stack = [], []
    with progress(len(test) * 5, f"demo: corrupt + predict ({corruption})") as bar:
        for _, s, imgs, pred in iter_predictions(model, source, [corruption], device=device,
                                                 precision=precision, progress=bar.update):
            preds.append(pred)
            stack.append(imgs)
    n_fail = int(sum((p != test.y).sum() for p in preds))
    if n_fail < 2 * collect:  # keep at least half of the failures held out, to measure the repair on
        collect = n_fail // 2
        say(f"demo: only {n_fail} failures; collecting {collect} (half) so the rest stay held out")
    phases["corrupt + predict the original"] = time.perf_counter() - t0
    split = find_failures(corruption, preds, test.y, collect, test.num_classes, seed)
    if len(split.dc) == 0:
        raise DeepRepairError(f"the model makes no mistakes under {corruption}: nothing to repair")
    stack = np.concatenate(stack)
    failures = load_failure_set(export_collected(split, stack, test.classes, out / f"{corruption}.dc.npz"),
                                test.classes)
    de_sel = split.index[split.de]
    heldout = ImageSet(stack[de_sel], split.y[split.de], test.classes) if len(de_sel) else None
    groups = {f"severity {s}": split.severity[split.de] == s for s in range(1, 6)} if heldout else None
    unseen = split.unseen()  # what a user lives with: every image of the photos the repair never saw
    shifted = ImageSet(stack[unseen], np.tile(test.y, 5)[unseen], test.classes)
    # the original's predictions, made once for all the repairs compared (compare's ``cache``): on
    # the shifted images they are the mining pass's own (same images, same model)
    before = {("shifted", id(model), len(shifted.x)): np.concatenate(preds)[unseen]}
    results = {}
    for method in methods:
        cfg = RepairConfig(method=method, epochs=epochs, train_subset=train_subset, seed=seed, precision=precision)
        n_ft = min(len(train) - min(1000, len(train) // 10), train_subset or len(train)) + len(failures)
        t1 = time.perf_counter()
        with progress(n_ft * epochs, f"demo: repair ({method})") as bar:
            repaired, report = repair(model, train, failures, cfg, device=device, progress=bar.update)
        t2 = time.perf_counter()
        cmp = compare(model, repaired, test, failures=failures, heldout=heldout, heldout_groups=groups,
                      shifted=shifted, dc_sources=split.dc_sources(), device=device, precision=precision,
                      cache=before)
        phases[f"repair {method}"], phases[f"compare {method}"] = t2 - t1, time.perf_counter() - t2
        results[method] = {"compare": cmp, "repair": report}
    table = demo_table(results, split, corruption, len(test), about or {})
    atomic_write_bytes(out / "demo.md", ("# deeprepair demo\n\n" + table + "\n" + "\n".join(
        repair_report_markdown(m, r["compare"], r["repair"]) for m, r in results.items())).encode())
    seconds = time.perf_counter() - t0
    phases["the rest (mining split, Dc file, report)"] = seconds - sum(phases.values())
    atomic_write_bytes(out / "demo.json", json.dumps({"corruption": corruption, **(about or {}), "seconds": seconds,
                                                      "seconds_by_phase": phases, "results": results},
                                                     indent=2).encode())
    return {"results": results, "table": table, "seconds": seconds, "seconds_by_phase": phases}


def demo_table(results: dict, split, corruption: str, n_test: int, about: dict) -> str:
    """The numbers to look at first, before and after each repair."""
    pct = lambda v: f"{v * 100:.1f}"  # noqa: E731
    first = next(iter(results.values()))["compare"]
    lines = [f"data: {about.get('data', '?')}",
             f"demo: {Path(str(about.get('model', 'model'))).name} under {corruption} (5 severities x {n_test:,} test "
             f"images): {len(split.index):,} failures -> {len(split.dc):,} collected (Dc) from "
             f"{len(split.dc_sources()):,} photos; {len(split.de):,} failures of the other photos held out (De)",
             "", f"| model | {corruption}, photos never seen (%) | its break rate (%) | clean, photos not in Dc (%) "
             "| clean break rate (%) | De, unseen failures (%) | time (s) |",
             "|---|---:|---:|---:|---:|---:|---:|",
             f"| original | {pct(first['shifted']['before'])} | - | {pct(first['clean_unseen']['before'])} | - | "
             f"{pct(first.get('de_before', 0))} | - |"]  # fmt: skip
    from .repair_config import RepairConfig

    for method, r in results.items():
        c = r["compare"]
        label = f"{method} (the default recipe)" if method == RepairConfig().method else method
        lines.append(f"| {label} | {pct(c['shifted']['after'])} | {pct(c['shifted']['break_rate'])} | "
                     f"{pct(c['clean_unseen']['after'])} | {pct(c['clean_unseen']['break_rate'])} | "
                     f"{pct(c.get('de_after', 0))} | {r['repair']['seconds']:.0f} |")
    return "\n".join(lines) + "\n"
