"""``deeprepair train`` and ``train-style``: train a classifier, or the adain style backend's
decoder, into a checkpoint file; both keep a state after every epoch and resume from it.

Named ``training``, not after its command: ``deeprepair.train`` is the library module it calls, and
no module name appears twice in the package."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..errors import DeepRepairError
from .inputs import (ModelSpec, Outcome, Progress, check_images, forget_on_failure, load_split, no_progress,
                     open_model, resume_guard)

# train's flags and their defaults: a flag differing from its default is written into the recorded command
_TRAIN_FLAGS = (("--batch-size", "batch_size", 128), ("--lr", "lr", 0.1), ("--schedule", "schedule", "cosine"),
                ("--label-smoothing", "label_smoothing", 0.0), ("--weight-decay", "weight_decay", 5e-4),
                ("--precision", "precision", "auto"), ("--val-split", "val_split", 0.1))


def _checkpoint_path(out: Path, resume: bool, what: str) -> Path:
    """The state file of a run writing ``out``, after checking that ``out`` may be written. ``out``
    is written last (atomically, after its .json): when it exists the run finished, and a state
    still beside it is what a kill between that write and the state's removal left."""
    if out.suffix != ".safetensors":
        raise DeepRepairError(f"--out must end in .safetensors, got {out}")
    state = out.with_suffix(".state.safetensors")
    if out.exists() and not resume:
        if state.exists():
            raise DeepRepairError(f"{out} is finished but its run was stopped before removing {state.name}: rerun "
                                  "with --resume to tidy it up (nothing is trained again)")
        raise DeepRepairError(f"{out} exists; choose another --out (existing {what} are never overwritten)")
    return state


def _finished(out: Path, state: Path, *records: Path) -> Outcome:
    """--resume of a run that finished: remove what a kill after its last write left; nothing to do."""
    left = [p.name for p in (state, *records) if p.exists()]
    for p in (state, *records):
        p.unlink(missing_ok=True)
    return Outcome({"checkpoint": str(out), "finished": True},
                   [f"{out} is a finished run: nothing to resume" + (f" (removed {', '.join(left)})" if left else "")])


def _no_stale_state(state: Path, resume: bool) -> None:
    if state.exists() and not resume:
        raise DeepRepairError(f"an interrupted run left {state}: add --resume to continue it, or delete it "
                              "to start over")


def train_to_file(arch: str | None, data: str | None, out: str | Path, cfg, *, device: str | None = None,
                  resume: bool = False, limit: int = 0, progress: Progress = no_progress, factory: str | None = None,
                  mean=None, std=None, init: str | None = None, val_split_given: bool = False) -> Outcome | None:
    """Train ``arch`` on the train split of ``data`` with ``cfg`` (a TrainConfig), scoring the test
    split after each epoch, and save ``out`` (.safetensors, .json beside it) with its provenance.
    With ``factory`` (a user's ``package.module:function``, e.g. ``torchvision.models:resnet18``)
    instead of ``arch``: that module, normalised by ``mean``/``std`` (1 or 3 values, default 0.5),
    started from the weights file ``init`` when given; ``out`` then holds the module's own state
    dict (load it with ``--model out --factory ... --num-classes K``).
    Under torchrun only rank 0 writes and returns an Outcome (the others return None)."""
    import torch

    from ..distributed import is_main
    from ..engine import keep_heap, pick_device
    from ..models import Classifier, create_model
    from ..train import data_fingerprint, holdout_split, read_state

    out = Path(out)
    state = _checkpoint_path(out, resume, "checkpoints")
    if out.exists():  # --resume of a run that finished: nothing to do
        return _finished(out, state)
    _no_stale_state(state, resume)
    _, full = load_split(data, "train", limit, out)
    _, test = load_split(data, "test", limit, out)
    held = holdout_split(full.y, cfg.val_split, cfg.seed)
    if val_split_given and cfg.val_split > 0 and not len(held):  # an option that would change nothing is refused
        raise DeepRepairError(f"--val-split {cfg.val_split:g} holds out no image of these {len(full):,} training images "
                              f"(each class gives a rounded share of its images): give a larger share, or 0")
    train = full.subset(np.setdiff1d(np.arange(len(full)), held)) if len(held) else full
    device = pick_device(device)
    keep_heap()
    torch.manual_seed(cfg.seed)
    if factory:
        model = _user_model(factory, train, mean, std, init)
        name = f"factory:{factory}"
    else:
        model = Classifier(create_model(arch, train.num_classes))
        name = arch
    t0 = time.perf_counter()
    with progress(len(train) * cfg.epochs, f"train {name}") as bar:
        if state.exists():  # fit resumes after the finished epochs: start the bar there
            bar.update(len(train) * read_state(state).get("epochs_done", 0))
        result = _fit(model, train, test, cfg, device, state, bar)
    if not is_main():  # under torchrun: rank 0 writes the checkpoint and reports
        return None
    val_split = {"share": cfg.val_split, "seed": cfg.seed, "images": len(held), "indices": held.tolist(),
                 "data_sha256": data_fingerprint(full.x, full.y)} if len(held) else None
    acc = _save_trained(model, arch, data, out, cfg, train, result, device, factory=factory, init=init,
                        val_split=val_split)
    state.unlink(missing_ok=True)
    secs = time.perf_counter() - t0
    return Outcome({"checkpoint": str(out), "clean_accuracy": acc, "train_seconds": result.seconds,
                    "epochs": cfg.epochs, "precision": result.precision},
                   [f"{name}: clean test accuracy {acc:.2%} after {cfg.epochs} epochs "
                    f"({result.seconds / 60:.1f} min of training, {result.precision}); wrote {out} and "
                    f"{out.with_suffix('.json')} ({secs:.0f} s this run)"])  # fmt: skip


