"""``deeprepair mine``: a model's failures per corruption, split into collected (Dc) and held-out
(De), or its failures on real labelled field photos (``mine --real``)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np

from ..errors import DeepRepairError
from .evaluation import model_on_test
from .inputs import ModelSpec, Outcome, Progress, check_images, no_progress, open_model, out_dir


MINING_KEYS = ("model_sha256", "collect", "seed", "source", "data_sha256", "split_by")  # what a mined folder is of


def _check_mining_record(out: Path, info: dict) -> None:
    """Refuse to add to a mining folder made with another model, test set or split."""
    old = out / "mining.json"
    if not old.is_file():
        return
    try:
        prev = json.loads(old.read_text())
    except (OSError, ValueError) as exc:
        raise DeepRepairError(f"{old} is unreadable ({exc}); choose a new --out") from None
    if not isinstance(prev, dict):
        raise DeepRepairError(f"{old} is not a mining record; choose a new --out")
    for key in MINING_KEYS:
        if prev.get(key) != info[key] and (key in prev or key != "data_sha256"):
            what = {"model_sha256": "model", "data_sha256": "test set"}.get(key)
            raise DeepRepairError(f"{out} holds failures mined with another {what or key}"
                                  f"{'' if what else f' ({prev.get(key)!r})'}; choose a new --out")


def mine_corruptions(spec: ModelSpec, data: str | None, out: str | Path, *, collect: int = 1000, seed: int = 0,
                     split_by: str = "image", export_heldout: bool = False, progress: Progress = no_progress,
                     **source) -> Outcome:
    """The model's failures on each corruption of the test split, split into Dc (``collect`` of
    them) and De; writes ``out``/<corruption>.dc.npz, .split.npz (and .de.npz) and table1.md.
    Rerun, it keeps the corruptions already mined."""
    import hashlib

    from ..data import sha256_file
    from ..mining import write_mining

    root, test, model, meta, device, src, names = model_on_test(spec, data, out=out, **source)
    out = Path(out)
    if out.resolve() == Path(root).resolve() or (src.folder and out.resolve() == src.folder.resolve()):
        raise DeepRepairError(f"--out {out} is an input folder: choose a separate output folder")
    data_sha = hashlib.sha256(np.ascontiguousarray(test.x).tobytes() + test.y.astype("<i8").tobytes()).hexdigest()
    info = {"model": str(spec.path), "model_sha256": sha256_file(spec.path), "collect": collect,
            "split_by": split_by, "seed": seed, "precision": spec.precision, "source": src.describe(),
            "data": str(root), "data_sha256": data_sha, "classes": test.classes, "corruptions": names}  # fmt: skip
    _check_mining_record(out, info)
    out_dir(out)
    splits, t0, settings = {}, time.perf_counter(), _settings(info)
    with progress(len(test) * 5 * len(names), "mine") as bar:
        for name in names:
            splits[name], fresh = _mine_one(model, src, name, test, out, collect, seed, split_by, export_heldout,
                                            device, spec.precision, bar, settings)
            if fresh:
                write_mining(out, splits, info, collect)
    write_mining(out, splits, info, collect)
    short = [n for n, s in splits.items() if len(s.dc) < collect]
    res = {n: {"failures": len(s.index), "collected": len(s.dc), "held_out": len(s.de),
              "dropped": len(s.index) - len(s.dc) - len(s.de)}
           for n, s in splits.items()}
    lines = [(out / "table1.md").read_text(),
             f"wrote {', '.join(f'{n}.dc.npz' for n in names)} (collected failures: x, y, severity), each with its "
             f".split.npz (Dc/De indices){' and .de.npz (held-out failures)' if export_heldout else ''}, to {out} "
             f"in {time.perf_counter() - t0:.0f} s"]
    if short:
        lines.append(f"fewer than {collect} failures to collect for: {', '.join(short)} "
                     "(all of them are in Dc; De is what is left)")
    return Outcome({"out": str(out), "table1": res, "short": short}, lines)


def _settings(info: dict) -> str:
    """The part of mine's record a corruption's split depends on, as the split file keeps it."""
    return json.dumps({k: info[k] for k in MINING_KEYS}, sort_keys=True)


def _mine_one(model, src, name: str, test, out: Path, collect: int, seed: int, split_by: str, export_heldout: bool,
              device, precision: str, bar, settings: str = ""):
    """(the FailureSplit of one corruption, whether it is new). ``NAME.split.npz`` is written first
    and records the corruption's predictions and Dc/De split: a rerun reads it back and only renders
    (never predicts again) what a kill left unwritten (``NAME.dc.npz``, and ``NAME.de.npz`` with
    ``export_heldout``); a file already there is kept as it is."""
    from ..corruptions import SEVERITIES
    from ..evaluate import predict_corrupted
    from ..mining import FailureSplit, export_collected, find_failures

    parts = ["dc"] + (["de"] if export_heldout else [])
    missing = [p for p in parts if not (out / f"{name}.{p}.npz").is_file()]
    if (out / f"{name}.split.npz").is_file():
        split = FailureSplit.load(out, name)
        if split.settings and settings and split.settings != settings:  # a kill before mining.json was written
            raise DeepRepairError(f"{out / f'{name}.split.npz'} was mined with another model, test set or "
                                  "settings; choose a new --out")
        if not missing:
            bar.update(len(test) * 5)
            return split, False
        stack = np.concatenate([src.images(name, s) for s in SEVERITIES])
        bar.update(len(test) * 5)
        fresh = True
    else:
        preds, stack = predict_corrupted(model, src, name, device=device, precision=precision, progress=bar.update)
        split = find_failures(name, preds, src.labels(), collect, test.num_classes, seed, split_by)
        split.settings = settings
        split.save(out)  # the corruption's record first: what follows is rendered from it
        missing, fresh = parts, True
    for part in reversed(missing):  # de before dc, as before
        export_collected(split, stack, test.classes, out / f"{name}.{part}.npz", part=part)
    return split, fresh


def _photo_shape(real: str) -> tuple[int, int, int] | None:
    """The (H, W, C) the photos of ``--real`` will have, read cheaply before the model is opened, so
    that a user's model (--factory, TorchScript) is tried at their size and channels: a folder's
    first image (folders decode to RGB), an .npz's ``x`` header (grey (N, H, W) gets C = 1). None
    when it cannot tell (no such path, no image, not an .npz): reading the photos says why."""
    import os
    import zipfile

    from ..data.datasets import IMAGE_EXTENSIONS, decode_image

    path = Path(real).expanduser()
    try:
        if path.is_dir():
            for d in sorted(c for c in path.iterdir() if c.is_dir() and not c.name.startswith(".")):
                for root, dirs, files in os.walk(d, followlinks=True):
                    dirs.sort()
                    found = sorted(f for f in files if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))
                    if found:
                        h, w, c = decode_image(Path(root) / found[0]).shape
                        return h, w, c
            return None
        with zipfile.ZipFile(path) as z, z.open("x.npy") as f:
            version = np.lib.format.read_magic(f)
            read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            shape = read[version](f)[0]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, DeepRepairError):
        return None
    if len(shape) == 3 and shape[2] not in (1, 3):  # grey (N, H, W): ImageSet adds the channel axis
        return shape[1], shape[2], 1
    return tuple(shape[1:]) if len(shape) == 4 and shape[3] in (1, 3) else None


def mine_real(spec: ModelSpec, real: str, out: str | Path, *, collect: int = 1000, seed: int = 0,
              field_fraction: float = 0.0, export_heldout: bool = False) -> Outcome:
    """The model's failures on real labelled field photos (no corruption): ``collect`` of them to
    real.dc.npz, the other photos to real.unseen.npz and, with ``field_fraction``, split into
    unlabelled field photos (real.field.npz) and evaluation photos (real.eval.npz)."""
    from ..data import load_failure_set
    from ..data.io import atomic_write_bytes
    from ..engine import predict
    from ..mining import split_real

    if not Path(real).expanduser().exists():
        raise DeepRepairError(f"--real {real} does not exist: give an .npz (x, y) or a folder of class sub-folders")
    shape = _photo_shape(real)  # a user's model is tried at the photos' size, not 32 x 32 x 3
    model, meta, device = open_model(spec, images=None if shape is None else np.zeros((1, *shape), np.uint8))
    classes = list(meta.get("classes") or [str(k) for k in range(meta["num_classes"])])
    photos = load_failure_set(real, classes)
    check_images(photos, meta, "--real")
    out = out_dir(Path(out))
    pred = predict(model, photos.x, device=device, precision=spec.precision)
    r = split_real(pred, photos.y, collect, len(classes), seed, field_fraction)
    parts = {"dc": r["dc"], "unseen": r["unseen"]}
    if export_heldout:
        parts["de"] = r["de"]
    if field_fraction:
        parts.update(field=r["field"], eval=r["eval"])
    for part, idx in parts.items():
        buf = io.BytesIO()
        labels = {} if part == "field" else {"y": photos.y[idx]}  # field photos go to repair unlabelled
        np.savez(buf, x=photos.x[idx], index=idx, classes=np.array(classes), **labels)
        atomic_write_bytes(out / f"real.{part}.npz", buf.getvalue())
    acc = float((pred == photos.y).mean())
    info = {"model": str(spec.path), "real": str(real), "photos": len(photos), "accuracy": acc,
            "failures": len(r["failures"]), "collected": len(r["dc"]), "seed": seed,
            "field_fraction": field_fraction, **{f"{p}_photos": len(i) for p, i in parts.items()}}
    atomic_write_bytes(out / "mining.json", json.dumps(info, indent=2).encode())
    lines = [f"{Path(spec.path).name} gets {acc:.1%} of {len(photos):,} real photos right: {len(r['failures']):,} "
             f"failures, {len(r['dc']):,} collected -> {out}/real.dc.npz (repair --failures); the "
             f"{len(r['unseen']):,} other photos -> real.unseen.npz (repair --eval-shifted)"]
    if field_fraction:
        lines.append(f"split seeded into {len(r['field']):,} unlabelled field photos (real.field.npz: repair --field) "
                     f"and {len(r['eval']):,} evaluation photos (real.eval.npz: repair --eval-shifted)")
    return Outcome({"out": str(out), **info}, lines)
