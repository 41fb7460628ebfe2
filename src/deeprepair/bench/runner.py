"""Run a benchmark profile: pre-train or load models, mine failures, run every repair cell.

Every cell (arch, corruption, method, seed) is independent and idempotent: its result is
written atomically to ``OUT/cells/<name>__<hash>.json`` when it finishes, re-running skips it,
and a kill loses at most the cells in flight. Pre-training and mining resume the same way.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..data import ImageSet, load_dataset
from ..data.io import atomic_write_bytes, sha256_file
from ..engine import machine, pick_device, predict
from ..errors import DeepRepairError
from .profile import MIXED, RENAMED, arch_corruptions, cell_hash, frontier_row, recipe_options

REPO_ROOT = Path(__file__).resolve().parents[3]
MACHINE = machine()


def _subset(ds: ImageSet, n: int, seed: int) -> ImageSet:
    if not n or n >= len(ds):
        return ds
    return ds.subset(np.sort(np.random.default_rng(seed).choice(len(ds), n, replace=False)))


def _save_npz(path: Path, **arrays) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


@dataclass
class Context:
    """What every cell of one run shares (rebuilt from OUT on a remote worker)."""

    prof: dict
    data_dir: str
    out: Path
    device: torch.device
    train: ImageSet = field(init=False)
    test: ImageSet = field(init=False)
    _models: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        d = self.prof["data"]
        self.train = _subset(load_dataset(self.data_dir, "train"), d.get("train_subset", 0), 1)
        self.test = _subset(load_dataset(self.data_dir, "test"), d.get("test_subset", 0), 2)

    # -- models ---------------------------------------------------------------------------
    def model_path(self, arch: str) -> Path:
        ck = self.prof["archs"][arch].get("checkpoint")
        if ck:
            for base in (Path.cwd(), REPO_ROOT):
                if (base / ck).is_file():
                    return base / ck
        return self.out / "models" / f"{arch}.safetensors"

    def model(self, arch: str, progress: Callable[[str], None] | None = None):
        if arch in self._models:
            return self._models[arch]
        from ..models import Classifier, create_model
        from ..models.checkpoint import load_checkpoint, save_checkpoint
        from ..train import TrainConfig, fit

        path = self.model_path(arch)
        if not path.is_file():
            epochs = self.prof["archs"][arch]["pretrain_epochs"]
            if progress:
                progress(f"pre-training {arch} for {epochs} epochs -> {path}")
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.manual_seed(0)
            net = Classifier(create_model(arch, self.train.num_classes))
            res = fit(net, self.train.x, self.train.y, TrainConfig(epochs=epochs), device=self.device,
                      eval_x=self.test.x, eval_y=self.test.y, state_path=path.with_suffix(".state.safetensors"))
            save_checkpoint(net.cpu(), path, {"arch": arch, "num_classes": self.train.num_classes,
                                              "classes": self.train.classes, "input_size": list(self.train.x.shape[1:]),
                                              "clean_accuracy": res.history[-1]["test_acc"], "history": res.history,
                                              "train_seconds": res.seconds, "precision": res.precision,
                                              "train_command": f"deeprepair bench (profile {self.prof['name']})"})
        # the weights are written last: a state still beside them is what a kill before its removal left
        path.with_suffix(".state.safetensors").unlink(missing_ok=True)
        model, meta = load_checkpoint(path, self.device)
        if meta["num_classes"] != self.train.num_classes:
            raise DeepRepairError(f"{path} has {meta['num_classes']} classes, the data {self.train.num_classes}")
        self._models[arch] = (model, meta, sha256_file(path)[:16])
        return self._models[arch]

    # -- failures -------------------------------------------------------------------------
    def mine_dir(self, arch: str) -> Path:
        return self.out / "mine" / arch

    def split_by(self) -> str:
        return self.prof.get("split_by", "image")

    def mine(self, arch: str, progress: Callable[[str], None] | None = None) -> None:
        """Failures of ``arch`` per corruption (5 severities), Dc/De split (by source photo unless
        the profile says ``split_by: failure``), De subsample for the cross-failure matrix, and
        the original's predictions on the whole stack; files under OUT/mine/<arch>/, skipped when
        present. A ``real`` profile predicts its real photos once instead (split per seed); the
        ``mixed`` pseudo-corruption is drawn from the others (``_mine_mixed``)."""
        from ..evaluate import CorruptedSource, predict_corrupted
        from ..mining import find_failures

        model, _, _ = self.model(arch)
        folder = self.mine_dir(arch)
        folder.mkdir(parents=True, exist_ok=True)
        if self.prof.get("real"):
            if not (folder / "real.npz").is_file():
                real = self.real_set()
                _save_npz(folder / "real.npz", pred=predict(model, real.x, device=self.device))
            return
        source = CorruptedSource(self.test.x, self.test.y, seed=0)
        for c in arch_corruptions(self.prof, arch):
            if c == MIXED or (folder / self._mine_name(c)).is_file():
                continue
            if progress:
                progress(f"mining {arch} / {c}")
            preds, stack = predict_corrupted(model, source, c, device=self.device)
            split = find_failures(c, preds, self.test.y, self.prof["collect"], self.test.num_classes, seed=0,
                                  split_by=self.split_by())
            rng = np.random.default_rng(3)
            sub = np.sort(rng.choice(len(split.de), min(self.prof["cross_subsample"], len(split.de)), replace=False))
            dc_i, de_i = split.index[split.dc], split.index[split.de]
            if self.prof.get("shifted"):  # the whole stack and the original's answers, for the unseen-set metrics
                np.save(folder / f"{c}.stack.tmp.npy", stack)
                (folder / f"{c}.stack.tmp.npy").replace(folder / f"{c}.stack.npy")
            _save_npz(folder / self._mine_name(c), dc_x=stack[dc_i], dc_y=split.y[split.dc], de_x=stack[de_i],
                      de_y=split.y[split.de], de_severity=split.severity[split.de], sub=sub,
                      failures=np.int64(len(split.index)), acc=np.array([(p == self.test.y).mean() for p in preds]),
                      pred=np.concatenate(preds).astype(np.int16), dc_sources=split.dc_sources(),
                      unseen=split.unseen(), de_photo=de_i % len(self.test))
        if MIXED in arch_corruptions(self.prof, arch):
            self._mine_mixed(arch)

    def _mine_mixed(self, arch: str) -> None:
        """``mixed``: ``collect`` of the other corruptions' collected failures, stratified by class x
        type (the repair is not told the types); its De is every type's cross-failure subsample, so
        the cross-failure matrix scores the one repair on each type's held-out failures, beside the
        per-type repairs. ``acc`` is the mean over the types, per severity."""
        from ..mining import split_collected

        path = self.mine_dir(arch) / self._mine_name(MIXED)
        if path.is_file():
            return
        types = [c for c in arch_corruptions(self.prof, arch) if c != MIXED]
        parts = [self.failures(arch, c) for c in types]
        kind = np.concatenate([np.full(len(f["dc_y"]), i) for i, f in enumerate(parts)])
        y = np.concatenate([f["dc_y"] for f in parts])
        pick, _ = split_collected(y * len(types) + kind, self.prof["collect"], self.test.num_classes * len(types),
                                  seed=0)
        de = {k: np.concatenate([f[k][f["sub"]] for f in parts]) for k in ("de_x", "de_y", "de_severity")}
        n = len(de["de_y"])
        sub = np.sort(np.random.default_rng(3).choice(n, min(self.prof["cross_subsample"], n), replace=False))
        _save_npz(path, dc_x=np.concatenate([f["dc_x"] for f in parts])[pick], dc_y=y[pick], dc_type=kind[pick],
                  **de, sub=sub, failures=np.int64(sum(int(f["failures"]) for f in parts)),
                  acc=np.mean([f["acc"] for f in parts], axis=0), types=np.array(types))

    def _mine_name(self, c: str) -> str:
        return f"{c}.npz" if self.split_by() == "failure" else f"{c}.by-image.npz"

    def failures(self, arch: str, c: str) -> dict:
        with np.load(self.mine_dir(arch) / self._mine_name(c)) as f:
            return {k: f[k] for k in f.files}

    def shifted(self, arch: str, c: str, f: dict) -> ImageSet:
        """Every image of corruption ``c`` whose photo is not a source of Dc (all severities)."""
        stack = np.load(self.mine_dir(arch) / f"{c}.stack.npy", mmap_mode="r")
        y = np.tile(self.test.y, len(stack) // len(self.test.y))
        return ImageSet(np.ascontiguousarray(stack[f["unseen"]]), y[f["unseen"]], self.test.classes)

    def elsewhere(self, arch: str) -> dict:
        """The profile's ``elsewhere`` fixed test photos (seeded) under every standard corruption at
        every severity, with the original's answers: accuracy on the corruptions a repair did not
        target. Rendered and predicted once per architecture (OUT/mine/<arch>/elsewhere.npz)."""
        from ..corruptions import CORRUPTIONS, corrupt

        path = self.mine_dir(arch) / "elsewhere.npz"
        if not path.is_file():
            model, _, _ = self.model(arch)
            photos = np.sort(np.random.default_rng(4).choice(len(self.test), self.prof["elsewhere"], replace=False))
            names = list(CORRUPTIONS)  # the 15 standard ones
            x = np.stack([np.concatenate([corrupt(self.test.x[photos], c, s, seed=0) for s in range(1, 6)])
                          for c in names])
            pred = np.stack([predict(model, xi, device=self.device) for xi in x])
            _save_npz(path, x=x, pred=pred, photos=photos, names=np.array(names))
        with np.load(path) as f:
            return {k: f[k] for k in f.files}

    # -- real photos (a ``real`` profile) ---------------------------------------------------
    def real_set(self) -> ImageSet:
        cfg = self.prof["real"]
        base = Path(cfg["data"])
        if not base.is_absolute() and not base.exists():
            base = REPO_ROOT / base
        real = load_dataset(base, cfg.get("split", "test"))
        return ImageSet(real.x, real.y, self.train.classes)

    def real_split(self, arch: str, seed: int) -> dict:
        """Seeded: ``collect`` of the original's failures on the real photos (stratified by class)
        are Dc; the other photos are split into unlabelled field and evaluation halves."""
        from ..mining import split_real

        real = self.real_set()
        with np.load(self.mine_dir(arch) / "real.npz") as f:
            pred = f["pred"]
        r = split_real(pred, real.y, self.prof["collect"], real.num_classes, seed,
                       self.prof["real"].get("field_fraction", 0.5))
        return {**r, "real": real, "failures": len(r["failures"]), "pred": pred}


def list_cells(prof: dict) -> list[tuple[str, str, str, int]]:
    """Every cell, seed by seed and, within a seed, method by method in the profile's order (a run
    stopped early has whole seeds, and the first methods on every corruption)."""
    cells = []
    for seed in prof["seeds"]:
        for arch in prof["archs"]:
            for m in prof["methods"] + prof["ablation"]:
                if m != "original" or seed == prof["seeds"][0]:
                    cells += [(arch, c, m, 0 if m == "original" else seed) for c in arch_corruptions(prof, arch)]
    return cells


def cell_file(ctx: Context, cell: tuple[str, str, str, int]) -> Path:
    """Where the cell's result is: its file, or the one written under the method's former name (same
    hash; ``profile.RENAMED``) when only that exists."""
    arch, c, m, s = cell
    _, _, model_id = ctx.model(arch)
    h = cell_hash(ctx.prof, arch, c, m, s, model_id)
    path = ctx.out / "cells" / f"{arch}__{c}__{m}__s{s}__{h}.json"
    for old in (o for o, new in RENAMED.items() if new == m and not path.is_file()):
        if (ctx.out / "cells" / f"{arch}__{c}__{old}__s{s}__{h}.json").is_file():
            return ctx.out / "cells" / f"{arch}__{c}__{old}__s{s}__{h}.json"
    return path


def calibration_photos(ctx: Context, f: dict, seed: int) -> np.ndarray:
    """A profile's ``calibration``: that many clean test photos, stratified by class and drawn per
    seed among those that are not sources of Dc, on which repair certifies its break limit (its
    ``val``); every evaluation of the cell leaves them out."""
    from ..train import holdout_split

    free = np.setdiff1d(np.arange(len(ctx.test)), f["dc_sources"])
    share = min(ctx.prof["calibration"] / len(free), 0.49)
    return free[holdout_split(ctx.test.y[free], share, 1000 + seed)]


def _repair_cell(ctx: Context, model, m: str, c: str, seed: int, dc: ImageSet, field: np.ndarray | None = None,
                 val: ImageSet | None = None, field_eval: ImageSet | None = None):
    from ..repair import RepairConfig, repair

    if m == "original":
        return model, {"seconds": 0.0, "history": []}
    opts = recipe_options(m)
    opts.pop("field", None)
    opts.pop("field_check", None)
    if opts.get("method") == "oracle":
        opts["oracle_corruption"] = c
    # every method builds on DeepRepair as the paper states it (no protection), so a cell means what its
    # hash says whatever the default is
    cfg = RepairConfig.preset("deeprepair-paper", **{**ctx.prof["repair"], **opts, "seed": seed})
    torch.manual_seed(seed)
    return repair(model, ctx.train, dc, cfg, device=ctx.device, field=field, val=val, field_eval=field_eval,
                  keep_runs=bool(ctx.prof.get("variants")) and cfg.interpolate)


def _finish(ctx: Context, path: Path, cell, model_id: str, cmp: dict, report: dict, t0: float, **extra) -> dict:
    arch, c, m, seed = cell
    cmp["broken"] = len(cmp.pop("broken_indices", []))
    result = {"arch": arch, "corruption": c, "method": m, "seed": seed, "model": model_id,
              "hash": path.stem.rsplit("__", 1)[-1], "metrics": cmp, **extra,
              "repair": {k: report.get(k) for k in ("seconds", "best_epoch", "img_per_s", "aug_share", "clusters",
                                                    "tuned_parameters", "validation_before", "validation_after",
                                                    "validation_final")},
              "interpolation_alpha": (report.get("interpolation") or {}).get("alpha"),
              **({"protection": {k: report.get(k) for k in ("interpolation", "averaging", "calibration",
                                                               "kept_original")}}
                 if report.get("calibration") else {}),
              "history": [{k: h.get(k) for k in ("epoch", "loss", "val_train_acc", "val_failures_acc", "val_score")}
                          for h in report.get("history", [])],
              "wall": time.perf_counter() - t0, "machine": {k: MACHINE[k] for k in ("cpu", "device", "precision_auto")}}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(result, indent=1).encode())
    return result


def _elsewhere(ctx: Context, arch: str, c: str, repaired, dc_sources) -> dict:
    """Accuracy before/after on the other corruptions (not ``c``), on the fixed photos that are
    not sources of Dc; ``before``/``after`` are the means over those corruptions."""
    e = ctx.elsewhere(arch)
    keep = np.tile(~np.isin(e["photos"], dc_sources if dc_sources is not None else []), 5)
    y = np.tile(ctx.test.y[e["photos"]], 5)[keep]
    per = {}
    for name, x, pred in zip(e["names"].tolist(), e["x"], e["pred"]):
        if name != c:
            after = predict(repaired, x[keep], device=ctx.device)
            per[name] = {"before": float((pred[keep] == y).mean()), "after": float((after == y).mean())}
    return {"before": float(np.mean([v["before"] for v in per.values()])),
            "after": float(np.mean([v["after"] for v in per.values()])), "images": int(keep.sum()), "per": per}


def _frontier(ctx: Context, model, repaired, m: str, sets: dict) -> dict:
    """The trade-off along the straight line from the original's weights (alpha 0) to the repaired
    network's (alpha 1): for each of the profile's ``frontier`` weights, the interpolated network's
    scores on the cell's own sets (``sets``: compare()'s), as ``{"frontier": rows}``. Reported, never
    used to choose anything; {} for a profile without ``frontier`` and for methods that interpolate
    (or do not repair)."""
    from ..repair import compare
    from ..repair.core import interpolate_weights

    if not ctx.prof.get("frontier") or m == "original" or recipe_options(m).get("interpolate"):
        return {}
    rows, cache = [], {}
    for a in ctx.prof["frontier"]:
        cmp = compare(model, interpolate_weights(model, repaired, float(a)), ctx.test, cache=cache,
                      device=ctx.device, **sets)
        rows.append(frontier_row(a, cmp))
    return {"frontier": rows}


def run_real_cell(ctx: Context, cell: tuple[str, str, str, int]) -> dict:
    """A cell of a ``real`` profile: repair from ``collect`` real failures (plus, for a ``field``
    method, the unlabelled field half); score on the evaluation half, which no method ever sees,
    and on every photo outside Dc (for methods that saw no field photos)."""
    from ..repair import compare

    arch, c, m, seed = cell
    path = cell_file(ctx, cell)
    model, _, model_id = ctx.model(arch)
    r = ctx.real_split(arch, seed)
    real = r["real"]
    dc = real.subset(r["dc"])
    uses_field = recipe_options(m).get("field", False)
    checks = recipe_options(m).get("field_check", False)  # the field half, labelled: the field check
    val = cal = None
    if ctx.prof.get("calibration"):  # CIFAR-10 test photos certify the break limit; the clean scores leave them out
        cal = calibration_photos(ctx, {"dc_sources": np.zeros(0, np.int64)}, seed)
        val = ctx.test.subset(cal)
    t0 = time.perf_counter()
    repaired, report = _repair_cell(ctx, model, m, c, seed, dc, real.x[r["field"]] if uses_field else None, val=val,
                                    field_eval=real.subset(r["field"]) if checks else None)
    report.pop("_variant", None)
    ev = real.subset(r["eval"])
    ev_wrong = ev.subset(np.flatnonzero(r["pred"][r["eval"]] != ev.y))
    sets = dict(failures=dc, heldout=ev_wrong if len(ev_wrong) else None, shifted=ev, dc_sources=cal)
    cmp = compare(model, repaired, ctx.test, device=ctx.device, **sets)
    if not uses_field:
        cmp["shifted_all_unseen"] = compare(model, repaired, ev, shifted=real.subset(r["unseen"]),
                                            device=ctx.device)["shifted"]
    return _finish(ctx, path, cell, model_id, cmp, report, t0, cross={}, failures=int(r["failures"]),
                   collected=len(r["dc"]), field_photos=len(r["field"]) if (uses_field or checks) else 0,
                   **({"calibration_images": len(val), "field_check": report.get("field_check")} if val is not None
                      else {}),
                   **_frontier(ctx, model, repaired, m, sets))


def run_cell(ctx: Context, cell: tuple[str, str, str, int]) -> dict:
    """Repair (or not, for ``original``) and evaluate one cell; write and return its result."""
    from ..repair import compare

    arch, c, m, seed = cell
    path = cell_file(ctx, cell)
    if path.is_file():
        return json.loads(path.read_text())
    if ctx.prof.get("real"):
        return run_real_cell(ctx, cell)
    model, meta, model_id = ctx.model(arch)
    f = ctx.failures(arch, c)
    classes = ctx.train.classes
    dc = ImageSet(f["dc_x"], f["dc_y"], classes)
    if ctx.prof.get("dc_size", 0) and ctx.prof["dc_size"] < len(dc):  # the |Dc| curve: a stratified part, per seed
        from ..mining import split_collected

        dc = dc.subset(split_collected(dc.y, ctx.prof["dc_size"], dc.num_classes, seed=100 + seed)[0])
    val, unseen_by, cal, f_all = None, f.get("dc_sources"), None, f
    if ctx.prof.get("calibration"):
        if "de_photo" not in f:
            raise DeepRepairError(f"{ctx.mine_dir(arch)}: mined before calibration existed; mine again into a new --out")
        cal = calibration_photos(ctx, f, seed)
        val = ctx.test.subset(cal)
        unseen_by = np.union1d(f["dc_sources"], cal)  # evaluated nowhere: clean, shifted, De, elsewhere
        keep = ~np.isin(f["de_photo"], cal)
        f = {**f, "de_x": f["de_x"][keep], "de_y": f["de_y"][keep], "de_severity": f["de_severity"][keep],
             "unseen": f["unseen"][~np.isin(f["unseen"] % len(ctx.test), cal)]}
    de = ImageSet(f["de_x"], f["de_y"], classes) if len(f["de_y"]) else None
    t0 = time.perf_counter()
    repaired, report = _repair_cell(ctx, model, m, c, seed, dc, val=val)
    variant = report.pop("_variant", None)
    groups = {f"severity {s}": f["de_severity"] == s for s in range(1, 6)} if de is not None else None
    shifted = ctx.shifted(arch, c, f) if ctx.prof.get("shifted") else None
    sets = dict(failures=dc, heldout=de, shifted=shifted, dc_sources=unseen_by)
    cmp = compare(model, repaired, ctx.test, heldout_groups=groups, device=ctx.device, **sets)
    if ctx.prof.get("elsewhere"):
        cmp["elsewhere"] = _elsewhere(ctx, arch, c, repaired, unseen_by)
    cross = {}
    for j in arch_corruptions(ctx.prof, arch):  # Fig. 4: this repair on every corruption's held-out failures
        g = ctx.failures(arch, j) if j != c else f_all
        sub = g["sub"] if cal is None else g["sub"][~np.isin(g["de_photo"][g["sub"]], cal)]
        if len(sub):
            x, y = g["de_x"][sub], g["de_y"][sub]
            cross[j] = float((predict(repaired, x, device=ctx.device) == y).mean())
    extra = {"calibration_images": len(val)} if val is not None else {}
    if variant is not None:
        extra["variants"] = _variants(ctx, model, variant, dc, de, unseen_by)
    return _finish(ctx, path, cell, model_id, cmp, report, t0, cross=cross, failures=int(f["failures"]),
                   collected=len(dc), original_acc_by_severity=f["acc"].tolist(), split_by=ctx.split_by(),
                   **_frontier(ctx, model, repaired, m, sets), **extra)


def _variants(ctx: Context, model, variant, dc: ImageSet, de: ImageSet | None, unseen_by) -> list[dict]:
    """A profile's ``variants`` ({"average": [k, ...], "max_break": [limit, ...]}): the same
    protection over the first k of the cell's runs at each limit, scored on De and the clean test
    photos the repair never saw (no new training: the runs are the cell's own)."""
    from ..repair import compare

    rows, cache = [], {}
    for path in ctx.prof["variants"].get("mix_path", [None]):  # None: the recipe's own (rows say no path)
        for k in ctx.prof["variants"]["average"]:
            for limit in ctx.prof["variants"]["max_break"]:
                net, info = variant(k, limit, path)
                cmp = compare(model, net, ctx.test, heldout=de, dc_sources=unseen_by, cache=cache, device=ctx.device)
                rows.append({"average": k, "max_break": limit, **({"mix_path": path} if path else {}), "alpha": info["alpha"],
                             "averaging": info["averaging"], "validation_final": info.get("validation_final"),
                             "de_after": cmp.get("de_after"), "clean_unseen": cmp.get("clean_unseen")})
    return rows


def _record_models(ctx: Context, out: Path) -> None:
    """OUT/models.json: each model's provenance from its checkpoint (how it was trained, its clean
    accuracy and training time), for the report's model table (RQ1's pre-training record)."""
    rec = {}
    for arch in ctx.prof["archs"]:
        _, meta, model_id = ctx.model(arch)
        epochs = [h["seconds"] for h in meta.get("history", []) if isinstance(h, dict) and "seconds" in h]
        rec[arch] = {"model": model_id, "parameters": meta.get("parameters"),
                     "epochs": (meta.get("train_config") or {}).get("epochs", len(epochs) or None),
                     "clean_accuracy": meta.get("clean_accuracy"), "train_seconds": meta.get("train_seconds"),
                     "median_epoch_seconds": float(np.median(epochs)) if epochs else None,
                     "precision": meta.get("precision"), "train_command": meta.get("train_command")}
    atomic_write_bytes(out / "models.json", json.dumps({"machine": MACHINE, "models": rec}, indent=1).encode())


def run_cell_task(cell, prof: dict, data_dir: str, out: str) -> tuple[str, str, str, int]:
    """One cell on a remote worker (``--executor ray``): rebuild the context from OUT and run it."""
    ctx = Context(prof, data_dir, Path(out), pick_device(None))
    r = run_cell(ctx, tuple(cell))
    return r["arch"], r["corruption"], r["method"], r["seed"]


def run(prof: dict, data_dir: str, out: str | Path, *, executor: str = "local", address: str | None = None,
        device: str | None = None, log: Callable[[str], None] = print,
        progress: Callable[[int], None] | None = None, record: dict | None = None) -> list[dict]:
    """Prepare (models, failures) and run every cell of ``prof``; returns all cell results.
    ``record`` (default ``prof``) is the profile written to OUT/profile.json for the report: the
    unfiltered one, so that a run limited by --archs/--corruptions/--methods adds cells to the
    folder's report instead of shrinking it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "profile.json", json.dumps({**(record or prof), "machine": MACHINE}, indent=2).encode())
    ctx = Context(prof, str(data_dir), out, pick_device(device))
    for arch in prof["archs"]:
        ctx.model(arch, log)
        ctx.mine(arch, log)
    _record_models(ctx, out)
    cells = list_cells(prof)
    todo = [c for c in cells if not cell_file(ctx, c).is_file()]
    log(f"{len(cells)} cells, {len(cells) - len(todo)} already done")
    if executor == "ray":
        from .ray_executor import run_ray

        run_ray(todo, run_cell_task, prof, str(data_dir), out, address, log, progress)
    elif executor == "local":
        for cell in todo:
            t0 = time.perf_counter()
            r = run_cell(ctx, cell)
            log(f"{'/'.join(map(str, cell))}: De {r['metrics'].get('de_after', float('nan')):.4f} "
                f"clean {r['metrics']['clean_after']:.4f} ({time.perf_counter() - t0:.0f} s)")
            if progress:
                progress(1)
    else:
        raise DeepRepairError(f"executor must be local or ray, got {executor!r}")
    from .report import read_cell  # checked: a garbled cell is a one-line error, not a traceback

    return [read_cell(cell_file(ctx, c)) for c in cells if cell_file(ctx, c).is_file()]
