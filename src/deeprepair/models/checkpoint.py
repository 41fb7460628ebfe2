"""Checkpoints: weights in safetensors, metadata in JSON; users' own models loaded without pickle."""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from .. import __version__
from ..data.io import atomic_write_bytes
from ..errors import DeepRepairError
from .classifier import Classifier
from .registry import create_model, list_models

FORMAT = "deeprepair-checkpoint/1"


def meta_path(ckpt: str | Path) -> Path:
    """The JSON file that goes with a ``.safetensors`` checkpoint."""
    return Path(ckpt).with_suffix(".json")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_metadata(meta: Any, source: str | Path) -> dict[str, Any]:
    """The schema of a checkpoint's metadata, checked where it is read: return ``meta`` or raise
    a one-line error naming the field that is wrong (``source``: the file it came from)."""
    fix = "re-save the model with `deeprepair train` or fix the file"
    if not isinstance(meta, dict):
        raise DeepRepairError(f"{source}: checkpoint metadata must be a JSON object, got {type(meta).__name__}; {fix}")
    arch, k = meta.get("arch"), meta.get("num_classes")
    if not isinstance(arch, str) or not arch:
        raise DeepRepairError(f"{source}: metadata field 'arch' must name an architecture, got {arch!r}; {fix}")
    if not _is_int(k) or k < 1:
        raise DeepRepairError(f"{source}: metadata field 'num_classes' must be a positive integer, got {k!r}; {fix}")
    for key in ("mean", "std"):
        v = meta.get(key)
        if v is None:
            continue
        if not (isinstance(v, list) and len(v) in (1, 3) and all(_is_number(e) for e in v)):
            raise DeepRepairError(f"{source}: metadata field {key!r} must be a list of 3 finite numbers, got {v!r}; {fix}")
        if key == "std" and min(v) <= 0:
            raise DeepRepairError(f"{source}: metadata field 'std' must be positive, got {v!r}; {fix}")
    size = meta.get("input_size")
    if size is not None and not (isinstance(size, list) and len(size) == 3 and all(_is_int(e) and e > 0 for e in size)):
        raise DeepRepairError(f"{source}: metadata field 'input_size' must be [H, W, C], got {size!r}; {fix}")
    classes = meta.get("classes")
    if classes is not None and not (isinstance(classes, list) and len(classes) == k):
        raise DeepRepairError(f"{source}: metadata field 'classes' must list num_classes ({k}) names; {fix}")
    gate = meta.get("gate")
    if gate:  # a routed repair: its router's shape
        if not isinstance(gate, dict):
            raise DeepRepairError(f"{source}: metadata field 'gate' must be a JSON object, got {type(gate).__name__}; {fix}")
        n = gate.get("n_features")
        if not _is_int(n) or n < 1:
            raise DeepRepairError(f"{source}: metadata field 'gate.n_features' must be a positive integer, got {n!r}; {fix}")
        for key in ("router", "features"):
            if not isinstance(gate.get(key, ""), str):
                raise DeepRepairError(f"{source}: metadata field 'gate.{key}' must be a name, got {gate[key]!r}; {fix}")
    return meta


