"""What every command checks before it works: the data split, the model (and that it fits the
data), the output folder, the corruption names, the style options, and the record that lets a
resumable run refuse a state made from other inputs. Each refusal is a one-line DeepRepairError
that names the flag to change."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DeepRepairError

# progress(total, description) -> a context manager whose value has update(n) (and set_postfix(**kw))
Progress = Callable[[int, str], contextlib.AbstractContextManager]


class _Silent:
    def update(self, n: int) -> None:
        pass

    def set_postfix(self, **kw) -> None:
        pass


def no_progress(total: int, desc: str):
    return contextlib.nullcontext(_Silent())


@dataclass
class Outcome:
    """What a command did: ``result`` (printed by ``--json``) and ``lines`` (the summary for people)."""

    result: dict
    lines: list[str] = field(default_factory=list)


@dataclass
class ModelSpec:
    """Where a model comes from (``--model`` and the flags for users' own models) and where it runs."""

    path: str | None
    factory: str | None = None
    num_classes: int | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    allow_pickle: bool = False
    device: str | None = None
    precision: str = "auto"


def out_dir(out: Path) -> Path:
    """Create the output folder ``out``, or say in one line why it cannot be."""
    if out.exists() and not out.is_dir():
        raise DeepRepairError(f"--out {out} is a file, not a folder: choose a folder (it is created)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeepRepairError(f"cannot create the output folder {out} ({exc.strerror or exc}); choose "
                              "another --out in a writable place") from None
    return out


def load_split(data: str | None, split: str, limit: int = 0, out: str | Path | None = None):
    """(root, dataset): ``split`` of ``data`` (else $DEEPREPAIR_DATA), a fixed random subset of
    ``limit`` images when given; ``out`` must not be the data folder."""
    from ..data import load_dataset, resolve_data_dir

    root = resolve_data_dir(data)
    if out and Path(out).resolve() == Path(root).resolve():
        raise DeepRepairError(f"--out {out} is the input data folder: choose a separate output folder")
    ds = load_dataset(root, split=split)
    if limit and limit < len(ds):  # a seeded random subset: datasets are often sorted by class
        ds = ds.subset(np.sort(np.random.default_rng(0).choice(len(ds), limit, replace=False)))
    return root, ds


def corruption_names(arg: list[str] | None, heldout: bool) -> list[str]:
    """The corruptions named by ``--corruptions`` (comma or space separated; ``all``), else the
    15 of the paper (and the 4 held-out ones with ``heldout``)."""
    from ..corruptions import ALL_CORRUPTIONS, CORRUPTIONS, get_corruption

    if not arg:
        return list(ALL_CORRUPTIONS if heldout else CORRUPTIONS)
    names = [n for a in arg for n in a.split(",") if n]
    if not names:
        raise DeepRepairError("--corruptions names no corruption; give names such as fog contrast (see "
                              "`deeprepair corruptions`), or leave it out for the 15 of the paper")
    if names == ["all"]:
        return list(ALL_CORRUPTIONS)
    for n in names:
        get_corruption(n)
    return names


def open_model(spec: ModelSpec, classes: list[str] | None = None, images=None):
    """(model, metadata, device): the model of ``spec``, checked against the data's ``classes``;
    a user's model (--factory, TorchScript) is tried on the size and channels of ``images``
    (an array of (N, H, W, C) images, e.g. the split it will see), else on 32 x 32 RGB."""
    from ..engine import pick_device
    from ..models.checkpoint import load_model
    from ..repair import gate as _gate  # noqa: F401  registers the routed-repair ("gate") checkpoint kind

    device = pick_device(spec.device)
    model, meta = load_model(spec.path, factory=spec.factory, num_classes=spec.num_classes,
                             mean=spec.mean, std=spec.std, allow_pickle=spec.allow_pickle,
                             device=device, input_size=None if images is None else tuple(images.shape[1:]))  # fmt: skip
    if classes is not None and meta["num_classes"] != len(classes):
        raise DeepRepairError(f"the model has {meta['num_classes']} outputs but the data has "
                              f"{len(classes)} classes: use the model trained on this data")
    named = [str(c) for c in meta.get("classes") or []]
    unnamed = [str(i) for i in range(len(named))]  # data without class names (no classes.txt) says nothing
    if classes is not None and named and named != list(classes) and unnamed not in (named, list(classes)):
        diff = next(i for i, (a, b) in enumerate(zip(named, classes)) if a != b)
        raise DeepRepairError(f"the model's class {diff} is {named[diff]!r} but the data's is {classes[diff]!r}: its "
                              "outputs would be read as other classes; use the data it was trained on (the same class "
                              "folders, or a classes.txt listing its classes in order)")
    return model, meta, device


def check_images(ds, meta: dict, what: str) -> None:
    want = meta.get("input_size")
    if want and list(ds.x.shape[1:]) != list(want):
        raise DeepRepairError(f"{what} images are {tuple(ds.x.shape[1:])} (H, W, C) but the model "
                              f"expects {tuple(want)}: resize the images or use a matching model")


def style_options(backend: str, mode: str | None, checkpoint: str | None) -> dict:
    """Backend options from the flags; adain needs the decoder made by `train-style`."""
    if backend == "adain":
        if not checkpoint:
            raise DeepRepairError("the adain style backend needs --style-checkpoint (make one with "
                                  "`deeprepair train-style`)")
        if mode and mode not in ("adain", "wct"):
            raise DeepRepairError(f"adain's mode is adain or wct, not {mode!r}")
        from ..style.adain import check_style_checkpoint

        check_style_checkpoint(checkpoint)  # a style decoder's checkpoint, before any work starts
        return {"checkpoint": checkpoint, **({"mode": mode} if mode else {})}
    if checkpoint:
        raise DeepRepairError(f"a style checkpoint is for the adain backend, not {backend}")
    if mode and backend != "wavelet":
        raise DeepRepairError(f"a matching mode is for the wavelet or adain backends, not {backend}")
    if mode in ("adain",):
        raise DeepRepairError("mode adain is for the adain backend; the wavelet modes are hist, meanstd, wct")
    return {"mode": mode} if mode else {}


def resume_guard(state: Path, run_id: dict) -> Path:
    """Record what a resumable run is made from beside its ``state`` file (before the first state is
    saved), and refuse to resume a state that was made from anything else. Returns the record's path."""
    from ..data.io import atomic_write_bytes

    record = state.with_name(state.name.replace(".safetensors", "") + ".run.json")
    if state.exists():
        try:
            saved = json.loads(record.read_text())
        except (OSError, ValueError):
            saved = None
        if not isinstance(saved, dict):
            raise DeepRepairError(f"{state} has no readable record of the run that made it ({record.name}); "
                                  "delete it to start over")
        for key, value in run_id.items():
            if saved.get(key) != value:
                raise DeepRepairError(f"{state} belongs to a run with another {key}; rerun with the same inputs, "
                                      "choose another --out, or delete it to start over")
    else:
        atomic_write_bytes(record, json.dumps(run_id, indent=2).encode())
    return record


@contextlib.contextmanager
def forget_on_failure(record: Path, *states: Path):
    """Remove the run ``record`` of ``resume_guard`` when the run fails before saving any state
    (bad input found inside it): nothing is left behind for a run that never started."""
    try:
        yield
    except BaseException:
        if not any(s.exists() for s in states):
            record.unlink(missing_ok=True)
        raise