def _user_model(factory: str, train, mean, std, init: str | None):
    """A user's module from ``factory`` in a Classifier, tried on one training image's size."""
    from ..models import Classifier
    from ..models.checkpoint import build_factory, check_normalisation, load_user_weights, output_width

    mean, std = check_normalisation(mean, "--mean"), check_normalisation(std, "--std")
    net = build_factory(factory, train.num_classes)
    if init:
        load_user_weights(net, init)
    model = Classifier(net, mean or (0.5,) * 3, std or (0.5,) * 3)
    h, w, c = train.x.shape[1:]
    width = output_width(model.eval(), "cpu", size=(h, w), channels=c)
    if width != train.num_classes:
        raise DeepRepairError(f"--factory {factory} built a model with {width} outputs but the data has "
                              f"{train.num_classes} classes: its function must take num_classes=")
    return model.train()


def _fit(model, train, test, cfg, device, state: Path, bar):
    from ..train import fit

    def on_epoch(row: dict) -> None:
        bar.set_postfix(epoch=row["epoch"], loss=f"{row['train_loss']:.3f}", test=f"{row['test_acc']:.4f}")

    return fit(model, train.x, train.y, cfg, device=device, eval_x=test.x, eval_y=test.y,
               state_path=state, progress=lambda n, epoch: bar.update(n), on_epoch=on_epoch)


def _save_trained(model, arch: str | None, data: str | None, out: Path, cfg, train, result, device,
                  factory: str | None = None, init: str | None = None, val_split: dict | None = None) -> float:
    """Save the trained ``model`` with its provenance (the command that remakes it); its test accuracy.
    A ``factory`` model is saved as its module's own weights (``save_user_weights``)."""
    import hashlib
    from dataclasses import asdict

    from ..models import count_parameters
    from ..models.checkpoint import save_checkpoint

    data_sha = hashlib.sha256(train.x.tobytes() + train.y.astype("<i8").tobytes()).hexdigest()
    acc = result.history[-1]["test_acc"]
    mean, std = ([float(f'{v:.7g}') for v in t.flatten().tolist()] for t in (model.mean, model.std))  # float32 -> as given
    which = f"--factory {factory}" if factory else f"--arch {arch}"
    if factory:
        which += f" --mean {' '.join(f'{v:g}' for v in mean)} --std {' '.join(f'{v:g}' for v in std)}"
        which += f" --init {init}" if init else ""
    cmd = (f"deeprepair train {which} --data {data or '$DEEPREPAIR_DATA'} --out {out} "
           f"--epochs {cfg.epochs} --seed {cfg.seed}")
    for flag, name, default in _TRAIN_FLAGS:
        if getattr(cfg, name) != default:
            cmd += f" {flag} {getattr(cfg, name)}"
    cmd += " --no-channels-last" * (not cfg.channels_last) + " --compile" * cfg.compile
    meta = {"arch": f"factory:{factory}" if factory else arch, "num_classes": train.num_classes,
            "classes": train.classes, "input_size": list(train.x.shape[1:]), "mean": mean, "std": std,
            "train_command": cmd, "train_config": asdict(cfg), "precision": result.precision,
            "data_sha256": data_sha, "train_images": len(train), "seed": cfg.seed,
            "clean_accuracy": acc, "parameters": count_parameters(model), "history": result.history,
            "train_seconds": round(result.seconds, 1), "device": str(device),
            "val_split": val_split}  # fmt: skip
    if not out.exists() and factory:
        from ..models.checkpoint import save_user_weights

        save_user_weights(model.cpu().net, out, meta)
    elif not out.exists():
        save_checkpoint(model.cpu(), out, meta)
    return acc