def check_finite(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """Refuse weights holding NaN or Inf: such a model only looks like it works."""
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise DeepRepairError(f"{path} holds weights that are not finite numbers (NaN or Inf in {bad[0]}"
                              f"{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}): the model is broken; "
                              "use the checkpoint of a run that did not diverge")


def save_checkpoint(model: Classifier, path: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``path`` (safetensors: weights + normalisation) and ``path.json`` (metadata), atomically.

    ``meta`` must name ``arch`` (a registered model) and ``num_classes``; ``classes``, ``mean``,
    ``std`` and ``input_size`` are filled in from the model when absent.
    """
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != ".safetensors":
        raise DeepRepairError(f"checkpoint path must end in .safetensors, got {path}")
    meta = dict(meta)
    meta.setdefault("format", FORMAT)
    meta.setdefault("mean", model.mean.flatten().tolist())
    meta.setdefault("std", model.std.flatten().tolist())
    meta.setdefault("input_size", [32, 32, 3])
    meta.setdefault("package_version", __version__)
    meta.setdefault("torch_version", torch.__version__)
    for key in ("arch", "num_classes"):
        if key not in meta:
            raise DeepRepairError(f"checkpoint metadata needs {key!r}")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    text = json.dumps(meta, indent=2, sort_keys=True)
    # the weights last: a checkpoint that exists is complete (a failed write leaves at most the JSON)
    atomic_write_bytes(meta_path(path), (text + "\n").encode())
    atomic_write_bytes(path, save(tensors, metadata={"deeprepair": text}))
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Metadata of a checkpoint: the JSON beside it, else the copy inside the safetensors header."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise DeepRepairError(f"checkpoint {path} not found")
    mp = meta_path(path)
    if mp.is_file():
        try:
            return check_metadata(json.loads(mp.read_text()), mp)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DeepRepairError(f"{mp} is not valid JSON ({exc}); fix or delete it") from None
    try:
        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get("deeprepair")
    except Exception as exc:  # safetensors raises its own error types
        raise DeepRepairError(f"{path} is not a readable safetensors file: {exc}") from None
    if not text:
        raise DeepRepairError(f"{path} has no deeprepair metadata; load it with --factory and "
                              "--num-classes instead")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DeepRepairError(f"{path}: the metadata in its header is not valid JSON ({exc}); re-save the "
                              "model with `deeprepair train`") from None
    return check_metadata(meta, path)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:
        raise DeepRepairError(f"{path} is not a readable safetensors file: {exc}") from None


# Checkpoint kinds: a metadata key (e.g. "gate") whose presence means the saved state is not one
# Classifier but a module built by a higher layer. That layer registers a builder
# ``build(make, meta[key]) -> nn.Module`` (``make()`` returns an empty Classifier of the
# checkpoint's architecture) so that this module never imports it (models sit below repair).
_CHECKPOINT_KINDS: dict[str, Callable[[Callable[[], Classifier], Any], nn.Module]] = {}
_KNOWN_KINDS = {"gate": "routed repair (--gate)"}  # named in the error when not registered yet


def register_checkpoint_kind(key: str, build: Callable[[Callable[[], Classifier], Any], nn.Module]) -> None:
    """Let ``load_checkpoint`` load checkpoints whose metadata has a truthy ``key``:
    ``build(make, meta[key])`` returns the empty module the saved state is loaded into.
    ``deeprepair.repair.gate`` registers ``"gate"`` (routed repairs) when imported."""
    _CHECKPOINT_KINDS[key] = build


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[Classifier, dict]:
    """A registered-architecture ``Classifier`` (or a routed repair of one, ``GatedClassifier``)
    and its metadata from a deeprepair checkpoint."""
    meta = read_metadata(path)
    arch = meta.get("arch")
    if arch not in list_models():
        raise DeepRepairError(f"{path}: architecture {arch!r} is not registered; for your own "
                              "model use --factory package.module:function")
    def make() -> Classifier:
        return Classifier(create_model(arch, int(meta["num_classes"])), meta.get("mean", (0.5,) * 3),
                          meta.get("std", (0.5,) * 3))

    kinds = [key for key in sorted(set(_KNOWN_KINDS) | set(_CHECKPOINT_KINDS)) if meta.get(key)]
    if kinds:  # e.g. a routed repair ("gate": original + repaired network and a router)
        key = kinds[0]
        if key not in _CHECKPOINT_KINDS:
            raise DeepRepairError(
                f"{path} is a {_KNOWN_KINDS.get(key, key)} checkpoint ({key!r} in its metadata), whose loader "
                "registers when deeprepair.repair is imported: load it with deeprepair.load_checkpoint, or "
                "import deeprepair.repair first")
        try:
            model = _CHECKPOINT_KINDS[key](make, meta[key])
        except (ValueError, KeyError, TypeError) as exc:
            raise DeepRepairError(f"{path}: its {key!r} metadata does not describe a model ({exc})") from None
    else:
        model = make()
    _load_state(model, _read_safetensors(Path(path)), path)
    return model.to(device).eval(), meta


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    check_finite(state, path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:2]
        text = " ".join(first)
        raise DeepRepairError(f"{path} does not fit the model: {text[:300]}{'...' if len(text) > 300 else ''}") from None


def read_user_weights(path: str | Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or ``.pt/.pth`` (``torch.load(weights_only=True)``)."""
    path = Path(path)
    if not path.is_file():
        raise DeepRepairError(f"weights file {path} not found")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as exc:
        with open(path, "rb") as f:  # torch.save writes a zip archive (or, before torch 1.6, a pickle)
            head = f.read(4)
        if head != b"PK\x03\x04" and not head.startswith(b"\x80"):
            raise DeepRepairError(f"{path} is not a torch weights file (neither a zip archive nor a pickle); "
                                  "give a .pt/.pth written by torch.save, or a .safetensors file") from None
        if not allow_pickle:
            raise DeepRepairError(
                f"{path} cannot be loaded as plain weights (it holds pickled objects, which can run "
                "code when loaded); re-save it with torch.save(model.state_dict(), ...) or, only if "
                "you trust its source, pass --allow-pickle") from None
        raise DeepRepairError(f"{path} could not be loaded: {exc}") from None
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DeepRepairError(f"{path} does not hold a state dict (name -> tensor)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def build_factory(spec: str, num_classes: int) -> nn.Module:
    """Call ``package.module:function`` with ``num_classes=`` (or no argument if it takes none)."""
    if ":" not in spec:
        raise DeepRepairError(f"--factory must look like package.module:function, got {spec!r}")
    mod_name, fn_name = spec.split(":", 1)
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # let users name modules in the working directory
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as exc:
        raise DeepRepairError(f"cannot import {spec}: {exc}") from None
    try:
        try:
            net = fn(num_classes=num_classes)
        except TypeError:
            net = fn()
    except Exception as exc:  # users' code: whatever it raises is about their factory, in one line
        raise DeepRepairError(f"--factory {spec} failed when called with num_classes={num_classes} or with no "
                              f"argument ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}); "
                              "it must build and return a torch.nn.Module") from None
    if not isinstance(net, nn.Module):
        raise DeepRepairError(f"{spec} returned {type(net).__name__}, not a torch.nn.Module")
    return net


def load_model(path: str | Path, *, factory: str | None = None, num_classes: int | None = None,
               mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
               allow_pickle: bool = False, device: str | torch.device = "cpu") -> tuple[Classifier, dict]:
    """Any supported model file as a ``Classifier`` (input [0, 1]) plus metadata.

    - a deeprepair checkpoint (``.safetensors`` with metadata): architecture from the registry;
    - ``factory`` + weights (``.safetensors`` / ``.pt`` / ``.pth`` state dict): users' own model;
    - a TorchScript file (``torch.jit.save``): loaded as is.
    ``mean``/``std`` give the normalisation the model was trained with (default 0.5 for
    users' models); ``num_classes`` is checked against the model's output width.
    """
    path = Path(path)
    if path.is_dir():
        raise DeepRepairError(f"--model {path} is a folder: give the model file (.safetensors, TorchScript, or "
                              "weights with --factory)")
    if not path.is_file():
        raise DeepRepairError(f"model file {path} not found")
    if factory is None and path.suffix == ".safetensors":
        model, meta = load_checkpoint(path, device)
        if num_classes is not None and num_classes != meta["num_classes"]:
            raise DeepRepairError(f"{path} has {meta['num_classes']} classes but {num_classes} "
                                  "were asked for")
        return model, meta
    norm_mean, norm_std = tuple(mean or (0.5, 0.5, 0.5)), tuple(std or (0.5, 0.5, 0.5))
    if factory is None:
        try:
            net = torch.jit.load(str(path), map_location="cpu")
        except Exception:
            raise DeepRepairError(f"{path} is neither a deeprepair checkpoint nor a TorchScript file; "
                                  "for a state dict give --factory package.module:function") from None
        check_finite(dict(net.state_dict()), path)
        arch = f"torchscript:{path.name}"
    else:
        if num_classes is None:
            raise DeepRepairError("--factory needs --num-classes (the model's output width)")
        net = build_factory(factory, num_classes)
        _load_state(net, read_user_weights(path, allow_pickle), path)
        arch = f"factory:{factory}"
    model = Classifier(net, norm_mean, norm_std).to(device).eval()
    width = output_width(model, device)
    if num_classes is not None and width != num_classes:
        raise DeepRepairError(f"the model outputs {width} classes but {num_classes} were given")
    meta = {"format": FORMAT, "arch": arch, "num_classes": width, "mean": list(norm_mean),
            "std": list(norm_std), "source": str(path)}
    return model, meta


@torch.no_grad()
def output_width(model: nn.Module, device: str | torch.device = "cpu", size: int = 32) -> int:
    """Number of logits the model produces for one ``size`` x ``size`` RGB image."""
    try:
        out = model(torch.zeros(1, 3, size, size, device=device))
    except Exception as exc:
        raise DeepRepairError(f"the model fails on a 1x3x{size}x{size} input: {exc}") from None
    if out.ndim != 2:
        raise DeepRepairError(f"the model must return (N, classes) logits, got shape {tuple(out.shape)}")
    return int(out.shape[1])
