"""Standard supervised training of a classifier (pad-4 crop + flip, SGD Nesterov, cosine), resumable."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import distributed
from .data.io import atomic_write_bytes
from .engine import autocast, batches, compile_model, predict, resolve_precision, to_float
from .errors import DeepRepairError


@dataclass
class TrainConfig:
    """Hyper-parameters of a training run (stored in checkpoint metadata)."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = True
    schedule: str = "cosine"       # "cosine" (per step, to 0) or "onecycle" (linear up, cosine down)
    warmup_epochs: float = 1.0     # linear warm-up for "cosine"; ignored by "onecycle" (30% up)
    label_smoothing: float = 0.0
    seed: int = 0
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False          # torch.compile the model (DenseNet: ~1.5x on CPU, after ~2 min compiling)
    val_split: float = 0.1         # share of the training images held out (stratified), never trained on: the
                                   # images repair certifies its break limit on (recorded in the checkpoint)

    def check(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise DeepRepairError("epochs and batch size must be positive integers")
        if self.schedule not in ("cosine", "onecycle"):
            raise DeepRepairError(f"schedule must be cosine or onecycle, got {self.schedule!r}")
        if not 0 <= self.label_smoothing < 1:
            raise DeepRepairError("label smoothing must be in [0, 1)")
        if not 0 <= self.val_split < 0.5:
            raise DeepRepairError("val_split must be in [0, 0.5) (0: train on every image)")


def schedule_lr(lr: float, step: int, total: int, schedule: str = "cosine", warmup: float = 0.0) -> float:
    """The learning rate at optimiser step ``step`` of ``total`` (train's and repair's one
    schedule): ``cosine`` decays per step to 0 after a linear warm-up over the first ``warmup``
    share of the steps; ``onecycle`` rises from 4% over the first 30% and decays by cosine."""
    t = step / max(total, 1)
    if schedule == "onecycle":
        up = 0.3
        if t < up:
            return lr * (0.04 + 0.96 * t / up)
        return lr * 0.5 * (1 + math.cos(math.pi * (t - up) / (1 - up)))
    if t < warmup:
        return lr * (step + 1) / max(warmup * total, 1)
    return lr * 0.5 * (1 + math.cos(math.pi * (t - warmup) / (1 - warmup)))


def lr_at(cfg: TrainConfig, step: int, total: int) -> float:
    """Learning rate of a training run at optimiser step ``step`` of ``total``."""
    return schedule_lr(cfg.lr, step, total, cfg.schedule, 0.0 if cfg.schedule == "onecycle"
                       else cfg.warmup_epochs / cfg.epochs)


def crop_flip(xb: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random ``pad``-pixel zero-padded crop and horizontal flip of a uint8 NHWC batch, batched."""
    n, h, w, _ = xb.shape
    padded = F.pad(xb, (0, 0, pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n, 1), generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (n, 1), generator=gen)
    flip = torch.rand(n, 1, generator=gen) < 0.5
    cols = torch.arange(w).expand(n, w)
    cols = torch.where(flip, w - 1 - cols, cols) + ox
    rows = torch.arange(h) + oy
    return padded[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def save_run_state(path: Path, model: nn.Module, opt: torch.optim.Optimizer, meta: dict,
                   best: dict[str, torch.Tensor] | None = None) -> None:
    """Model, SGD momentum (and optionally a best-so-far state dict) plus a JSON record, atomically."""
    from safetensors.torch import save

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in (best or {}).items()})
    for i, p in enumerate(opt.param_groups[0]["params"]):
        for key, val in opt.state.get(p, {}).items():  # SGD momentum, Adam moments and step
            if isinstance(val, torch.Tensor):
                tensors[f"opt.{i}.{key}"] = val.detach().cpu().contiguous()
    atomic_write_bytes(path, save(tensors, metadata={"meta": json.dumps(meta)}))


def read_state(path: Path) -> dict:
    """The progress record (config, epochs done, history) of a resumable training state file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads(f.metadata()["meta"])
    except Exception as exc:
        raise DeepRepairError(f"{path} is not a training state file ({exc}); delete it to start over") from None


def load_run_state(path: Path, model: nn.Module, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Restore what ``save_run_state`` wrote; returns (record, best state dict or {}).

    A file that is not such a state (random bytes, a pickle, a model checkpoint, another
    architecture's state) is a one-line error, never a traceback."""
    try:
        return _load_run_state(path, model, opt)
    except DeepRepairError:
        raise
    except Exception as exc:  # safetensors' own errors, KeyError 'meta', shape mismatches
        first = (str(exc).splitlines() or [""])[0][:160]
        raise DeepRepairError(f"{path} is not a resumable state of this run ({type(exc).__name__}: {first}); "
                              "delete it to start over") from None


def _load_run_state(path: Path, model: nn.Module, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["meta"])
        if not isinstance(meta, dict):
            raise ValueError("its record is not a JSON object")
        keys = list(f.keys())
        model.load_state_dict({k[6:]: f.get_tensor(k) for k in keys if k.startswith("model.")})
        best = {k[5:]: f.get_tensor(k) for k in keys if k.startswith("best.")}
        for i, p in enumerate(opt.param_groups[0]["params"]):
            if f"opt.{i}" in keys:  # files written before optimiser state was stored by name
                opt.state[p]["momentum_buffer"] = f.get_tensor(f"opt.{i}").to(p.device)
            for k in keys:
                if k.startswith(f"opt.{i}."):
                    val = f.get_tensor(k)
                    opt.state[p][k[len(f"opt.{i}."):]] = val if val.ndim == 0 else val.to(p.device)
    return meta, best


def data_fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    """SHA-256 of images and labels: what a resumable run records it was made from."""
    import hashlib

    h = hashlib.sha256(np.ascontiguousarray(x).tobytes())
    h.update(np.asarray(y).astype("<i8").tobytes())
    return h.hexdigest()


def holdout_split(y: np.ndarray, share: float, seed: int) -> np.ndarray:
    """Sorted indices of ``share`` of the images, stratified by class (each class gives the same
    share, rounded), drawn with ``seed``: the validation split ``train`` never trains on."""
    if share <= 0:
        return np.zeros(0, np.int64)
    rng = np.random.default_rng([seed, 5])
    keep = [rng.permutation(np.flatnonzero(y == c))[: int(round(share * np.sum(y == c)))] for c in np.unique(y)]
    return np.sort(np.concatenate(keep)).astype(np.int64)


def image_digests(x: np.ndarray) -> np.ndarray:
    """One 64-bit digest per image (BLAKE2b of its bytes): to find images that repeat across sets."""
    import hashlib

    x = np.ascontiguousarray(x)
    return np.array([int.from_bytes(hashlib.blake2b(img.tobytes(), digest_size=8).digest(), "little")
                     for img in x], dtype=np.uint64)


def same_config(saved: dict | None, cfg, defaults=None) -> bool:
    """``cfg`` (a config dataclass) equals the config stored in a state file, fields added since
    then read at ``defaults`` (the dataclass's own defaults unless given)."""
    if not isinstance(saved, dict):
        return False
    now = json.loads(json.dumps(asdict(cfg)))
    default = json.loads(json.dumps(asdict(defaults if defaults is not None else type(cfg)())))
    return all(saved.get(k, default[k]) == v for k, v in now.items()) and set(saved) <= set(now)


def resume_run(state_path: Path | None, model: nn.Module, opt: torch.optim.Optimizer, cfg, *, defaults=None,
               data_sha: str | None = None) -> tuple[dict, dict] | None:
    """The one resume of ``train`` and ``repair``: (record, best state) of the run saved at
    ``state_path``, its model and optimiser state loaded into ``model`` and ``opt``; None when there
    is none. Refused, in one line, when it was written with other settings (``same_config``) or
    on other data (``data_sha``)."""
    if state_path is None or not Path(state_path).exists():
        return None
    meta, best = load_run_state(Path(state_path), model, opt)
    if not same_config(meta.get("config"), cfg, defaults):
        raise DeepRepairError(f"{state_path} was written by a run with other settings; "
                              "delete it to start over, or rerun with the same settings")
    if data_sha is not None and meta.get("data_sha256", data_sha) != data_sha:
        raise DeepRepairError(f"{state_path} was written by a run on other training data; "
                              "rerun with the same --data (and --limit), or delete it to start over")
    return meta, best


@dataclass
class TrainResult:
    epochs_done: int
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    precision: str = "fp32"


def sgd_epoch(opt: torch.optim.Optimizer, xt: torch.Tensor, yt: torch.Tensor, *,
              batch_size: int, epoch: int, epochs: int, lr: Callable[[int, int], float], gen: torch.Generator,
              step_loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict]],
              device: torch.device, progress: Callable[[int], None] | None = None) -> dict:
    """One epoch of SGD over the optimiser's parameters, the loop ``train`` and ``repair`` share
    (``step_loss`` runs the model, in train mode): shuffle with ``gen``, pad-4 crop + flip each
    batch on the CPU (uint8) and move it to ``device`` as float, set the step's learning rate
    (``lr(step, total)``), ``loss, stats = step_loss(x, y, idx)``, backward, average the gradients
    across ranks under torchrun, step. Returns ``loss`` (the batch means times their sizes, summed)
    and each of ``step_loss``'s ``stats`` summed over the batches."""
    n = len(xt)
    per_epoch = math.ceil(n / batch_size)
    total = per_epoch * epochs
    order = torch.randperm(n, generator=gen)
    params = [p for g in opt.param_groups for p in g["params"]]
    sums: dict = {"loss": 0.0}
    for i, s in enumerate(batches(n, batch_size)):
        idx = order[s]
        xb = to_float(crop_flip(xt[idx], gen).to(device, non_blocking=True))
        yb = yt[idx].to(device, non_blocking=True)
        for g in opt.param_groups:
            g["lr"] = lr(epoch * per_epoch + i, total)
        loss, stats = step_loss(xb, yb, idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_gradients(params)
        opt.step()
        sums["loss"] += loss.item() * len(idx)
        for k, v in stats.items():
            sums[k] = sums.get(k, 0.0) + v
        if progress is not None:
            progress(len(idx))
    return sums


def _train_epoch(model: nn.Module, forward, opt, xt: torch.Tensor, yt: torch.Tensor, cfg: TrainConfig, epoch: int,
                 device: torch.device, precision: str, progress: Callable[[int, int], None] | None) -> tuple[float, int]:
    """One epoch of supervised training (``sgd_epoch`` with cross-entropy; shuffles and crops
    from a generator seeded by (seed, epoch)); (summed loss, correct)."""
    gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
    torch.manual_seed(cfg.seed * 100003 + epoch)  # dropout
    model.train()

    def step_loss(xb, yb, idx):
        with autocast(device, precision):
            logits = forward(xb)
        loss = F.cross_entropy(logits.float(), yb, label_smoothing=cfg.label_smoothing)
        return loss, {"correct": int((logits.argmax(1) == yb).sum())}

    sums = sgd_epoch(opt, xt, yt, batch_size=cfg.batch_size, epoch=epoch, epochs=cfg.epochs,
                     lr=lambda step, total: lr_at(cfg, step, total), gen=gen, step_loss=step_loss, device=device,
                     progress=None if progress is None else (lambda k: progress(k, epoch)))
    return sums["loss"], sums.get("correct", 0)


def fit(model: nn.Module, x: np.ndarray, y: np.ndarray, cfg: TrainConfig, *,
        device: torch.device, eval_x: np.ndarray | None = None, eval_y: np.ndarray | None = None,
        state_path: Path | None = None, progress: Callable[[int, int], None] | None = None,
        on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    """Train ``model`` (a ``Classifier``: input in [0, 1]) on uint8 NHWC ``x`` and labels ``y``.

    After every epoch the model and optimiser state go to ``state_path`` (atomically); a run
    started again with the same ``state_path`` resumes after the last finished epoch and, on
    CPU, ends bit-identical to an uninterrupted run (each epoch's shuffles and crops come
    from a generator seeded by (seed, epoch)).
    """
    cfg.check()
    precision = resolve_precision(cfg.precision, device)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    decay, no_decay = [], []
    for n_, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    # weight decay on every parameter, as in AugMix's reference code
    opt = torch.optim.SGD(decay + no_decay, lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
    data_sha = data_fingerprint(x, y)
    resumed = resume_run(state_path, model, opt, cfg, data_sha=data_sha)
    start, history, seconds = (0, [], 0.0) if resumed is None else (
        resumed[0]["epochs_done"], resumed[0]["history"], resumed[0]["seconds"])
    forward = compile_model(model) if cfg.compile else model  # shares the parameters; eager + a warning if it can't
    forward = distributed.wrap(forward)  # under torchrun: each rank runs its slice of every batch
    xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.asarray(y, dtype=np.int64))
    n = len(xt)
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        loss_sum, correct = _train_epoch(model, forward, opt, xt, yt, cfg, epoch, device, precision, progress)
        if not math.isfinite(loss_sum):
            raise DeepRepairError(f"training diverged at epoch {epoch + 1} (loss is not finite); "
                                  "lower --lr")
        row = {"epoch": epoch + 1, "train_loss": loss_sum / n, "train_acc": correct / n,
               "lr_end": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}
        if eval_x is not None:
            row["test_acc"] = float((predict(model, eval_x, device=device, precision=precision)
                                     == np.asarray(eval_y)).mean())
        seconds += row["seconds"]
        history.append(row)
        if state_path is not None and distributed.is_main():
            save_run_state(Path(state_path), model, opt, {"config": asdict(cfg), "data_sha256": data_sha,
                                                       "epochs_done": epoch + 1,
                                                       "history": history, "seconds": seconds})
        if on_epoch is not None:
            on_epoch(row)
    model.to(memory_format=torch.contiguous_format)
    return TrainResult(cfg.epochs, history, seconds, precision)
