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
from ..data.io import atomic_write_bytes, sha256_file
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
            raise DeepRepairError(f"{source}: metadata field {key!r} must be a list of 1 or 3 finite numbers, got {v!r}; {fix}")
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


def load_user_weights(net: nn.Module, path: str | Path, allow_pickle: bool = False) -> tuple[list | None, list | None]:
    """Load the weights file ``path`` into the user's module ``net`` (strictly: every name and shape
    must fit); returns the normalisation (mean, std) a Classifier state dict carried, else Nones."""
    state, mean, std = split_classifier_state(read_user_weights(path, allow_pickle))
    _load_state(net, state, path)
    return mean, std


def split_classifier_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list | None, list | None]:
    """(the user's network's weights, mean, std): a ``Classifier``'s state dict (``net.*`` plus its
    ``mean``/``std`` buffers, as ``repair`` saves a user's module) is taken apart; any other state
    dict is returned as it is, with no normalisation."""
    if "mean" in state and "std" in state and all(k.startswith("net.") for k in state if k not in ("mean", "std")):
        net = {k.removeprefix("net."): v for k, v in state.items() if k not in ("mean", "std")}
        return net, state["mean"].flatten().tolist(), state["std"].flatten().tolist()
    return state, None, None


def user_weights_metadata(path: str | Path) -> dict[str, Any]:
    """The deeprepair metadata in the header of a user's ``.safetensors`` weights (written by
    ``save_user_weights``: its mean, std, classes, input size), else ``{}``. Only JSON is read."""
    from safetensors import safe_open

    path = Path(path)
    if path.suffix != ".safetensors":
        return {}
    try:
        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get("deeprepair")
        meta = json.loads(text) if text else {}
    except Exception:  # unreadable files are reported when their weights are read
        return {}
    return meta if isinstance(meta, dict) else {}


def save_user_weights(net: nn.Module, path: str | Path, meta: dict[str, Any]) -> Path:
    """Write a user's module's own weights (its ``state_dict``, loadable with ``--factory``) as
    ``.safetensors`` with ``meta`` in the header and in a JSON file beside it: what ``train
    --factory`` writes, and what ``repair`` writes for a user's module (--factory or TorchScript;
    before, it wrote a Classifier state dict, ``model_state.pt``, which ``--factory`` still reads)."""
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != ".safetensors":
        raise DeepRepairError(f"weights path must end in .safetensors, got {path}")
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    text = json.dumps({"format": FORMAT, "package_version": __version__, "torch_version": torch.__version__, **meta},
                      indent=2, sort_keys=True)
    atomic_write_bytes(meta_path(path), (text + "\n").encode())
    atomic_write_bytes(path, save(tensors, metadata={"deeprepair": text}))
    return path