def train_style_to_file(spec: ModelSpec, data: str | None, out: str | Path, *, layer: str | None = None,
                        epochs: int = 4, batch_size: int = 128, lr: float = 2e-3, width: int = 64,
                        feature_weight: float = 1.0, seed: int = 0, resume: bool = False, limit: int = 0,
                        progress: Progress = no_progress) -> Outcome:
    """Train the adain backend's decoder for the encoder ``spec`` (its first layers, cut at
    ``layer``) on the train split of ``data``; save it to ``out``."""
    import torch

    from ..data import sha256_file
    from ..engine import keep_heap
    from ..style.adain import FeatureEncoder, save_style_checkpoint, train_decoder
    from ..train import data_fingerprint, read_state

    out = Path(out)
    state = _checkpoint_path(out, resume, "files")
    if out.exists():  # --resume of a run that finished
        return _finished(out, state, state.with_name(state.name.replace(".safetensors", "") + ".run.json"))
    _no_stale_state(state, resume)
    _, train = load_split(data, "train", limit, out)
    model, meta, device = open_model(spec, train.classes, train.x)
    check_images(train, meta, "train")
    keep_heap()
    encoder = FeatureEncoder(model.cpu(), layer, size=train.x.shape[1], channels=train.x.shape[3])
    run_file = resume_guard(state, {"model": sha256_file(spec.path), "training set": data_fingerprint(train.x, train.y),
                                    "--layer": layer})
    with forget_on_failure(run_file, state), progress(len(train) * epochs, f"train-style ({encoder.layer})") as bar:
        if state.exists():
            bar.update(len(train) * read_state(state).get("epochs_done", 0))
        decoder, history = train_decoder(
            encoder, train.x, epochs=epochs, batch_size=batch_size, lr=lr, feature_weight=feature_weight,
            width=width, seed=seed, device=device, precision=spec.precision, state_path=state,
            progress=lambda n, e: bar.update(n),
            on_epoch=lambda r: bar.set_postfix(epoch=r["epoch"], psnr=f"{r['psnr']:.1f}"))
    cmd = (f"deeprepair train-style --data {data or '$DEEPREPAIR_DATA'} --model {spec.path} "
           f"--out {out} --epochs {epochs} --seed {seed}")
    enc = {"checkpoint": str(spec.path)}
    if not spec.factory and meta.get("arch"):
        enc.update({k: meta[k] for k in ("arch", "num_classes", "mean", "std") if k in meta})
    smeta = {"encoder": enc, "train_command": cmd, "history": history, "train_images": len(train),
             "train_seconds": round(sum(r["seconds"] for r in history), 1), "torch_version": torch.__version__}
    save_style_checkpoint(out, encoder, decoder.cpu(), smeta)
    state.unlink(missing_ok=True)
    run_file.unlink(missing_ok=True)
    last = history[-1]
    return Outcome({"checkpoint": str(out), "layer": encoder.layer, "psnr": last["psnr"],
                    "train_seconds": smeta["train_seconds"]},
                   [f"decoder for {spec.path} at layer {encoder.layer!r}: reconstruction PSNR {last['psnr']:.1f} dB "
                    f"after {epochs} epochs ({smeta['train_seconds'] / 60:.1f} min); wrote {out}"])
