"""``deeprepair demo``: resolve the demo's data and model, then run ``deeprepair.demo.run_demo``."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Callable

from ..errors import DeepRepairError
from .inputs import ModelSpec, Outcome, Progress, check_images, load_split, no_progress, open_model, out_dir


def demo_data(data: str | None, out: Path, *, offline: bool, seed: int, device, limit: int = 0,
              train_model: bool = True, progress: Progress = no_progress, say: Callable[[str], None] = print):
    """(description, train, test, checkpoint or None): --data / $DEEPREPAIR_DATA; else CIFAR-10
    downloaded to the user cache; else, offline, scikit-learn's bundled digits with a tiny model
    trained here (its checkpoint, with ``train_model``)."""
    from ..data import download_cifar10
    from ..demo import digits_fallback
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
    from ..demo import run_demo

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
                                  f"Wrote {out}/demo.md and demo.json in {res['seconds']:.0f} s"])
