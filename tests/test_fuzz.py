"""A fuzz corpus of hostile and careless input, run in-process through ``cli.main``.

Every case is generated on the fly from small arrays (no binary fixtures) and asserts what a user
must see on bad input: exit status 2, exactly one line on stderr starting with ``error:``, no
traceback, no input file changed, and no output left behind as if it were finished. A few cases
are valid edge cases (marked ``ok``) that must run to the end with exit 0 instead.

With ``DEEPREPAIR_FUZZ_LOG=path`` every case appends its outcome as one JSON line;
``python benchmarks/robustness.py`` runs this module that way and writes
``benchmarks/results/robustness.md``. The kill -9 resume tests live in ``tests/test_resume_kill.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from deeprepair.cli import main

N_TRAIN, N_TEST, N_FAIL = 30, 20, 6


# ----------------------------------------------------------------------------- the world


def _images(n: int, seed: int, size: int = 32, channels: int = 3) -> np.ndarray:
    from conftest import _smooth_images

    x = _smooth_images(n, seed, size)
    return x if channels == 3 else x[..., :channels]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """Inputs shared by every case (never written to: each case checks they stay unchanged)."""
    import torch

    from deeprepair.models import Classifier, create_model
    from deeprepair.models.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("world")
    data = root / "data"
    data.mkdir()
    np.savez(data / "train.npz", x=_images(N_TRAIN, 1), y=np.arange(N_TRAIN) % 10)
    np.savez(data / "test.npz", x=_images(N_TEST, 2), y=np.arange(N_TEST) % 10)
    np.savez(root / "fail.npz", x=_images(N_FAIL, 3), y=np.arange(N_FAIL) % 10)
    torch.manual_seed(0)
    model = Classifier(create_model("resnet-20", 10))
    save_checkpoint(model, root / "model.safetensors", {"arch": "resnet-20", "num_classes": 10})
    torch.manual_seed(1)
    save_checkpoint(Classifier(create_model("resnet-20", 10)), root / "other.safetensors",
                    {"arch": "resnet-20", "num_classes": 10})
    return {"root": root, "data": data, "model": root / "model.safetensors",
            "other": root / "other.safetensors", "fail": root / "fail.npz"}


def _tree_hashes(*roots: Path) -> dict[str, str]:
    out = {}
    for r in roots:
        for p in sorted(Path(r).rglob("*")) if Path(r).is_dir() else [Path(r)]:
            if p.is_file() and not p.is_symlink():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# ------------------------------------------------------------------------------ the corpus


@dataclass
class Case:
    cls: str  # the class of the issue this case belongs to
    name: str
    build: Callable[[dict, Path], list[str]]  # (world, case folder) -> argv; may write case inputs
    expect: str = "error"  # "error" (exit 2, one line) or "ok" (exit 0)
    match: str | None = None  # a word the error must contain
    patch: Callable | None = None  # (monkeypatch) -> None: e.g. a full disk
    finished: tuple[str, ...] = ()  # output files (relative to the case folder) that must not appear
    extra_check: Callable[[dict, Path], None] | None = None
    marks: list = field(default_factory=list)


CASES: list[Case] = []


def case(cls: str, name: str, **kw):
    def deco(fn):
        CASES.append(Case(cls, name, fn, **kw))
        return fn
    return deco


def base(cmd: str, w: dict, d: Path, model: Path | str | None = None, data: Path | str | None = None,
         out: Path | str | None = None) -> list[str]:
    """A valid, quick invocation of ``cmd`` that a case then breaks in one place."""
    model = str(model or w["model"])
    data = str(data or w["data"])
    out = str(out or d / "out")
    if cmd == "evaluate":
        return ["evaluate", "--model", model, "--data", data, "--corruptions", "fog", "--out", out, "--quiet"]
    if cmd == "mine":
        return ["mine", "--model", model, "--data", data, "--corruptions", "fog", "--collect", "4", "--out", out,
                "--quiet"]
    if cmd == "repair":
        return ["repair", "--model", model, "--data", data, "--failures", str(w["fail"]), "--out", out,
                "--method", "finetune", "--epochs", "1", "--batch-size", "16", "--train-subset", "20", "--quiet"]
    if cmd == "train-style":
        return ["train-style", "--model", model, "--data", data, "--out", str(Path(out) / "s.safetensors"),
                "--epochs", "1", "--batch-size", "16", "--width", "8", "--quiet"]
    if cmd == "train":
        return ["train", "--arch", "resnet-20", "--data", data, "--out", str(Path(out) / "m.safetensors"),
                "--epochs", "1", "--batch-size", "16", "--quiet"]
    if cmd == "corrupt":
        return ["corrupt", "--data", data, "--out", out, "--corruptions", "fog", "--severities", "1", "--quiet"]
    if cmd == "demo":
        return ["demo", "--model", model, "--data", data, "--out", out, "--collect", "2", "--epochs", "1",
                "--train-subset", "10", "--methods", "finetune", "--quiet"]
    if cmd == "style":
        return ["style", "--content", str(w["fail"]), "--style", str(w["fail"]), "--out", str(Path(out) / "s.png"),
                "--quiet"]
    raise AssertionError(cmd)


MODEL_CMDS = ("evaluate", "mine", "repair", "train-style")


# --- checkpoints: metadata (sidecar JSON and safetensors header), bytes, weights

def _weights(w: dict) -> dict:
    from safetensors.torch import load_file

    return load_file(str(w["model"]))


def _header_ckpt(w: dict, d: Path, text: str | None, sidecar: str | None = None, tensors=None) -> Path:
    """A checkpoint with the given metadata text in its safetensors header (and optional sidecar)."""
    from safetensors.torch import save

    d.mkdir(parents=True, exist_ok=True)
    p = d / "m.safetensors"
    p.write_bytes(save(tensors if tensors is not None else _weights(w),
                       metadata=None if text is None else {"deeprepair": text}))
    if sidecar is not None:
        p.with_suffix(".json").write_text(sidecar)
    return p


GOOD_META = {"arch": "resnet-20", "num_classes": 10, "mean": [0.5] * 3, "std": [0.5] * 3,
             "input_size": [32, 32, 3]}
BAD_METAS = {
    "list": [1, 2, 3],
    "string": "resnet-20",
    "null": None,
    "no-num-classes": {k: v for k, v in GOOD_META.items() if k != "num_classes"},
    "num-classes-string": {**GOOD_META, "num_classes": "ten"},
    "num-classes-zero": {**GOOD_META, "num_classes": 0},
    "num-classes-float": {**GOOD_META, "num_classes": 10.5},
    "num-classes-bool": {**GOOD_META, "num_classes": True},
    "num-classes-wrong": {**GOOD_META, "num_classes": 7},
    "mean-string": {**GOOD_META, "mean": "0.5"},
    "mean-short": {**GOOD_META, "mean": [0.5, 0.5]},
    "mean-nan": {**GOOD_META, "mean": [0.5, "NaN", 0.5]},
    "std-zero": {**GOOD_META, "std": [0.5, 0.0, 0.5]},
    "std-strings": {**GOOD_META, "std": ["a", "b", "c"]},
    "input-size-string": {**GOOD_META, "input_size": "32x32"},
    "arch-unknown": {**GOOD_META, "arch": "resnet-9000"},
    "arch-list": {**GOOD_META, "arch": ["resnet-20"]},
    "gate-string": {**GOOD_META, "gate": "yes"},
    "gate-list": {**GOOD_META, "gate": [1, 2]},
    "gate-empty-fields": {**GOOD_META, "gate": {"threshold": "high"}},
}
for _where in ("header", "sidecar"):
    for _key, _meta in BAD_METAS.items():
        for _cmd in MODEL_CMDS:
            def _mk(w, d, _where=_where, _meta=_meta, _cmd=_cmd):
                text = json.dumps(_meta)
                p = (_header_ckpt(w, d / "ck", text) if _where == "header"
                     else _header_ckpt(w, d / "ck", json.dumps(GOOD_META), sidecar=text))
                return base(_cmd, w, d, model=p)
            case("checkpoint metadata", f"{_where}-{_key}-{_cmd}")(_mk)
for _cmd in MODEL_CMDS:
    case("checkpoint metadata", f"sidecar-malformed-json-{_cmd}")(
        lambda w, d, _c=_cmd: base(_c, w, d, model=_header_ckpt(w, d / "ck", json.dumps(GOOD_META), sidecar="{arch:")))
    case("checkpoint metadata", f"header-malformed-json-{_cmd}")(
        lambda w, d, _c=_cmd: base(_c, w, d, model=_header_ckpt(w, d / "ck", "{arch: resnet")))
    case("checkpoint metadata", f"header-no-metadata-{_cmd}")(
        lambda w, d, _c=_cmd: base(_c, w, d, model=_header_ckpt(w, d / "ck", None)))


def _bytes_ckpt(d: Path, data: bytes, name: str = "m.safetensors") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)
    return d / name


_RANDOM = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
for _cmd in MODEL_CMDS:
    case("checkpoint bytes", f"random-bytes-{_cmd}")(
        lambda w, d, _c=_cmd: base(_c, w, d, model=_bytes_ckpt(d, _RANDOM)))
    case("checkpoint bytes", f"truncated-{_cmd}")(
        lambda w, d, _c=_cmd: base(_c, w, d, model=_bytes_ckpt(d, w["model"].read_bytes()[:5000])))
    case("checkpoint bytes", f"empty-file-{_cmd}")(lambda w, d, _c=_cmd: base(_c, w, d, model=_bytes_ckpt(d, b"")))
    case("checkpoint bytes", f"header-not-json-object-{_cmd}")(
        lambda w, d, _c=_cmd: base(_c, w, d, model=_bytes_ckpt(d, (8).to_bytes(8, "little") + b"[1,2,3] ")))
case("checkpoint bytes", "random-bytes-pth-with-factory", match="not a torch weights file")(
    lambda w, d: base("evaluate", w, d, model=_bytes_ckpt(d, _RANDOM, "w.pth"))
    + ["--factory", "deeprepair.models.resnet:resnet_20", "--num-classes", "10"])
case("checkpoint bytes", "random-bytes-torchscript")(
    lambda w, d: base("evaluate", w, d, model=_bytes_ckpt(d, _RANDOM, "m.pt")))


def _nonfinite(value: float):
    def mk(w, d):
        t = _weights(w)
        key = next(k for k in t if t[k].is_floating_point() and t[k].numel() > 100)
        t[key] = t[key].clone()
        t[key].view(-1)[3] = value
        return t
    return mk


for _v, _label in ((float("nan"), "nan"), (float("inf"), "inf"), (float("-inf"), "-inf")):
    for _cmd in MODEL_CMDS:
        case("non-finite weights", f"{_label}-weight-{_cmd}", match="finite")(
            lambda w, d, _c=_cmd, _mk=_nonfinite(_v): base(
                _c, w, d, model=_header_ckpt(w, d / "ck", json.dumps(GOOD_META), tensors=_mk(w, d))))


# --- numeric options: 0, negative, NaN, inf, huge (only values that are invalid for the flag)

NUMERIC = [  # (command, flag, bad values)
    ("train", "--lr", ["0", "-1", "nan", "inf"]),
    ("train", "--epochs", ["0", "-3", "1.5", "nan"]),
    ("train", "--batch-size", ["0", "-16"]),
    ("train", "--seed", ["-1", "nan", str(2**64)]),
    ("train", "--weight-decay", ["-1", "nan"]),
    ("train", "--label-smoothing", ["-0.1", "1", "nan"]),
    ("train", "--limit", ["-5", "nan"]),
    ("repair", "--lr", ["0", "-1", "nan", "inf"]),
    ("repair", "--epochs", ["0", "-1"]),
    ("repair", "--batch-size", ["0", "-1"]),
    ("repair", "--seed", ["-1"]),
    ("repair", "--train-subset", ["-50"]),
    ("repair", "--dc-repeat", ["0", "-2"]),
    ("repair", "--fewshot-replay", ["-5"]),
    ("repair", "--clusters", ["0", "-1"]),
    ("repair", "--distill", ["-1", "nan", "inf"]),
    ("repair", "--max-break", ["-1", "1", "1.5", "nan"]),
    ("repair", "--gate-keep", ["0", "-0.5", "1.5", "nan"]),
    ("repair", "--gate-calibration", ["-1"]),
    ("evaluate", "--corruption-seed", ["-1"]),
    ("evaluate", "--limit", ["-1"]),
    ("mine", "--collect", ["0", "-4"]),
    ("mine", "--seed", ["-1"]),
    ("corrupt", "--seed", ["-1", "nan"]),
    ("corrupt", "--threads", ["0", "-2"]),
    ("corrupt", "--severities", ["0", "6", "-1"]),
    ("style", "--alpha", ["nan", "-0.5", "1.5", "inf"]),
    ("style", "--seed", ["-1"]),
    ("train-style", "--lr", ["0", "-1", "nan"]),
    ("train-style", "--epochs", ["0"]),
    ("train-style", "--width", ["0", "-8"]),
    ("train-style", "--feature-weight", ["-1", "nan"]),
    ("demo", "--collect", ["-1"]),
    ("demo", "--epochs", ["0"]),
]


def _set_flag(argv: list[str], flag: str, value: str) -> list[str]:
    argv = list(argv)
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    return argv


for _cmd, _flag, _values in NUMERIC:
    for _v in _values:
        case("numeric options", f"{_cmd}{_flag}={_v}", match=_flag.lstrip("-"))(
            lambda w, d, _c=_cmd, _f=_flag, _v=_v: _eq(base(_c, w, d), _f, _v))
for _flag, _vals in (("--mean", ["nan", "0.5", "0.5"]), ("--std", ["0", "0.5", "0.5"]), ("--std", ["-1", "1", "1"]),
                     ("--mean", ["inf", "0", "0"])):
    case("numeric options", f"evaluate{_flag}={','.join(_vals)}", match=_flag.lstrip("-"))(
        lambda w, d, _f=_flag, _v=_vals: base("evaluate", w, d, model=d / "m.pt") + [_f, *_v])


def _eq(argv: list[str], flag: str, value: str) -> list[str]:
    """``--flag=value`` (so that negative numbers are never mistaken for options)."""
    argv = list(argv)
    if flag in argv:
        i = argv.index(flag)
        del argv[i: i + 2]
    return argv + [f"{flag}={value}"]


HUGE = [  # (command, flag, value): huge values that are out of range
    ("train", "--label-smoothing", "1e9"), ("train", "--seed", str(2**40)), ("repair", "--seed", str(2**64)),
    ("repair", "--max-break", "1e308"), ("repair", "--gate-keep", "1e9"), ("corrupt", "--threads", str(10**9)),
    ("corrupt", "--seed", "99999999999999999999"), ("mine", "--seed", str(2**33)), ("style", "--alpha", "1e308"),
    ("evaluate", "--corruption-seed", str(2**32)),
]
for _cmd, _flag, _v in HUGE:
    case("numeric options", f"{_cmd}{_flag}=huge", match=_flag.lstrip("-"))(
        lambda w, d, _c=_cmd, _f=_flag, _v=_v: _eq(base(_c, w, d), _f, _v))
case("numeric options", "train--lr=huge", match="lr")(lambda w, d: _eq(base("train", w, d), "--lr", "1e308"))
case("numeric options", "corrupt-grid--index=huge", match="index")(
    lambda w, d: ["corrupt", "--data", str(w["data"]), "--grid", str(d / "g.png"), "--index", str(10**9), "--quiet"])
# huge values that are valid: they are clamped to what there is, and the command finishes
case("numeric options", "evaluate--limit=huge", expect="ok")(lambda w, d: _eq(base("evaluate", w, d), "--limit", str(10**9)))
case("numeric options", "mine--collect=huge", expect="ok")(lambda w, d: _eq(base("mine", w, d), "--collect", str(10**9)))
case("numeric options", "train--batch-size=huge", expect="ok")(
    lambda w, d: _eq(base("train", w, d), "--batch-size", str(10**9)))
case("numeric options", "repair--train-subset=huge", expect="ok")(
    lambda w, d: _eq(base("repair", w, d), "--train-subset", str(10**9)))
case("numeric options", "repair--clusters=more-than-failures", expect="ok")(
    lambda w, d: _eq(_set_flag(base("repair", w, d), "--method", "deeprepair"), "--clusters", "1000"))


# every numeric option of every command, found in the parser, at 0, negative, NaN, Inf and huge: a value
# outside the option's declared range is a one-line error naming the option (in-range values:
# test_every_numeric_option_is_range_checked below)


def _numeric_actions() -> list[tuple[str, str, object, int | None]]:
    import argparse

    from deeprepair.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return [(name, a.option_strings[-1], a.type, a.nargs) for name, sp in sub.choices.items() for a in sp._actions
            if a.option_strings and a.type is not None and a.type is not str and not a.choices]


def _out_of_range(t, text: str) -> bool:
    v = float(text)
    if v != v or v in (float("inf"), float("-inf")):
        return True
    lo, hi = t.lo, t.hi
    return ((lo is not None and (v <= lo if t.lo_open else v < lo))
            or (hi is not None and (v >= hi if t.hi_open else v > hi)))


EXTREMES = ("0", "-1", "nan", "inf", "-inf", "1e30")
for _cmd, _flag, _t, _nargs in _numeric_actions():
    for _v in EXTREMES:
        _v = str(10**30) if _v == "1e30" and getattr(_t, "kind", None) is int else _v
        if hasattr(_t, "lo") and not _out_of_range(_t, _v):
            continue
        case("numeric options (all)", f"{_cmd}{_flag}={_v}", match=_flag)(
            lambda w, d, _c=_cmd, _f=_flag, _v=_v, _n=_nargs: [_c, _f, _v, *["1"] * ((_n or 1) - 1)] if isinstance(_n, int)
            else [_c, f"{_f}={_v}"])


case("parser", "unknown-command")(lambda w, d: ["fly", "--to", "moon"])
case("parser", "unknown-flag")(lambda w, d: base("evaluate", w, d) + ["--frobnicate"])
case("parser", "missing-required")(lambda w, d: ["repair", "--data", str(w["data"])])
case("parser", "bad-choice")(lambda w, d: base("repair", w, d) + ["--method", "magic"])


# --- data: npz and image folders

def _npz_data(d: Path, train: dict | None = None, test: dict | None = None) -> Path:
    dd = d / "data"
    dd.mkdir(parents=True, exist_ok=True)
    np.savez(dd / "train.npz", **(train or {"x": _images(N_TRAIN, 1), "y": np.arange(N_TRAIN) % 10}))
    np.savez(dd / "test.npz", **(test or {"x": _images(N_TEST, 2), "y": np.arange(N_TEST) % 10}))
    return dd


BAD_TEST = {
    "no-y": {"x": _images(N_TEST, 2)},
    "no-x": {"y": np.arange(N_TEST) % 10},
    "float-x": {"x": _images(N_TEST, 2) / 255.0, "y": np.arange(N_TEST) % 10},
    "nchw": {"x": _images(N_TEST, 2).transpose(0, 3, 1, 2).copy(), "y": np.arange(N_TEST) % 10},
    "grayscale-2d": {"x": _images(N_TEST, 2)[..., 0], "y": np.arange(N_TEST) % 10},
    "grayscale-c1": {"x": _images(N_TEST, 2)[..., :1].copy(), "y": np.arange(N_TEST) % 10},
    "rgba": {"x": np.concatenate([_images(N_TEST, 2), np.full((N_TEST, 32, 32, 1), 255, np.uint8)], 3),
             "y": np.arange(N_TEST) % 10},
    "uint16": {"x": _images(N_TEST, 2).astype(np.uint16) * 257, "y": np.arange(N_TEST) % 10},
    "labels-negative": {"x": _images(N_TEST, 2), "y": np.arange(N_TEST) % 10 - 1},
    "labels-too-many-classes": {"x": _images(N_TEST, 2), "y": np.arange(N_TEST) % 12},
    "labels-float": {"x": _images(N_TEST, 2), "y": (np.arange(N_TEST) % 10).astype(float)},
    "labels-short": {"x": _images(N_TEST, 2), "y": np.arange(N_TEST - 3) % 10},
    "empty": {"x": np.zeros((0, 32, 32, 3), np.uint8), "y": np.zeros(0, np.int64)},
    "64x64": {"x": np.repeat(np.repeat(_images(N_TEST, 2), 2, 1), 2, 2), "y": np.arange(N_TEST) % 10},
}
CORRUPT_ACCEPTS = ("grayscale-2d", "grayscale-c1", "labels-too-many-classes", "64x64")  # no model involved: valid input


def _corrupt_output_matches(w: dict, d: Path) -> None:
    with np.load(d / "data" / "test.npz") as f:
        x, y = f["x"], f["y"]
    out = np.load(d / "out" / "fog.npy")
    x = x if x.ndim == 4 else x[..., None]  # grey (N, H, W) is read as (N, H, W, 1)
    assert out.shape == x.shape and out.dtype == np.uint8, (out.shape, x.shape)
    assert np.array_equal(np.load(d / "out" / "labels.npy"), y)
    assert 0 < np.abs(out.astype(int) - x).mean() < 120, "fog must change the images, not replace them"


for _k, _arrs in BAD_TEST.items():
    for _cmd in ("evaluate", "mine", "corrupt"):
        _ok = _cmd == "corrupt" and _k in CORRUPT_ACCEPTS
        case("data arrays", f"test-{_k}-{_cmd}", expect="ok" if _ok else "error",
             extra_check=_corrupt_output_matches if _ok else None)(
            lambda w, d, _c=_cmd, _a=_arrs: base(_c, w, d, data=_npz_data(d, test=_a)))
case("data arrays", "object-npz")(
    lambda w, d: base("evaluate", w, d, data=_npz_data(d, test={"x": np.array([object()] * 3), "y": np.arange(3)})))
case("data arrays", "npz-random-bytes")(
    lambda w, d: base("evaluate", w, d, data=(_npz_data(d), (d / "data/test.npz").write_bytes(_RANDOM), d / "data")[2]))


def _fail_npz(d: Path, **arrs) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    np.savez(d / "f.npz", **arrs)
    return d / "f.npz"


BAD_FAILURES = {
    "empty": {"x": np.zeros((0, 32, 32, 3), np.uint8), "y": np.zeros(0, np.int64)},
    "no-y": {"x": _images(4, 3)},
    "labels-out-of-range": {"x": _images(4, 3), "y": np.array([0, 1, 2, 10])},
    "labels-negative": {"x": _images(4, 3), "y": np.array([0, -1, 2, 3])},
    "float": {"x": _images(4, 3) / 255.0, "y": np.arange(4)},
    "nchw": {"x": _images(4, 3).transpose(0, 3, 1, 2).copy(), "y": np.arange(4)},
    "16x16": {"x": _images(4, 3, size=16), "y": np.arange(4)},
    "rgba": {"x": np.concatenate([_images(4, 3), np.zeros((4, 32, 32, 1), np.uint8)], 3), "y": np.arange(4)},
}
for _k, _arrs in BAD_FAILURES.items():
    case("failure sets", f"failures-{_k}")(
        lambda w, d, _a=_arrs: _set_flag(base("repair", w, d), "--failures", str(_fail_npz(d, **_a))))
case("failure sets", "failures-one-image", expect="ok")(
    lambda w, d: _set_flag(base("repair", w, d), "--failures", str(_fail_npz(d, x=_images(1, 3), y=np.array([3])))))
case("failure sets", "failures-one-image-deeprepair", expect="ok")(
    lambda w, d: _set_flag(_set_flag(base("repair", w, d), "--failures", str(_fail_npz(d, x=_images(1, 3), y=np.array([3])))),
                           "--method", "deeprepair"))
for _k, _extra in (("severity-float", {"severity": np.full(4, 2.5)}), ("severity-short", {"severity": np.arange(2)}),
                   ("index-2d", {"index": np.zeros((4, 2), np.int64)})):
    case("failure sets", f"failures-{_k}")(
        lambda w, d, _e=_extra: _set_flag(base("repair", w, d), "--failures",
                                          str(_fail_npz(d, x=_images(4, 3), y=np.arange(4), **_e))))
case("failure sets", "eval-failures-severity-float")(
    lambda w, d: base("repair", w, d) + ["--eval-failures", str(_fail_npz(d, x=_images(4, 3), y=np.arange(4),
                                                                             severity=np.full(4, 0.5)))])
for _k, _arrs in (("empty", {"x": np.zeros((0, 32, 32, 3), np.uint8)}), ("float", {"x": _images(4, 3) / 255.0}),
                  ("no-x", {"y": np.arange(4)}), ("16x16", {"x": _images(4, 3, size=16)})):
    case("failure sets", f"field-{_k}")(lambda w, d, _a=_arrs: base("repair", w, d) + ["--field", str(_fail_npz(d, **_a))])
case("failure sets", "field-random-bytes")(lambda w, d: base("repair", w, d) + ["--field", str(_bytes_ckpt(d, _RANDOM, "f.npz"))])
case("failure sets", "field-object-array", match="object")(
    lambda w, d: base("repair", w, d) + ["--field", str(_object_npz(d))])
case("failure sets", "failures-missing")(lambda w, d: _set_flag(base("repair", w, d), "--failures", str(d / "nope.npz")))


def _png(path: Path, arr: np.ndarray, mode: str | None = None) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path) if mode else Image.fromarray(arr).save(path)


def _folder(d: Path, kind: str) -> Path:
    root = d / "imgs"
    x = _images(20, 2)
    for split in ("train", "test"):
        for i in range(20):
            cls = f"c{i % 4}"
            p = root / split / cls / f"{i}.png"
            if kind == "16bit":
                _png(p, (x[i, ..., 0].astype(np.uint16) * 257))  # a 16-bit grayscale PNG
            elif kind == "mixed-sizes" and i == 7:
                _png(p, _images(1, 9, size=24)[0])
            else:
                _png(p, x[i])
    if kind == "symlink-loop":
        os.symlink(root / "test", root / "test" / "c0" / "loop")
    if kind == "corrupt-png":
        (root / "test" / "c1" / "5.png").write_bytes(_RANDOM)
    return root


def _check_16bit_loaded_right(w: dict, d: Path) -> None:
    from deeprepair.data import load_dataset

    ds = load_dataset(d / "imgs", "test")
    x = _images(20, 2)[..., 0]
    assert (ds.x == 255).mean() < 0.01, "16-bit PNGs must not be clipped to white"
    order = [int(p) for p in sorted(str(i) for i in range(20))]  # files sorted by name within a class
    assert ds.x.shape == (20, 32, 32, 3)
    assert np.abs(ds.x[..., 0].astype(int).mean() - x.astype(int).mean()) < 2, order


def _model4(w: dict, d: Path) -> Path:
    """A 4-class checkpoint, to go with the 4-class image folders."""
    import torch

    from deeprepair.models import Classifier, create_model
    from deeprepair.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    p = d / "m4" / "m.safetensors"
    p.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(Classifier(create_model("resnet-20", 4)), p, {"arch": "resnet-20", "num_classes": 4})


def _renamed_test_classes(d: Path) -> Path:
    root = _folder(d, "plain")
    os.rename(root / "test" / "c0", root / "test" / "c9")  # test: c1 c2 c3 c9, train: c0 c1 c2 c3
    return root


def _model4_named(w: dict, d: Path, names: list[str]) -> Path:
    import torch

    from deeprepair.models import Classifier, create_model
    from deeprepair.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    p = d / "m4n" / "m.safetensors"
    p.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(Classifier(create_model("resnet-20", 4)), p,
                           {"arch": "resnet-20", "num_classes": 4, "classes": names})


case("image folders", "test-split-other-class-names-repair", match="classes")(
    lambda w, d: base("repair", w, d, model=_model4(w, d), data=_renamed_test_classes(d)))
case("image folders", "model-classes-not-the-data-classes-evaluate", match="class")(
    lambda w, d: base("evaluate", w, d, model=_model4_named(w, d, ["c0", "c1", "c3", "c2"]), data=_folder(d, "plain")))
case("image folders", "model-classes-are-the-data-classes-evaluate", expect="ok")(
    lambda w, d: base("evaluate", w, d, model=_model4_named(w, d, ["c0", "c1", "c2", "c3"]), data=_folder(d, "plain")))
case("image folders", "16-bit-png-evaluate", expect="ok", extra_check=_check_16bit_loaded_right)(
    lambda w, d: base("evaluate", w, d, model=_model4(w, d), data=_folder(d, "16bit")))
case("image folders", "symlink-loop-evaluate", match="link")(
    lambda w, d: base("evaluate", w, d, model=_model4(w, d), data=_folder(d, "symlink-loop")))
case("image folders", "mixed-sizes-evaluate")(
    lambda w, d: base("evaluate", w, d, model=_model4(w, d), data=_folder(d, "mixed-sizes")))
case("image folders", "undecodable-png-evaluate")(
    lambda w, d: base("evaluate", w, d, model=_model4(w, d), data=_folder(d, "corrupt-png")))
case("image folders", "symlink-loop-failures", match="link")(
    lambda w, d: _set_flag(base("repair", w, d, model=_model4(w, d), data=_folder(d, "plain")), "--failures",
                           str(_folder(d / "f", "symlink-loop") / "test")))


def _corrupted(d: Path, size: int) -> Path:
    c = d / "c10c"
    c.mkdir(parents=True)
    x = np.repeat(_images(N_TEST, 2, size=32), size // 32, 1).repeat(size // 32, 2) if size >= 32 else _images(N_TEST, 2, size)
    np.save(c / "fog.npy", np.concatenate([x] * 5))
    np.save(c / "labels.npy", np.tile(np.arange(N_TEST) % 10, 5))
    return c


def _corrupted_variant(d: Path, kind: str) -> Path:
    c = _corrupted(d, 32)
    if kind == "truncated":
        (c / "fog.npy").write_bytes((c / "fog.npy").read_bytes()[:5000])
    elif kind == "random":
        (c / "fog.npy").write_bytes(_RANDOM)
    elif kind == "labels-other":
        np.save(c / "labels.npy", np.tile((np.arange(N_TEST) + 1) % 10, 5))
    elif kind == "labels-short":
        np.save(c / "labels.npy", np.arange(7))
    elif kind == "labels-object":
        np.save(c / "labels.npy", np.array([None] * 5, dtype=object), allow_pickle=True)
    elif kind == "float":
        np.save(c / "fog.npy", np.load(c / "fog.npy").astype(np.float32))
    elif kind == "count-not-5-blocks":
        np.save(c / "fog.npy", np.load(c / "fog.npy")[:-3])
    elif kind == "manifest-list":
        (c / "manifest.json").write_text("[1]")
    elif kind == "no-npy":
        (c / "fog.npy").unlink()
    return c


for _k in ("truncated", "random", "labels-other", "labels-short", "labels-object", "float", "count-not-5-blocks",
           "manifest-list", "no-npy"):
    case("data arrays", f"corrupted-{_k}-evaluate")(lambda w, d, _k=_k: base("evaluate", w, d) + [
        "--corrupted", str(_corrupted_variant(d, _k))])
for _cmd in ("evaluate", "mine"):
    case("data arrays", f"corrupted-64x64-{_cmd}")(lambda w, d, _c=_cmd: base(_c, w, d) + ["--corrupted", str(_corrupted(d, 64))])
    case("data arrays", f"corrupted-not-a-folder-{_cmd}")(lambda w, d, _c=_cmd: base(_c, w, d) + ["--corrupted", str(w["fail"])])


# --- outputs: an existing file, a read-only folder, a full disk

def _file_at(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "out").write_text("precious\n")
    return d / "out"


for _cmd in ("evaluate", "mine", "repair", "corrupt", "demo"):
    case("outputs", f"out-is-the-data-folder-{_cmd}", match="data folder")(
        lambda w, d, _c=_cmd: base(_c, w, d, data=_npz_data(d), out=d / "data"))
for _cmd in ("evaluate", "mine", "repair", "corrupt", "demo", "train", "train-style"):
    case("outputs", f"out-is-a-file-{_cmd}")(lambda w, d, _c=_cmd: base(_c, w, d, out=_file_at(d)))


def _readonly(d: Path) -> Path:
    ro = d / "ro"
    ro.mkdir(parents=True)
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    return ro / "out"


def _permissions_ignored() -> bool:
    """Whether this process writes into a read-only folder anyway (root with CAP_DAC_OVERRIDE)."""
    import tempfile

    with tempfile.TemporaryDirectory() as t:
        ro = Path(t) / "ro"
        ro.mkdir()
        ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
        try:
            (ro / "probe").write_text("x")
            return True
        except PermissionError:
            return False
        finally:
            ro.chmod(0o755)


_root = _permissions_ignored()
for _cmd in ("evaluate", "mine", "repair", "corrupt", "demo", "train", "train-style"):
    case("outputs", f"read-only-folder-{_cmd}",
         marks=[pytest.mark.skipif(_root, reason="this process ignores folder permissions (root)")])(
        lambda w, d, _c=_cmd: base(_c, w, d, out=_readonly(d)))
case("outputs", "read-only-folder-corrupt-grid",
     marks=[pytest.mark.skipif(_root, reason="this process ignores folder permissions (root)")])(
    lambda w, d: ["corrupt", "--data", str(w["data"]), "--grid", str(_readonly(d) / "g.png"), "--corruptions", "fog",
                  "--quiet"])


def _disk_full_after(n_ok: int, error=None):
    """Make the n_ok+1-th atomic write (and every later one) fail as on a full disk (or ``error``)."""
    def patch(monkeypatch):
        import contextlib
        import errno

        from deeprepair.data import io

        real = io.atomic_open
        count = {"n": 0}

        @contextlib.contextmanager
        def failing(path):
            count["n"] += 1
            with real(path) as f:
                if count["n"] > n_ok:
                    raise error or OSError(errno.ENOSPC, "No space left on device")
                yield f

        monkeypatch.setattr(io, "atomic_open", failing)
    return patch


def _disk_full_at_flush(monkeypatch):
    """A full disk as it really fails: writes are buffered, the flush (and the flush in close) fails."""
    import errno

    from deeprepair.data import io

    class FullFile:
        def __init__(self, f):
            self._f = f

        def write(self, b):
            return len(b)

        def flush(self):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            self._f.close()
            raise OSError(errno.ENOSPC, "No space left on device")

        def fileno(self):
            return self._f.fileno()

    class Os:
        def __getattr__(self, name):
            return getattr(os, name)

        def fdopen(self, fd, mode="r"):
            return FullFile(os.fdopen(fd, mode))

    monkeypatch.setattr(io, "os", Os())


FINISHED = {"evaluate": ("out/rq1.json",), "mine": ("out/mining.json",), "repair": ("out/report.json",),
            "corrupt": ("out/manifest.json",), "demo": ("out/demo.json",), "train": ("out/m.safetensors",)}
for _cmd, _done in FINISHED.items():
    for _n in (0, 1, 2):
        case("outputs", f"disk-full-after-{_n}-writes-{_cmd}", patch=_disk_full_after(_n), finished=_done,
             match="space")(lambda w, d, _c=_cmd: base(_c, w, d))


for _cmd, _done in FINISHED.items():
    case("outputs", f"disk-full-at-flush-{_cmd}", patch=_disk_full_at_flush, finished=_done, match="space")(
        lambda w, d, _c=_cmd: base(_c, w, d))
# a read-only folder as root sees it not: every write refused with EACCES (the chmod cases above run as a user)
for _cmd, _done in FINISHED.items():
    case("outputs", f"writes-refused-{_cmd}", finished=_done, match="permission",
         patch=_disk_full_after(0, PermissionError(13, "Permission denied")))(lambda w, d, _c=_cmd: base(_c, w, d))
case("outputs", "writes-refused-style", finished=("out/s.png",), match="permission",
     patch=_disk_full_after(0, PermissionError(13, "Permission denied")))(lambda w, d: base("style", w, d))
case("outputs", "writes-refused-corrupt-grid", finished=("g.png",), match="permission",
     patch=_disk_full_after(0, PermissionError(13, "Permission denied")))(
    lambda w, d: ["corrupt", "--data", str(w["data"]), "--grid", str(d / "g.png"), "--corruptions", "fog", "--quiet"])


case("outputs", "grid-under-a-file-corrupt")(
    lambda w, d: ["corrupt", "--data", str(w["data"]), "--grid", str(_file_at(d) / "g.png"), "--corruptions", "fog",
                  "--quiet"])


# --- paths and names that are not what they should be

def _pth(w: dict, d: Path) -> Path:
    import torch

    d.mkdir(parents=True, exist_ok=True)
    torch.save({k: v for k, v in _weights(w).items()}, d / "w.pth")
    return d / "w.pth"


MISC = {
    "data-is-a-file": lambda w, d: base("evaluate", w, d, data=w["fail"]),
    "data-empty-folder": lambda w, d: (d.joinpath("e").mkdir(parents=True), base("evaluate", w, d, data=d / "e"))[1],
    "data-missing": lambda w, d: base("evaluate", w, d, data=d / "nope"),
    "classes-txt-duplicates": lambda w, d: (_npz_data(d), (d / "data" / "classes.txt").write_text("a\na\n" * 5),
                                           base("evaluate", w, d, data=d / "data"))[2],
    "classes-txt-binary": lambda w, d: (_npz_data(d), (d / "data" / "classes.txt").write_bytes(_RANDOM),
                                       base("evaluate", w, d, data=d / "data"))[2],
    "model-is-a-folder": lambda w, d: base("evaluate", w, d, model=w["data"]),
    "model-missing": lambda w, d: base("evaluate", w, d, model=d / "nope.safetensors"),
    "unknown-corruption": lambda w, d: _set_flag(base("evaluate", w, d), "--corruptions", "lava"),
    "empty-corruption-name": lambda w, d: _set_flag(base("corrupt", w, d), "--corruptions", ","),
    "factory-not-a-spec": lambda w, d: base("evaluate", w, d, model=_pth(w, d)) + ["--factory", "nocolon", "--num-classes", "10"],
    "factory-missing-module": lambda w, d: base("evaluate", w, d, model=_pth(w, d)) + ["--factory", "no.such.mod:fn",
                                                                                      "--num-classes", "10"],
    "factory-not-a-module-returned": lambda w, d: base("evaluate", w, d, model=_pth(w, d)) + ["--factory", "os:getcwd",
                                                                                             "--num-classes", "10"],
    "factory-needs-other-arguments": lambda w, d: base("evaluate", w, d, model=_pth(w, d)) + ["--factory", "os:system",
                                                                                             "--num-classes", "10"],
    "factory-raises": lambda w, d: base("evaluate", w, d, model=_pth(w, d)) + ["--factory", "json:loads",
                                                                              "--num-classes", "10"],
    "factory-wrong-architecture": lambda w, d: base("evaluate", w, d, model=_pth(w, d)) + [
        "--factory", "deeprepair.models.resnet:resnet_20", "--num-classes", "7"],
    "factory-without-num-classes": lambda w, d: base("evaluate", w, d, model=_pth(w, d)) + [
        "--factory", "deeprepair.models.resnet:resnet_20"],
    "style-checkpoint-garbage": lambda w, d: _set_flag(base("repair", w, d), "--method", "deeprepair") + [
        "--style", "adain", "--style-checkpoint", str(_bytes_ckpt(d, _RANDOM, "s.safetensors"))],
    "style-checkpoint-is-a-model": lambda w, d: _set_flag(base("repair", w, d), "--method", "deeprepair") + [
        "--style", "adain", "--style-checkpoint", str(w["model"])],
    "style-adain-checkpoint-garbage": lambda w, d: _set_flag(base("style", w, d), "--backend", "adain") + [
        "--checkpoint", str(_bytes_ckpt(d, _RANDOM, "s.safetensors"))],
    "gate-holdout-garbage": lambda w, d: base("repair", w, d) + ["--gate", "--gate-holdout",
                                                                  str(_bytes_ckpt(d, _RANDOM, "h.npz"))],
    "eval-failures-garbage": lambda w, d: base("repair", w, d) + ["--eval-failures", str(_bytes_ckpt(d, _RANDOM, "e.npz"))],
    "failures-folder-unknown-class": lambda w, d: _set_flag(base("repair", w, d), "--failures",
                                                            str((_png(d / "f" / "zebra" / "0.png", _images(1, 3)[0]), d / "f")[1])),
    "bench-unknown-profile": lambda w, d: ["bench", "--profile", "huge", "--data", str(w["data"]), "--out", str(d / "b")],
    "bench-unknown-method": lambda w, d: ["bench", "--profile", "smoke", "--data", str(w["data"]), "--out", str(d / "b"),
                                          "--methods", "magic"],
    "report-not-a-bench-folder": lambda w, d: ["report", str(w["data"])],
}
MISC.update({
    "device-unknown": lambda w, d: base("evaluate", w, d) + ["--device", "gpu9"],
    "device-cuda-absent": lambda w, d: base("evaluate", w, d) + ["--device", "cuda:7"],
    "train-device-nonsense": lambda w, d: base("train", w, d) + ["--device", "tpu"],
    "evaluate-name-with-slashes": lambda w, d: base("evaluate", w, d) + ["--name", "../../escape"],
    "oracle-corruption-unknown": lambda w, d: _set_flag(base("repair", w, d), "--method", "oracle") + [
        "--oracle-corruption", "lava"],
    "eval-shifted-garbage": lambda w, d: base("repair", w, d) + ["--eval-shifted", str(_bytes_ckpt(d, _RANDOM, "s.npz"))],
    "mine-real-garbage": lambda w, d: base("mine", w, d) + ["--real", str(_bytes_ckpt(d, _RANDOM, "r.npz"))],
    "train-arch-unknown": lambda w, d: _set_flag(base("train", w, d), "--arch", "resnet-9000"),
    "train-style-layer-unknown": lambda w, d: base("train-style", w, d) + ["--layer", "net.nowhere"],
    "bench-arch-unknown": lambda w, d: ["bench", "--profile", "smoke", "--data", str(w["data"]), "--out", str(d / "b"),
                                        "--archs", "resnet-9000"],
    "bench-address-without-ray": lambda w, d: ["bench", "--profile", "smoke", "--data", str(w["data"]), "--out",
                                               str(d / "b"), "--address", "10.0.0.1:6379", "--methods", "nothing"],
    "demo-corruption-unknown": lambda w, d: _set_flag(base("demo", w, d), "--out", str(d / "out")) + ["--corruption", "lava"],
})
for _k, _fn in MISC.items():
    case("paths and names", _k)(_fn)


# --- style checkpoints (the adain backend's decoder): its metadata, mutated

STYLE_CKPT = Path(__file__).resolve().parents[1] / "checkpoints" / "style-resnet-20.safetensors"


def _style_ckpt(d: Path, mutate) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save

    with safe_open(str(STYLE_CKPT), framework="pt") as f:
        meta = json.loads(f.metadata()["deeprepair"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta, tensors = mutate(meta, tensors)
    d.mkdir(parents=True, exist_ok=True)
    (d / "s.safetensors").write_bytes(save(tensors, metadata={"deeprepair": meta if isinstance(meta, str) else json.dumps(meta)}))
    return d / "s.safetensors"


def _nan_decoder(m, t):
    k = next(k for k in t if k.startswith("decoder.") and t[k].numel() > 100)
    t[k] = t[k].clone()
    t[k].view(-1)[0] = float("nan")
    return m, t


STYLE_META_BAD = {
    "list": lambda m, t: ([1], t),
    "malformed-json": lambda m, t: ("{decoder", t),
    "no-decoder": lambda m, t: ({k: v for k, v in m.items() if k != "decoder"}, t),
    "decoder-string": lambda m, t: ({**m, "decoder": "big"}, t),
    "decoder-width-string": lambda m, t: ({**m, "decoder": {**m["decoder"], "width": "64"}}, t),
    "decoder-width-other": lambda m, t: ({**m, "decoder": {**m["decoder"], "width": 32}}, t),
    "decoder-channels-zero": lambda m, t: ({**m, "decoder": {**m["decoder"], "channels": 0}}, t),
    "encoder-list": lambda m, t: ({**m, "encoder": [1]}, t),
    "encoder-num-classes-ten": lambda m, t: ({**m, "encoder": {**m["encoder"], "num_classes": "ten"}}, t),
    "encoder-mean-string": lambda m, t: ({**m, "encoder": {**m["encoder"], "mean": "0.5"}}, t),
    "layer-unknown": lambda m, t: ({**m, "layer": "net.nowhere"}, t),
    "layer-list": lambda m, t: ({**m, "layer": [1]}, t),
    "no-encoder-weights": lambda m, t: (m, {k: v for k, v in t.items() if not k.startswith("encoder.")}),
    "nan-decoder-weight": _nan_decoder,
}
for _k, _mut in STYLE_META_BAD.items():
    case("style checkpoint metadata", f"{_k}-repair")(
        lambda w, d, _m=_mut: _set_flag(base("repair", w, d), "--method", "deeprepair") + [
            "--style", "adain", "--style-checkpoint", str(_style_ckpt(d / "sc", _m))])
    case("style checkpoint metadata", f"{_k}-style")(
        lambda w, d, _m=_mut: _set_flag(base("style", w, d), "--backend", "adain") + [
            "--checkpoint", str(_style_ckpt(d / "sc", _m))])


# --- resume state and existing outputs


def _state(d: Path, data: bytes) -> None:
    (d / "out").mkdir(parents=True, exist_ok=True)
    (d / "out" / "repair.state.safetensors").write_bytes(data)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/deeprepair-fuzz-pwned",))


case("resume state", "repair-state-random-bytes")(lambda w, d: (_state(d, _RANDOM), base("repair", w, d))[1])
case("resume state", "repair-state-pickle", extra_check=lambda w, d: not Path("/tmp/deeprepair-fuzz-pwned").exists())(
    lambda w, d: (_state(d, pickle.dumps(_Evil())), base("repair", w, d))[1])
case("resume state", "repair-state-is-a-model-file")(
    lambda w, d: (_state(d, w["model"].read_bytes()), base("repair", w, d))[1])
case("resume state", "repair-state-empty")(lambda w, d: (_state(d, b""), base("repair", w, d))[1])


def _train_state(d: Path, data: bytes) -> None:
    (d / "out").mkdir(parents=True, exist_ok=True)
    (d / "out" / "m.state.safetensors").write_bytes(data)


case("resume state", "train-state-random-bytes")(lambda w, d: (_train_state(d, _RANDOM), base("train", w, d) + ["--resume"])[1])
case("resume state", "train-state-is-a-model-file")(
    lambda w, d: (_train_state(d, w["model"].read_bytes()), base("train", w, d) + ["--resume"])[1])


def _first_run(cmd_argv: list[str]) -> None:
    """Run a command to its end (the run a later case then tries to fool)."""
    assert main(cmd_argv) == 0


def _interrupted_repair(w: dict, d: Path) -> None:
    """A repair whose state file exists (as if killed after its first epoch)."""
    argv = _set_flag(base("repair", w, d), "--epochs", "2")
    import deeprepair.repair.core as core

    real = core.save_run_state

    def stop(*a, **k):
        real(*a, **k)
        raise KeyboardInterrupt

    core.save_run_state = stop
    try:
        assert main(argv) == 130
    finally:
        core.save_run_state = real
    assert (d / "out" / "repair.state.safetensors").is_file()


def _other_failures(w, d):
    _interrupted_repair(w, d)
    return _set_flag(_set_flag(base("repair", w, d), "--epochs", "2"), "--failures",
                     str(_fail_npz(d / "f2", x=_images(N_FAIL, 7), y=np.arange(N_FAIL) % 10)))


def _other_model(w, d):
    _interrupted_repair(w, d)
    return _set_flag(base("repair", w, d, model=w["other"]), "--epochs", "2")


case("resume fingerprint", "repair-resume-other-failures", match="failure")(_other_failures)


def _garbled_state(w, d):
    _interrupted_repair(w, d)  # the run's record is there and matches; its state is then garbled
    (d / "out" / "repair.state.safetensors").write_bytes(_RANDOM)
    return _set_flag(base("repair", w, d), "--epochs", "2")


case("resume state", "repair-state-garbled-after-a-real-run", match="not a resumable state")(_garbled_state)
_FINISHED_STAT: dict[str, tuple] = {}


def _train_finished(w, d):
    _first_run(base("train", w, d))
    ckpt = d / "out" / "m.safetensors"
    _FINISHED_STAT[str(d)] = (ckpt.stat().st_mtime_ns, ckpt.stat().st_ino)
    return base("train", w, d) + ["--resume"]


def _untouched(w, d):
    ckpt = d / "out" / "m.safetensors"
    assert (ckpt.stat().st_mtime_ns, ckpt.stat().st_ino) == _FINISHED_STAT[str(d)], "a finished run was retrained"


case("resume fingerprint", "train-resume-of-a-finished-run", expect="ok", extra_check=_untouched)(_train_finished)
case("resume fingerprint", "repair-resume-other-model", match="model")(_other_model)


def _interrupted_train(w, d, data):
    argv = _set_flag(base("train", w, d, data=data), "--epochs", "2")
    import deeprepair.train as tr

    real = tr.save_run_state

    def stop(*a, **k):
        real(*a, **k)
        raise KeyboardInterrupt

    tr.save_run_state = stop
    try:
        assert main(argv) == 130
    finally:
        tr.save_run_state = real


def _train_other_data(w, d):
    _interrupted_train(w, d, w["data"])
    return _set_flag(base("train", w, d, data=_npz_data(d, train={"x": _images(N_TRAIN, 11), "y": np.arange(N_TRAIN) % 10})),
                     "--epochs", "2") + ["--resume"]


case("resume fingerprint", "train-resume-other-data", match="data")(_train_other_data)


def _style_other_data(w, d):
    import deeprepair.train as tr

    real = tr.save_run_state

    def stop(*a, **k):
        real(*a, **k)
        raise KeyboardInterrupt

    tr.save_run_state = stop  # train_decoder imports it when called
    try:
        assert main(_set_flag(base("train-style", w, d), "--epochs", "2")) == 130
    finally:
        tr.save_run_state = real
    other = _npz_data(d, train={"x": _images(N_TRAIN, 13), "y": np.arange(N_TRAIN) % 10})
    return _set_flag(base("train-style", w, d, data=other), "--epochs", "2") + ["--resume"]


case("resume fingerprint", "train-style-resume-other-data", match="training set")(_style_other_data)


def _mine_other_data(w, d):
    _first_run(base("mine", w, d))
    other = _npz_data(d, test={"x": _images(N_TEST, 12), "y": np.arange(N_TEST) % 10})
    return base("mine", w, d, data=other)


case("resume fingerprint", "mine-into-folder-of-other-data", match="test set")(_mine_other_data)


def _corrupt_other_seed(w, d):
    _first_run(base("corrupt", w, d))
    return base("corrupt", w, d) + ["--seed", "3"]


case("resume fingerprint", "corrupt-into-folder-of-other-seed")(_corrupt_other_seed)


def _bench_other_data(w, d):
    argv = ["bench", "--profile", "smoke", "--data", str(w["data"]), "--out", str(d / "out"), "--methods", "original",
            "--corruptions", "fog", "--quiet"]
    _first_run(argv)
    other = _npz_data(d, test={"x": _images(N_TEST, 14), "y": np.arange(N_TEST) % 10})
    return _set_flag(argv, "--data", str(other))


case("resume fingerprint", "bench-into-folder-of-other-data", match="other data")(_bench_other_data)


def _bench_garbled(w, d, what):
    argv = ["bench", "--profile", "smoke", "--data", str(w["data"]), "--out", str(d / "out"), "--methods", "original",
            "--corruptions", "fog", "--quiet"]
    _first_run(argv)
    target = sorted((d / "out" / "cells").glob("*.json"))[0] if what == "cell" else d / "out" / "models" / "resnet-20.safetensors"
    target.write_bytes(b"[1" if what == "cell" else _RANDOM)
    return argv


case("resume state", "bench-rerun-with-a-garbled-cell", match="cell")(lambda w, d: _bench_garbled(w, d, "cell"))
case("resume state", "bench-rerun-with-a-garbled-model", match="safetensors")(lambda w, d: _bench_garbled(w, d, "model"))


def _style_existing(w, d):
    (d / "out").mkdir(parents=True)
    (d / "out" / "s.png").write_bytes(b"precious")
    return base("style", w, d)


def _style_rerun(w, d):
    _first_run(base("style", w, d))
    return base("style", w, d)


def _evaluate_existing(w, d):
    _first_run(base("evaluate", w, d))
    return base("evaluate", w, d, model=w["other"])


case("overwrite", "style-out-existing-file", match="force")(_style_existing)
case("overwrite", "style-rerun", match="force")(_style_rerun)
case("overwrite", "evaluate-out-holds-a-report", match="force")(_evaluate_existing)


def _repair_existing(w, d):
    _first_run(base("repair", w, d))
    return base("repair", w, d)


case("overwrite", "repair-out-holds-a-model", match="force")(_repair_existing)


# --- style inputs

def _style_npz(d: Path, **arrs) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    np.savez(d / "c.npz", **arrs)
    return d / "c.npz"


STYLE_BAD = {
    "grayscale-2d": {"x": _images(2, 3)[..., 0]},
    "grayscale-3d": {"x": _images(2, 3)[0, ..., 0]},
    "empty": {"x": np.zeros((0, 32, 32, 3), np.uint8)},
    "random-float": {"x": np.random.default_rng(0).normal(size=(2, 32, 32, 3))},
    "no-x": {"y": np.arange(2)},
    "int64": {"x": _images(2, 3).astype(np.int64) * 1000},
    "nchw": {"x": _images(2, 3).transpose(0, 3, 1, 2).copy()},
}
for _k, _arrs in STYLE_BAD.items():
    case("style inputs", f"content-{_k}")(lambda w, d, _a=_arrs: _set_flag(base("style", w, d), "--content", str(_style_npz(d, **_a))))


def _object_npz(d: Path) -> Path:
    """An .npz whose x is an object array (it would need pickle to load)."""
    d.mkdir(parents=True, exist_ok=True)
    np.savez(d / "c.npz", x=np.array([{"a": 1}, None], dtype=object))
    return d / "c.npz"


case("style inputs", "content-object-array", match="object")(
    lambda w, d: _set_flag(base("style", w, d), "--content", str(_object_npz(d))))
def _style_pngs(w, d):
    d.mkdir(parents=True, exist_ok=True)
    _png(d / "a.png", _images(2, 5)[0])
    _png(d / "b.png", _images(2, 5)[1])
    return ["style", "--content", str(d / "a.png"), "--style", str(d / "b.png"), "--out", str(d / "out" / "s.png"), "--quiet"]


case("style inputs", "png-pair-runs-without-warnings", expect="ok",
     extra_check=lambda w, d: None if (d / "out" / "s.png").stat().st_size > 500 else pytest.fail("no figure"))(_style_pngs)
case("style inputs", "content-random-bytes")(
    lambda w, d: _set_flag(base("style", w, d), "--content", str(_bytes_ckpt(d, _RANDOM, "c.npz"))))
case("style inputs", "content-16bit-png", expect="ok",
     extra_check=lambda w, d: None)(
    lambda w, d: (_png(d / "g16.png", (_images(1, 3)[0, ..., 0].astype(np.uint16) * 257)),
                  _set_flag(base("style", w, d), "--content", str(d / "g16.png")))[1])


# --- report of a benchmark folder

def _bench_dir(d: Path, profile: str | None, cell: str | None) -> Path:
    b = d / "bench"
    (b / "cells").mkdir(parents=True)
    if profile is not None:
        (b / "profile.json").write_text(profile)
    if cell is not None:
        (b / "cells" / "a.json").write_text(cell)
    return b


_PROF = json.dumps({"name": "smoke", "archs": {"resnet-20": {}}, "corruptions": ["fog"], "methods": ["original"],
                    "seeds": [0], "collect": 4, "repair": {}, "cross_subsample": 4})
REPORT_BAD = {
    "profile-malformed": ("{name", None),
    "profile-empty": ("", None),
    "profile-list": ("[1, 2]", None),
    "profile-string": ('"smoke"', None),
    "cell-malformed": (_PROF, "{cell"),
    "cell-empty": (_PROF, ""),
    "cell-list": (_PROF, "[]"),
    "cell-missing-fields": (_PROF, '{"arch": "resnet-20"}'),
}
for _k, (_p, _c) in REPORT_BAD.items():
    case("report", _k)(lambda w, d, _p=_p, _c=_c: ["report", str(_bench_dir(d, _p, _c)), "--quiet"])


# --- records in an output folder that a rerun reads: corrupt's manifest, mine's record, bench's profile

def _record(d: Path, name: str, text: str) -> None:
    (d / "out").mkdir(parents=True, exist_ok=True)
    (d / "out" / name).write_text(text)


for _k, _text in (("malformed", "{oops"), ("list", "[1, 2]"), ("empty", ""), ("string", '"x"')):
    case("output records", f"corrupt-manifest-{_k}")(lambda w, d, _t=_text: (_record(d, "manifest.json", _t), base("corrupt", w, d))[1])
    case("output records", f"mine-record-{_k}")(lambda w, d, _t=_text: (_record(d, "mining.json", _t), base("mine", w, d))[1])
    case("output records", f"bench-profile-record-{_k}")(
        lambda w, d, _t=_text: (_record(d, "profile.json", _t),
                                ["bench", "--profile", "smoke", "--data", str(w["data"]), "--out", str(d / "out"), "--quiet"])[1])
    case("output records", f"bench-profile-file-{_k}")(
        lambda w, d, _t=_text: (_record(d, "p.json", _t),
                                ["bench", "--profile", str(d / "out" / "p.json"), "--data", str(w["data"]), "--out",
                                 str(d / "b"), "--quiet"])[1])
case("output records", "bench-profile-file-wrong-types")(
    lambda w, d: (_record(d, "p.json", json.dumps({"name": "x", "archs": [], "corruptions": "fog", "methods": 3, "seeds": 0,
                                                   "collect": "many", "repair": [], "cross_subsample": None})),
                  ["bench", "--profile", str(d / "out" / "p.json"), "--data", str(w["data"]), "--out", str(d / "b"), "--quiet"])[1])


# ------------------------------------------------------------------------------ the runner


def _main(argv: list[str]):
    try:
        return main(argv)
    except SystemExit as e:  # argparse
        return e.code
    except BaseException as e:  # a traceback: record it, then fail
        return f"traceback: {type(e).__name__}: {e}"


def test_every_numeric_option_is_range_checked():
    """Each numeric option parses with a range-checked type (deeprepair.cli._number), which returns
    every in-range value unchanged and refuses NaN, Inf and what lies outside its range."""
    import argparse

    actions = _numeric_actions()
    assert len(actions) > 40
    for cmd, flag, t, _ in actions:
        assert hasattr(t, "lo"), f"{cmd} {flag} has type {t!r}: use a range-checked type from deeprepair.cli"
        for v in EXTREMES + ("1", "0.5", "100"):
            if t.kind is int and ("." in v or "e" in v or "n" in v):
                v = {"1e30": str(10**30), "0.5": "1"}.get(v, v)
                if "n" in v:
                    with pytest.raises(argparse.ArgumentTypeError):
                        t(v)
                    continue
            if _out_of_range(t, v):
                with pytest.raises(argparse.ArgumentTypeError):
                    t(v)
            else:
                assert t(v) == t.kind(v), (cmd, flag, v)
    # the ranges the issue names
    by = {(c, f): t for c, f, t, _ in actions}
    for cmd in ("train", "repair", "train-style"):
        assert by[(cmd, "--lr")].lo == 0 and by[(cmd, "--lr")].lo_open
    assert (by[("repair", "--distill")].lo, by[("repair", "--distill")].lo_open) == (0, False)
    mb = by[("repair", "--max-break")]
    assert (mb.lo, mb.hi, mb.lo_open, mb.hi_open) == (0, 1, False, True)
    for (c, f), t in by.items():
        if "seed" in f:
            assert t.lo == 0, (c, f)


def _log(row: dict) -> None:
    path = os.environ.get("DEEPREPAIR_FUZZ_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")


@pytest.mark.parametrize("c", [pytest.param(c, id=f"{c.cls}:{c.name}", marks=c.marks) for c in CASES])
def test_case(c: Case, world, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DEEPREPAIR_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    d = tmp_path / "case"
    d.mkdir()
    argv = c.build(world, d)
    capsys.readouterr()
    if c.patch:
        c.patch(monkeypatch)
    inputs = _tree_hashes(world["root"], d)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = _main(argv)
    noisy = [str(m.message)[:120] for m in caught if "writable" in str(m.message)]
    out, err = capsys.readouterr()
    for p in d.rglob("*"):  # let the read-only folders be inspected and cleaned
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o755)
    after = _tree_hashes(world["root"], d)
    changed = sorted(k for k, v in inputs.items() if after.get(k) != v)
    leftover = [f for f in c.finished if (d / f).exists()]
    if c.expect == "error" and c.patch is None:  # a refused command writes nothing new (empty folders aside);
        # a full disk may stop a run after some complete, resumable files: there only c.finished counts
        leftover += sorted(k for k in after if k not in inputs and Path(k).is_relative_to(d / "out"))
    tmp_left = [str(p) for p in d.rglob("*.tmp")]
    lines = err.strip().splitlines()
    row = {"class": c.cls, "case": c.name, "expect": c.expect, "rc": rc, "stderr": err.strip()[-300:],
           "traceback": isinstance(rc, str) or "Traceback" in err,
           "one_line_error": rc == 2 and len(lines) == 1 and lines[0].startswith("error: "),
           "silent_wrong": c.expect == "error" and rc == 0,
           "inputs_modified": changed, "partial_output": leftover + tmp_left, "warnings": noisy}
    if c.expect == "ok" and rc == 0 and c.extra_check is not None:
        try:
            c.extra_check(world, d)
        except AssertionError as e:
            row["silent_wrong"] = True
            row["check"] = str(e)
    _log(row)
    assert not row["traceback"], err
    if c.expect == "error":
        assert rc == 2, (rc, err, out)
        assert row["one_line_error"], err
        if c.match:
            assert c.match.lower() in err.lower(), err
    else:
        assert rc == 0, err
        assert not row["silent_wrong"], row.get("check")
        assert not noisy, noisy  # e.g. torch's "non-writable NumPy array" warning
    assert not changed, changed
    assert not row["partial_output"], row["partial_output"]
