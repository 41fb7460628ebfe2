"""Where and how tensors run: device choice, bf16 autocast, image batches, batched inference."""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn

from .errors import DeepRepairError
from .heap import keep_heap  # noqa: F401  (re-exported)

PRECISIONS = ("auto", "fp32", "bf16")


def pick_device(name: str | None = None) -> torch.device:
    """``name`` if given, else CUDA when present, else CPU."""
    if name:
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise DeepRepairError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise DeepRepairError("--device cuda asked for, but no CUDA GPU is visible to torch")
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` means bf16 where the hardware has bf16 units (CPU with AMX or AVX512-BF16, or CUDA),
    else fp32."""
    if precision not in PRECISIONS:
        raise DeepRepairError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if _cpu_has_fast_bf16() else "fp32"


def _cpu_has_fast_bf16(info: str | None = None) -> bool:
    """AMX or AVX512-BF16. Where there is AVX512-BF16 but no AMX, fp32 can be faster: an Intel
    Xeon of that kind trains ResNet-20 1.4x faster in fp32 (benchmarks/results/intel-no-amx/
    train_speed.md), but whether fp32 repairs as much under the certified walk is not measured,
    so ``auto`` keeps bf16 there and ``--precision fp32`` is the user's choice."""
    if info is None:
        try:
            info = open("/proc/cpuinfo").read()
        except OSError:
            return False
    return " amx_bf16" in info or " avx512_bf16" in info


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), for the provenance of every results file."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine() -> dict:
    """What a measurement ran on: CPU, cores, platform, torch, and the precision ``auto`` picks."""
    import os
    import platform

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    dev = pick_device(None)
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "cores_usable": usable, "platform": platform.platform(),
            "device": str(dev), "gpu": torch.cuda.get_device_name(0) if dev.type == "cuda" else None,
            "torch": torch.__version__, "precision_auto": resolve_precision("auto", dev)}


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast context for ``precision == "bf16"``, else a no-op."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_float(xb: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW in [0, 1], channels_last in memory (a free permute)."""
    return xb.permute(0, 3, 1, 2).float().div_(255.0)


def batches(n: int, batch_size: int) -> Iterator[slice]:
    for i in range(0, n, batch_size):
        yield slice(i, min(i + batch_size, n))


@torch.no_grad()
def predict_logits(model: nn.Module, x: np.ndarray | torch.Tensor, *, batch_size: int = 500,
                   device: torch.device | None = None, precision: str = "auto",
                   progress=None) -> torch.Tensor:
    """Float32 logits (N, K) for uint8 NHWC images, in eval mode, batched."""
    device = device or next(model.parameters()).device
    precision = resolve_precision(precision, device)
    xt = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    if xt.dtype != torch.uint8 or xt.ndim != 4:
        raise DeepRepairError(f"expected uint8 images (N, H, W, C), got {xt.dtype} {tuple(xt.shape)}")
    was_training = model.training
    model.eval()
    out = []
    try:
        for s in batches(len(xt), batch_size):
            xb = to_float(xt[s].to(device, non_blocking=True))
            with autocast(device, precision):
                out.append(model(xb).float().cpu())
            if progress is not None:
                progress.update(s.stop - s.start)
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 0)


def predict(model: nn.Module, x: np.ndarray | torch.Tensor, **kw) -> np.ndarray:
    """Predicted class indices (N,) int64."""
    return predict_logits(model, x, **kw).argmax(1).numpy()


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else the machine's count)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def check_threads(threads: int | None, what: str = "--threads") -> int | None:
    """``threads`` capped at the usable cores: more threads than cores only slow a CPU run down
    (they take turns on the same cores), so a larger request gives a one-line warning and the
    core count instead. None or 0 -> None (the library's default)."""
    import warnings

    if not threads:
        return None
    cores = usable_cores()
    if threads > cores:
        warnings.warn(f"{what} {threads} asked for, but this process may use {cores} core(s): using {cores}",
                      stacklevel=2)
        return cores
    return threads


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads to ``check_threads(threads)`` (unchanged when None); returns
    the number torch now uses."""
    n = check_threads(threads)
    if n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


class CompileOrEager(nn.Module):
    """``torch.compile(model)`` where this machine can run it; where it cannot (no C compiler, an
    unsupported platform or op), a one-line warning on the first call and ``model`` run eagerly
    from then on: never a traceback, never a silent slowdown. Shares ``model``'s parameters."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.ok: bool | None = None
        try:
            self.__dict__["compiled"] = torch.compile(model)  # not a submodule: no second state-dict prefix
        except Exception as exc:  # torch.compile itself unsupported here (e.g. the Python version)
            self._fall_back(exc)

    def _fall_back(self, exc: Exception) -> None:
        import warnings

        text = str(exc).strip()
        msg = text.splitlines()[0][:160] if text else ""
        warnings.warn(f"--compile: torch.compile is not usable here ({type(exc).__name__}: {msg}); running "
                      "without it", stacklevel=3)
        self.ok = False

    def forward(self, *args, **kwargs):
        if self.ok is False:
            return self.model(*args, **kwargs)
        try:
            out = self.__dict__["compiled"](*args, **kwargs)
        except Exception as exc:
            if self.ok:  # it compiled and ran before: a real error of the model, not of the compiler
                raise
            self._fall_back(exc)
            return self.model(*args, **kwargs)
        self.ok = True
        return out


def compile_model(model: nn.Module) -> nn.Module:
    """``CompileOrEager(model)``: compiled where possible, else eager with a one-line warning."""
    return CompileOrEager(model)