def check_normalisation(values: Sequence[float] | None, flag: str) -> tuple[float, ...] | None:
    """``--mean``/``--std``: one value (every channel) or one per RGB channel."""
    if values is None:
        return None
    values = tuple(float(v) for v in values)
    if len(values) not in (1, 3) or not all(math.isfinite(v) for v in values):
        raise DeepRepairError(f"{flag} takes 1 value (every channel) or 3 (R, G, B), got {len(values)}: "
                              f"{' '.join(map(str, values))}")
    if flag == "--std" and min(values) <= 0:
        raise DeepRepairError(f"--std must be positive, got {' '.join(map(str, values))}")
    return values


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
               allow_pickle: bool = False, device: str | torch.device = "cpu",
               input_size: Sequence[int] | None = None) -> tuple[Classifier, dict]:
    """Any supported model file as a ``Classifier`` (input [0, 1]) plus metadata.

    - a deeprepair checkpoint (``.safetensors`` with metadata): architecture from the registry;
    - ``factory`` + weights (``.safetensors`` / ``.pt`` / ``.pth`` state dict): users' own model;
    - a TorchScript file (``torch.jit.save``): loaded as is.
    ``mean``/``std`` give the normalisation the model was trained with, 1 or 3 values (default:
    what the weights file records, else 0.5 for users' models); ``num_classes`` is checked
    against the model's output width. Users' models are tried on one zero image of
    ``input_size`` (H, W, C: the data's; default 32 x 32 x 3) and record it as their input size.
    A 3-value normalisation turns a 1-channel image into 3 channels (the grey image copied to
    R, G and B), so a model with an RGB stem reads grey data; a 1-value one leaves 1 channel.
    """
    path = Path(path)
    if path.is_dir():
        raise DeepRepairError(f"--model {path} is a folder: give the model file (.safetensors, TorchScript, or "
                              "weights with --factory)")
    if not path.is_file():
        raise DeepRepairError(f"model file {path} not found")
    if factory is None and path.suffix == ".safetensors":
        own = str(read_metadata(path)["arch"])
        if own.startswith("factory:"):  # a user's module repaired: its weights; the code is the user's to name
            raise DeepRepairError(f"{path} holds the weights of your own module {own[8:]}: pass --factory {own[8:]} "
                                  "and --num-classes with it")
        model, meta = _load_repaired_torchscript(path, device) if own.startswith("torchscript:") else \
            load_checkpoint(path, device)
        if num_classes is not None and num_classes != meta["num_classes"]:
            raise DeepRepairError(f"{path} has {meta['num_classes']} classes but {num_classes} "
                                  "were asked for")
        return model, meta
    mean, std = check_normalisation(mean, "--mean"), check_normalisation(std, "--std")
    extra: dict[str, Any] = {}
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
        saved_mean, saved_std = load_user_weights(net, path, allow_pickle)
        header = user_weights_metadata(path)  # weights written by `deeprepair train --factory`
        saved_mean, saved_std = saved_mean or header.get("mean"), saved_std or header.get("std")
        for flag, given, saved in (("--mean", mean, saved_mean), ("--std", std, saved_std)):
            if given is not None and saved is not None and not _same(given, saved):
                raise DeepRepairError(f"{path} records the normalisation {flag} {' '.join(f'{v:g}' for v in saved)}, "
                                      f"not {' '.join(f'{v:g}' for v in given)}: leave {flag} out to use its own")
        mean, std = mean or check_normalisation(saved_mean, "--mean"), std or check_normalisation(saved_std, "--std")
        arch = f"factory:{factory}"
        if header.get("classes") and len(header["classes"]) == num_classes:
            extra["classes"] = [str(c) for c in header["classes"]]
    norm_mean, norm_std = mean or (0.5, 0.5, 0.5), std or (0.5, 0.5, 0.5)
    model = Classifier(net, norm_mean, norm_std).to(device).eval()
    h, w, c = (list(input_size) if input_size is not None else [32, 32, 3])
    width = output_width(model, device, size=(h, w), channels=c)
    if num_classes is not None and width != num_classes:
        raise DeepRepairError(f"the model outputs {width} classes but {num_classes} were given")
    meta = {"format": FORMAT, "arch": arch, "num_classes": width, "mean": list(norm_mean),
            "std": list(norm_std), "source": str(path), **extra}
    if input_size is not None:
        meta["input_size"] = [h, w, c]
    return model, meta


def _load_repaired_torchscript(path: Path, device: str | torch.device) -> tuple[Classifier, dict]:
    """A repaired TorchScript module: the module of the TorchScript file it was repaired from (its
    metadata's ``parent``, where it was or beside ``path``; it must still hash to ``parent_sha256``)
    with the weights of ``path``."""
    meta = read_metadata(path)
    parent = Path(str(meta.get("parent", "")))
    found = [p for p in (parent, path.parent / parent.name)
             if p.is_file() and sha256_file(p) == meta.get("parent_sha256")]
    if not found:
        raise DeepRepairError(f"{path} holds the repaired weights of the TorchScript module {parent}, which is "
                              f"{'changed' if parent.is_file() else 'not found'}: put the original file back there "
                              f"or beside {path}")
    net = torch.jit.load(str(found[0]), map_location="cpu")
    _load_state(net, _read_safetensors(path), path)
    model = Classifier(net, meta.get("mean", (0.5,) * 3), meta.get("std", (0.5,) * 3))
    return model.to(device).eval(), meta


def _same(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all(abs(float(x) - float(y)) <= 1e-6 for x, y in zip(a, b))


@torch.no_grad()
def output_width(model: nn.Module, device: str | torch.device = "cpu", size: int | Sequence[int] = 32,
                 channels: int = 3) -> int:
    """Number of logits the model produces for one ``size`` (side, or (H, W)) image of ``channels``."""
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    try:
        out = model(torch.zeros(1, channels, h, w, device=device))
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0][:200]
        hint = ""
        if channels == 1:
            hint = ("; grey images reach a model with an RGB stem as 3 channels only when --mean and --std "
                    "have 3 values (a 1-value normalisation keeps 1 channel, for a model with a 1-channel stem)")
        elif channels == 3:
            hint = "; a model with a 1-channel stem needs grey (1-channel) images"
        raise DeepRepairError(f"the model fails on a 1x{channels}x{h}x{w} input (the data's image size and "
                              f"channels): {type(exc).__name__}: {first}{hint}") from None
    if out.ndim != 2:
        raise DeepRepairError(f"the model must return (N, classes) logits, got shape {tuple(out.shape)}")
    return int(out.shape[1])
