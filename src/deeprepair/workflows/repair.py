"""``deeprepair repair``: load the inputs of a repair, check them against the model, repair
(resumably), compare before and after, and save the repaired checkpoint and its reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..data.io import atomic_write_bytes
from ..errors import DeepRepairError
from .inputs import (ModelSpec, Outcome, Progress, check_images, forget_on_failure, load_split, no_progress,
                     open_model, out_dir, resume_guard)


def _load_inputs(spec: ModelSpec, data, failures: str, *, eval_failures, field, eval_shifted, gate_holdout, gate: bool,
                 gate_keep, preset: str | None, limit: int, out, val: str | None = None,
                 field_eval: str | None = None) -> dict:
    """Every input of a repair, each checked against the model: a one-line error before any work."""
    from ..data import load_failure_set, load_unlabelled

    _, train = load_split(data, "train", limit, out)
    _, test = load_split(data, "test", limit, out)
    if test.classes != train.classes:
        raise DeepRepairError(f"the test split's classes ({', '.join(test.classes[:5])}, ...) are not the training "
                              f"split's ({', '.join(train.classes[:5])}, ...): give both splits the same class folders")
    model, meta, device = open_model(spec, train.classes, train.x)
    check_images(train, meta, "training")
    got = {"train": train, "test": test, "model": model, "meta": meta, "device": device}
    got["failures"] = load_failure_set(failures, train.classes)
    check_images(got["failures"], meta, "failure")
    got["heldout"] = load_failure_set(eval_failures, train.classes) if eval_failures else None
    if got["heldout"] is not None:
        check_images(got["heldout"], meta, "held-out failure")
    for flag, value in (("--gate-holdout", gate_holdout), ("--gate-keep", gate_keep is not None)):
        if value and not gate:
            raise DeepRepairError(f"{flag} sets the --gate threshold: add --gate, or drop {flag}")
    got["clean_heldout"] = None
    if gate_holdout:
        try:  # the same format as the failures: .npz (x, y) or class folders
            got["clean_heldout"] = load_failure_set(gate_holdout, train.classes)
        except DeepRepairError as e:
            raise DeepRepairError(f"--gate-holdout: {e}".replace("failure images", "images")) from None
        check_images(got["clean_heldout"], meta, "--gate-holdout")
    if gate and _own_module(meta):
        raise DeepRepairError(f"--gate{' (on with --safe)' if preset == 'safe' else ''} saves the original and the "
                              "repaired network together, which only a deeprepair checkpoint can hold; use "
                              "--interpolate for your own module")
    got["field"] = load_unlabelled(field) if field else None
    if got["field"] is not None and got["field"].shape[1:] != train.x.shape[1:]:
        raise DeepRepairError(f"--field images are {got['field'].shape[1:]} but the training images are "
                              f"{train.x.shape[1:]} (H, W, C): resize them to the model's input size")
    got["shifted"] = load_failure_set(eval_shifted, train.classes) if eval_shifted else None
    if got["shifted"] is not None:
        check_images(got["shifted"], meta, "--eval-shifted")
    got["train"], got["val"] = calibration_set(train, meta, val)
    got["field_eval"] = None
    if field_eval:
        try:
            got["field_eval"] = load_failure_set(field_eval, train.classes)
        except DeepRepairError as e:
            raise DeepRepairError(f"--field-eval: {e}".replace("failure images", "images")) from None
        check_images(got["field_eval"], meta, "--field-eval")
    _never_evaluated_on(got)
    return got


def _never_evaluated_on(got: dict) -> None:
    """What calibrates (--val) or checks (--field-eval) a repair must not also measure it."""
    from ..train import image_digests

    for name in ("val", "field_eval"):
        ds = got[name]
        if ds is None:
            continue
        mine = image_digests(ds.x)
        for flag, other in (("--eval-failures", got["heldout"]), ("--eval-shifted", got["shifted"])):
            if other is not None and np.isin(mine, image_digests(other.x)).any():
                raise DeepRepairError(f"--{name.replace('_', '-')} and {flag} share images: a repair is never measured "
                                      f"on the images that chose it; give {flag} other photos")


def calibration_set(train, meta: dict, val: str | None):
    """(the training images repair may fine-tune on, the images the break limit is certified on):
    ``--val`` (the user's labelled images, refused where they repeat a training image), else the
    validation split ``deeprepair train`` held out and recorded in the checkpoint (taken out of
    the training images), else (train, None): repair then holds back training images and says the
    limit is optimistic."""
    from ..data import load_failure_set
    from ..train import data_fingerprint, image_digests

    held = (meta.get("val_split") or {})
    recorded = held.get("indices") if held.get("data_sha256") == data_fingerprint(train.x, train.y) else None
    if val:
        try:
            v = load_failure_set(val, train.classes)
        except DeepRepairError as e:
            raise DeepRepairError(f"--val: {e}".replace("failure images", "images")) from None
        check_images(v, meta, "--val")
        trained = np.ones(len(train), bool)
        if recorded is not None:
            trained[np.asarray(recorded, np.int64)] = False
        overlap = np.isin(image_digests(v.x), image_digests(train.x[trained]))
        if overlap.any():
            raise DeepRepairError(f"--val: {int(overlap.sum())} of its {len(v)} images are training images the model "
                                  "was trained on; give images it never saw (e.g. the validation split `deeprepair "
                                  "train` held out)")
        return train, v
    if recorded is not None:
        keep = np.ones(len(train), bool)
        keep[np.asarray(recorded, np.int64)] = False
        return train.subset(np.flatnonzero(keep)), train.subset(np.asarray(recorded, np.int64))
    return train, None


def _own_module(meta: dict) -> bool:
    """A user's module (--factory or TorchScript), not a deeprepair checkpoint."""
    return str(meta.get("arch", "")).startswith(("factory:", "torchscript:"))


MODEL_FILES = ("model.safetensors", "model_state.pt")  # model_state.pt: a user's own module, repaired
REPORTS = ("report.json", "report.md", "report.html")  # written after the model file, in this order


def run_repair(spec: ModelSpec, data: str | None, failures: str, out: str | Path, cfg, *,
               eval_failures: str | None = None, field: str | None = None, eval_shifted: str | None = None,
               gate_holdout: str | None = None, force: bool = False, preset: str | None = None, limit: int = 0,
               command: str = "", progress: Progress = no_progress, val: str | None = None,
               field_eval: str | None = None) -> Outcome | None:
    """Repair ``spec``'s model with ``cfg`` (a RepairConfig; a fractional train_subset is a share of
    the training split) from the collected ``failures``; resumes an interrupted run in ``out``.
    Writes out/model.safetensors, report.json and report.md. Under torchrun only rank 0 evaluates,
    writes and returns an Outcome (the others return None).

    The completion record is ``repair.state.run.json``: written before any work, it holds the
    repair's report once training is done (before the first final file), and it goes last. A
    folder with a model file and that record is a run stopped between its final writes: the same
    command finishes it (the missing reports, from the saved model) without repairing again;
    ``force`` is only for replacing a finished result."""
    import torch

    from ..data import sha256_file
    from ..distributed import is_main
    from ..repair import repair
    from ..repair.core import resolve_config, run_state_paths
    from ..train import data_fingerprint

    out = Path(out)
    state = out / "repair.state.safetensors"
    record = out / "repair.state.run.json"
    made = next((out / m for m in MODEL_FILES if (out / m).exists()), None)
    if made is not None and not force and not record.exists():
        if all((out / r).is_file() for r in REPORTS):
            raise DeepRepairError(f"{made} exists; choose another --out or pass --force to replace it")
        raise DeepRepairError(f"{out} holds {made.name} without its reports and without the record of the run that "
                              f"made it ({record.name}): pass --force to repair again, or choose another --out")
    got = _load_inputs(spec, data, failures, eval_failures=eval_failures, field=field, eval_shifted=eval_shifted,
                       gate_holdout=gate_holdout, gate=cfg.gate, gate_keep=cfg.gate_keep, preset=preset, limit=limit, out=out, val=val,
                       field_eval=field_eval)
    train, fails, clean, fld = got["train"], got["failures"], got["clean_heldout"], got["field"]
    cfg = resolve_config(cfg, {}, len(train))
    out_dir(out)
    run_id = {  # what this run is made from: a state of another run is refused
        "model": sha256_file(spec.path), "training set": data_fingerprint(train.x, train.y),
        "failure set": data_fingerprint(fails.x, fails.y),
        "--gate-holdout": data_fingerprint(clean.x, clean.y) if clean else None,
        "--field": data_fingerprint(fld, np.zeros(len(fld), np.int64)) if fld is not None else None,
        "--val": data_fingerprint(got["val"].x, got["val"].y) if got["val"] is not None else None,
        "--field-eval": data_fingerprint(got["field_eval"].x, got["field_eval"].y) if got["field_eval"] is not None
        else None}
    if made is not None and not force:
        return _finish(spec, got, cfg, run_id, out, made, failures, eval_failures, gate_holdout, command)
    run_file = resume_guard(state, run_id)
    torch.manual_seed(cfg.seed)
    held_back = 0 if got["val"] is not None else min(1000, len(train) // 10)
    n_dt = min(len(train) - held_back, cfg.train_subset or len(train))
    n_ft = n_dt + len(fails) * cfg.failure_copies(n_dt, len(fails))
    runs = run_state_paths(state, cfg)
    with forget_on_failure(run_file, *runs), progress(n_ft * cfg.epochs * len(runs), f"repair ({cfg.method})") as bar:
        repaired, report = repair(got["model"], train, fails, cfg, device=got["device"], state_path=state,
                                  progress=bar.update, clean_heldout=clean, field=fld, val=got["val"],
                                  field_eval=got["field_eval"])
    if not is_main():  # under torchrun: rank 0 evaluates and writes the checkpoint and reports
        return None
    for stale in (out / m for m in MODEL_FILES + REPORTS):  # --force: no file of the replaced result stays
        stale.unlink(missing_ok=True)
    atomic_write_bytes(run_file, json.dumps({**run_id, "repair config": _config_record(cfg), "repair report": report},
                                            indent=2).encode())
    full, md = _compare_and_save(spec, got, repaired, report, out, failures, eval_failures, gate_holdout, command)
    return _done(out, runs, run_file, full, md)


def _config_record(cfg) -> dict:
    from dataclasses import asdict

    return json.loads(json.dumps(asdict(cfg)))


def _done(out: Path, states: list[Path], run_file: Path, full: dict, md: str, how: str = "wrote") -> Outcome:
    """Remove the resume states (one per averaged run), then the completion record: the folder is finished."""
    for path in states:
        path.unlink(missing_ok=True)
    run_file.unlink(missing_ok=True)
    return Outcome(full, [md, f"{how} {out}/model.safetensors, report.json, report.md and report.html (figures)"])


def _finish(spec: ModelSpec, got: dict, cfg, run_id: dict, out: Path, made: Path, failures: str,
            eval_failures: str | None, gate_holdout: str | None, command: str) -> Outcome | None:
    """Finish a repair stopped between its final writes: compare the saved model and write the
    reports that are missing, from the repair's report kept in the completion record."""
    from ..distributed import is_main
    from ..repair import repair_report_markdown
    from ..repair.core import run_state_paths

    record = out / "repair.state.run.json"
    try:
        saved = json.loads(record.read_text())
    except (OSError, ValueError):
        saved = None
    redo = "pass --force to repair again, or choose another --out"
    if not isinstance(saved, dict) or not isinstance(saved.get("repair report"), dict):
        raise DeepRepairError(f"{out} holds {made.name} but its run record ({record.name}) is unreadable or was written "
                              f"before training ended: {redo}")
    for key, value in run_id.items():
        if saved.get(key) != value:
            raise DeepRepairError(f"{made} was repaired from another {key}: rerun the command that made it to "
                                  f"finish its reports, or {redo}")
    if saved.get("repair config") != _config_record(cfg):
        changed = sorted(k for k, v in _config_record(cfg).items() if (saved.get("repair config") or {}).get(k) != v)
        raise DeepRepairError(f"{made} was repaired with other repair options ({', '.join(changed)}): rerun the command "
                              f"that made it to finish its reports, or {redo}")
    if not is_main():
        return None
    from ..models.checkpoint import load_model

    state = out / "repair.state.safetensors"
    states = run_state_paths(state, cfg)
    try:
        repaired, _ = load_model(made, device=got["device"], factory=spec.factory, num_classes=spec.num_classes,
                                 mean=spec.mean, std=spec.std)
    except DeepRepairError as exc:  # a truncated or foreign file: the message says what to do
        raise DeepRepairError(f"{made} is not the repaired model of this run ({exc}): {redo}") from None
    repaired.eval()
    if (out / "report.json").is_file():
        try:
            full = json.loads((out / "report.json").read_text())
            md = repair_report_markdown(Path(failures).name, full["compare"], full["repair"])
        except (OSError, ValueError, KeyError, TypeError):
            raise DeepRepairError(f"{out / 'report.json'} is unreadable: delete it and rerun to write it again") from None
        if not (out / "report.md").is_file():
            atomic_write_bytes(out / "report.md", md.encode())
        if not (out / "report.html").is_file():
            atomic_write_bytes(out / "report.html", _pictures(got, repaired, full["repair"], md, failures,
                                                              spec.precision).encode())
        return _done(out, states, record, full, md, how="finished")
    full, md = _compare_and_save(spec, got, repaired, saved["repair report"], out, failures, eval_failures,
                                 gate_holdout, command, model_saved=True)
    return _done(out, states, record, full, md, how="finished")


def _compare_and_save(spec: ModelSpec, got: dict, repaired, report: dict, out: Path, failures: str,
                      eval_failures: str | None, gate_holdout: str | None, command: str,
                      model_saved: bool = False) -> tuple[dict, str]:
    """Compare the original and the repaired model, save the repaired one (unless ``model_saved``)
    and report.json/.md."""
    from ..data import sha256_file
    from ..models.checkpoint import save_checkpoint, save_user_weights
    from ..repair import compare, repair_report_markdown

    groups = None
    if got["heldout"] is not None and eval_failures.endswith(".npz"):
        with np.load(eval_failures) as f:
            if "severity" in f.files:
                sev = f["severity"]
                groups = {f"severity {s}": sev == s for s in sorted(set(sev.tolist()))}
    meta, test = got["meta"], got["test"]
    cmp = compare(got["model"], repaired, test, failures=got["failures"], heldout=got["heldout"], heldout_groups=groups,
                  shifted=got["shifted"], dc_sources=dc_sources(failures, len(test)), device=got["device"],
                  precision=spec.precision)
    rmeta = {**{k: v for k, v in meta.items() if k in ("arch", "num_classes", "classes", "mean", "std",
                                                      "input_size")},
             "parent": str(spec.path), "parent_sha256": sha256_file(spec.path),
             "failures": str(failures), "failures_sha256": sha256_file(failures)
             if Path(failures).is_file() else None, "repair_config": report["config"],
             "clean_accuracy": cmp["clean_after"], "repair_command": command,
             "gate": report.get("gate"), "gate_holdout": str(gate_holdout) if gate_holdout else None}  # fmt: skip
    if model_saved:
        pass
    elif _own_module(meta):  # the module's own weights and its normalisation, read back with its --factory
        save_user_weights(repaired.net, out / "model.safetensors", rmeta)
        (out / "model_state.pt").unlink(missing_ok=True)  # the form this was written in before (with --force)
    else:
        save_checkpoint(repaired.cpu(), out / "model.safetensors", rmeta)
    full = {"compare": cmp, "repair": report, "metadata": rmeta}
    atomic_write_bytes(out / "report.json", json.dumps(full, indent=2).encode())
    md = repair_report_markdown(Path(failures).name, cmp, report)
    atomic_write_bytes(out / "report.md", md.encode())
    atomic_write_bytes(out / "report.html", _pictures(got, repaired, report, md, failures, spec.precision).encode())
    return full, md


def _pictures(got: dict, repaired, report: dict, md: str, failures: str, precision: str) -> str:
    """report.html: the validation frontier, the galleries and accuracy per class (repair/pictures.py)."""
    from ..engine import predict
    from ..repair.pictures import repair_html

    test, ho, dev = got["test"], got["heldout"], got["device"]
    src = dc_sources(failures, len(test))
    unseen = None if src is None else ~np.isin(np.arange(len(test)), src)
    kw = {}
    if ho is not None:
        kw = dict(heldout_x=ho.x, heldout_y=ho.y, heldout_before=predict(got["model"], ho.x, device=dev, precision=precision),
                  heldout_after=predict(repaired, ho.x, device=dev, precision=precision))
    return repair_html(f"Repair report: {Path(failures).name}", md, report, list(test.classes), test_x=test.x,
                       test_y=test.y, test_before=predict(got["model"], test.x, device=dev, precision=precision),
                       test_after=predict(repaired, test.x, device=dev, precision=precision), unseen=unseen, **kw)


def dc_sources(failures: str, n_test: int) -> np.ndarray | None:
    """The test images a failure set written by `deeprepair mine` was rendered from (its ``index``
    into the 5-severity stack), so that clean accuracy is also read on the test images it never saw."""
    if not str(failures).endswith(".npz"):
        return None
    with np.load(failures, allow_pickle=False) as f:
        if "index" not in f.files or f["index"].ndim != 1 or not len(f["index"]):
            return None
        index = f["index"].astype(np.int64)
    if index.min() < 0 or index.max() >= 5 * n_test:
        return None
    return np.unique(index % n_test)
