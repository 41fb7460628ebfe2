#!/usr/bin/env python
"""How the routed repair combines the two models, and which constraint sets its threshold.

Each repair is trained once (the budget of `regressions.py --part control`); its router is fitted
as `--gate` does (deep features, threshold checked on the 1,000 validation + 5,000 calibration
training images). The per-image logits of both models and the router's score are cached for
the validation sets, the clean test set and De, so that every rule below is evaluated on the
same networks:

- combination on routed inputs: `switch` (the repaired model answers; the current `--gate`),
  `average` (the mean of the two models' softmax), `product` (their geometric mean),
  `confident` (the repaired model answers only where it is more confident than the original);
- threshold constraint, checked on validation data only: `break` (the Wilson 95% upper bound
  of the validation break rate <= 1%, the current default) or `break+clean` (that, and
  validation clean accuracy >= the original's).

The threshold is always chosen on Dt/Dc validation data; the test set and De are only measured.

    python benchmarks/gate_rules.py [--methods deeprepair,finetune,augmix] [--seeds 0,1,2] [--lr 0.001]
        [--train-subset 40000 --epochs 1 --dc-repeat 4] [--distill 1] [--tag augmix]
    (results/gate_rules.md; per-image arrays cached under runs/bench_regressions/<model>/gate_rules)
"""

from __future__ import annotations

import argparse
import io
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import DEFAULT_DATA, DEFAULT_OUT, REPO_ROOT, provenance, provenance_markdown, write_results

FIVE = ["gaussian_noise", "motion_blur", "fog", "contrast", "jpeg_compression"]
SETS = ("cal", "valf", "test", "de")
MAX_BREAK = 0.01


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def routed_predictions(o: np.ndarray, r: np.ndarray, combine: str) -> np.ndarray:
    """What a routed input is answered with, under ``combine``, from both models' logits."""
    if combine == "switch":
        return r.argmax(1)
    po, pr = softmax(o), softmax(r)
    if combine == "average":
        return (po + pr).argmax(1)
    if combine == "confident":
        return np.where(pr.max(1) > po.max(1), pr.argmax(1), po.argmax(1))
    if combine == "product":  # the geometric mean: log p_o + log p_r
        return (log_softmax(o) + log_softmax(r)).argmax(1)
    raise ValueError(combine)


def heldout_split(n_test: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed halves of the test set: (A, the stand-in for a user's held-out clean validation
    images; B, where every rule is measured)."""
    order = np.random.default_rng(12345).permutation(n_test)
    return np.sort(order[: n_test // 2]), np.sort(order[n_test // 2:])


def pick(cell: dict, name: str, mask: np.ndarray | None = None) -> tuple:
    """(original logits, repaired logits, router scores, labels) of one cached set, masked."""
    arrs = tuple(cell[f"{name}_{k}"] for k in "orsy")
    return arrs if mask is None else tuple(a[mask] for a in arrs)


def rule_threshold(cell: dict, combine: str, constraint: str, a_mask: np.ndarray, keep: float | None = None) -> float:
    """The threshold ``choose_threshold`` (the one ``--gate`` uses) picks under ``constraint``:
    `break` on the held-back training images; `break+clean (training)` also asks clean accuracy
    >= the original's on them; `break+clean (held-out)` adds test half A as the held-out clean
    images (``--gate-holdout``); ``keep``: as ``--gate-keep``."""
    from deeprepair.repair.gate import choose_threshold

    co, cr, cs, cy = pick(cell, "cal")
    heldout = None
    if constraint == "break+clean (training)":
        heldout = np.ones(len(cy), bool)
    elif constraint == "break+clean (held-out)":
        ao, ar, as_, ay = pick(cell, "test", a_mask)
        co, cr, cs, cy = (np.concatenate(v) for v in ((co, ao), (cr, ar), (cs, as_), (cy, ay)))
        heldout = np.concatenate([np.zeros(len(cy) - len(ay), bool), np.ones(len(ay), bool)])
    fo, fr, fs, fy = pick(cell, "valf")
    return choose_threshold(cs, co.argmax(1) == cy, routed_predictions(co, cr, combine) == cy,
                            fs, fo.argmax(1) == fy, routed_predictions(fo, fr, combine) == fy,
                            MAX_BREAK, "wilson", heldout, keep)["threshold"]


def test_chosen_threshold(cell: dict, b_mask: np.ndarray, de_mask: np.ndarray) -> float:
    """NOT a method: the threshold with the most De right among those whose break rate on test
    half B is <= 1% and whose clean accuracy on B is >= the original's (chosen on what it is
    measured on): an upper bound on what any way of choosing this router's threshold reaches."""
    from deeprepair.repair.gate import choose_threshold

    to, tr, ts_, ty = pick(cell, "test", b_mask)
    do, dr, ds, dy = pick(cell, "de", de_mask)
    return choose_threshold(ts_, to.argmax(1) == ty, tr.argmax(1) == ty, ds, do.argmax(1) == dy, dr.argmax(1) == dy,
                            MAX_BREAK, "point", np.ones(len(ty), bool))["threshold"]


def evaluate(cell: dict, combine: str, t: float, b_mask: np.ndarray, de_mask: np.ndarray) -> dict:
    """Figures of one rule on test half B and on the De images made from it."""
    out = {}
    for name, mask in (("test", b_mask), ("de", de_mask)):
        o, r, s, y = pick(cell, name, mask)
        routed = s > t
        pred = np.where(routed, routed_predictions(o, r, combine), o.argmax(1))
        out[name] = (pred == y, o.argmax(1) == y, routed)
    (ra, rb, routed), (da, _, droute) = out["test"], out["de"]
    return {"de": float(da.mean()), "clean": float(ra.mean()), "clean_before": float(rb.mean()),
            "break": float((rb & ~ra).sum() / rb.sum()), "routed_clean": float(routed.mean()),
            "routed_de": float(droute.mean()), "threshold": t}


def fixes_and_breaks(cell: dict, t: float, a_mask: np.ndarray) -> dict:
    """Why training images cannot check clean accuracy: the original's accuracy on the held-back
    training images and on test half A, and the clean images routing at ``t`` fixes and breaks
    on each (shares of all images)."""
    out = {}
    for key, (o, r, s, y) in (("train", pick(cell, "cal")), ("heldout", pick(cell, "test", a_mask))):
        ok, rk, routed = o.argmax(1) == y, r.argmax(1) == y, s > t
        out.update({f"{key}_original_acc": float(ok.mean()), f"{key}_fixed": float((routed & ~ok & rk).mean()),
                    f"{key}_broken": float((routed & ok & ~rk).mean())})
    return out


RULES = [  # (label, combine, constraint); constraint None: route everything
    ("switch / break (`--gate` today)", "switch", "break"),
    ("average / break", "average", "break"),
    ("confident / break", "confident", "break"),
    ("product / break", "product", "break"),
    ("switch / break+clean (training)", "switch", "break+clean (training)"),
    ("switch / break+clean (held-out, `--gate-holdout`)", "switch", "break+clean (held-out)"),
    ("average, every input (no router)", "average", None),
]


def _atomic_savez(path: Path, arrays: dict) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(buf.getvalue())
    os.replace(tmp, path)


def build_cell(model, train, test, dc, de, method: str, seed: int, device, **budget) -> dict:
    """Train one repair, fit its router as ``--gate`` does, and return the per-image arrays.
    ``budget``: RepairConfig fields that replace the default budget (2 epochs over 5,000 images, lr 0.01)."""
    import dataclasses

    import torch

    from deeprepair.data import ImageSet
    from deeprepair.engine import autocast, batches, predict_logits, to_float
    from deeprepair.repair import RepairConfig, repair
    from deeprepair.repair.core import make_split
    from deeprepair.repair.gate import fit_gate

    cfg = RepairConfig(**{"method": method, "seed": seed, "epochs": 2, "train_subset": 5000, **budget})
    t0 = time.perf_counter()
    rep_model, rep = repair(model, train, dc, cfg, device=device)
    split = make_split(train, dc, dataclasses.replace(cfg, gate_calibration=5000, gate_bound="wilson"))
    if split.calibration is None or len(split.calibration) < 5000:
        raise SystemExit(f"--train-subset {cfg.train_subset} leaves fewer than 5,000 training images to check the "
                         "threshold on: lower it")
    gated, info = fit_gate(model, rep_model, split, cfg.max_break, device, rep["precision"], bound="wilson")
    gated.eval()
    cal = ImageSet(np.concatenate([split.val_train.x, split.calibration.x]),
                   np.concatenate([split.val_train.y, split.calibration.y]), train.classes)
    valf = split.val_failures if split.val_failures is not None else split.dc_fit
    arrays = {"fit_gate_threshold": np.float64(info["threshold"]), "wall": np.float64(0)}
    for name, ds in zip(SETS, (cal, valf, test, de)):
        xt = torch.from_numpy(np.ascontiguousarray(ds.x))
        os_, ss = [], []
        with torch.no_grad():
            for b in batches(len(xt), 500):
                with autocast(device, rep["precision"]):
                    o, s = gated.scores(to_float(xt[b].to(device)))
                os_.append(o.float().cpu())
                ss.append(s.float().cpu())
        arrays[f"{name}_o"] = torch.cat(os_).numpy().astype(np.float32)
        arrays[f"{name}_s"] = torch.cat(ss).numpy().astype(np.float32)
        arrays[f"{name}_r"] = predict_logits(rep_model, ds.x, device=device, precision=rep["precision"]).numpy()
        arrays[f"{name}_y"] = ds.y.astype(np.int64)
    arrays["wall"] = np.float64(time.perf_counter() - t0)
    return arrays


def parse_cell_arguments(doc: str) -> argparse.Namespace:
    """The command line shared by the gate benchmarks (one cell per method, corruption and seed)."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--model", default=str(REPO_ROOT / "checkpoints" / "resnet-20.safetensors"))
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--methods", default="deeprepair,finetune,augmix")
    ap.add_argument("--corruptions", default=",".join(FIVE))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--cache", default=str(REPO_ROOT / "runs" / "bench_regressions"))
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--lr", type=float, help="fine-tuning learning rate of the repairs (default: RepairConfig's); "
                    "another value caches and reports under its own name")
    ap.add_argument("--train-subset", type=int, default=5000, help="training images fine-tuned on (default 5000); "
                    "another value caches and reports under its own name, as do --epochs, --dc-repeat and --distill")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--dc-repeat", type=int, default=1, help="how many times Dc appears in the fine-tuning set")
    ap.add_argument("--distill", type=float, default=0.0, help="weight of the distillation term (regression control)")
    ap.add_argument("--tag", default="", help="appended to the results file names (not the cache), to keep a run on "
                    "other --methods or --seeds from overwriting the results of the same budget, e.g. --tag augmix")
    args = ap.parse_args()
    if min(args.train_subset, args.epochs, args.dc_repeat) < 1 or args.distill < 0:
        ap.error("--train-subset, --epochs and --dc-repeat must be >= 1 and --distill >= 0")
    if args.tag and not re.fullmatch(r"[A-Za-z0-9.-]+", args.tag):
        ap.error(f"--tag {args.tag!r}: use letters, digits, '.' and '-' only (it becomes part of a file name)")
    return args


def result_stem(stem: str, model_name: str, tag: str = "") -> str:
    """The results file name: ``stem`` for the CPU profile's resnet-20, ``stem_<model>`` otherwise,
    then ``_<tag>`` when ``--tag`` is given."""
    return (stem if model_name == "resnet-20" else f"{stem}_{model_name}") + (f"_{tag}" if tag else "")


DEFAULT_BUDGET = {"train_subset": 5000, "epochs": 2, "dc_repeat": 1, "distill": 0.0}


def repair_budget(args: argparse.Namespace) -> dict:
    """The RepairConfig fields the command line sets (the learning rate only when given)."""
    return {**({} if args.lr is None else {"lr": args.lr}), **{k: getattr(args, k) for k in DEFAULT_BUDGET}}


def variant_suffix(args: argparse.Namespace) -> str:
    """What names repairs with another budget than the default (``--lr``, ``--train-subset``, ``--epochs``,
    ``--dc-repeat``, ``--distill``): their cache folder ``gate_rules<suffix>`` and the results of both
    gate scripts; empty for the default budget."""
    tags = {"lr": "lr", "train_subset": "dt", "epochs": "e", "dc_repeat": "r", "distill": "kd"}
    b = repair_budget(args)
    return "".join(f"_{tags[k]}{b[k]:g}" for k in tags if k in b and b[k] != DEFAULT_BUDGET.get(k))


def describe_budget(args: argparse.Namespace) -> str:
    """The repair budget in words, for the results files."""
    from deeprepair.repair import RepairConfig

    b = {**DEFAULT_BUDGET, "lr": RepairConfig.lr, **repair_budget(args)}
    dc = "Dc" if b["dc_repeat"] == 1 else f"{b['dc_repeat']} x Dc"
    kd = f", distillation weight {b['distill']:g}" if b["distill"] else ""
    same = " (as `regressions.py --part control`)" if not variant_suffix(args) else ""
    return f"{b['epochs']} epoch{'s' * (b['epochs'] != 1)} over {b['train_subset']:,} training images + {dc}, lr {b['lr']:g}{kd}{same}"


def split_suffix(args: argparse.Namespace) -> str:
    """What names the router descriptors of ``gate_routers.py``: they depend on the split, which
    depends only on how many training images are fine-tuned on."""
    return "" if args.train_subset == DEFAULT_BUDGET["train_subset"] else f"_dt{args.train_subset}"


def cells_name(args: argparse.Namespace) -> str:
    """The cache folder of ``gate_rules.py``'s repairs (and the stem of its results)."""
    return "gate_rules" + variant_suffix(args)


def seed_mean(rows: list[dict], key: str) -> str:
    """``mean ± std`` (in %) over seeds of the per-seed mean of ``key`` over corruptions."""
    per = [np.mean([r[key] for r in rows if r["seed"] == sd]) * 100 for sd in sorted({r["seed"] for r in rows})]
    return f"{np.mean(per):.2f}" + (f" ± {np.std(per, ddof=1):.2f}" if len(per) > 1 else "")


def target_counts(rows: list[dict]) -> str:
    """Table cells: in how many (corruption, seed) cells break <= 1%, clean >= original, >= 90%
    of the gain kept, and all three."""
    b = [r["break"] <= MAX_BREAK for r in rows]
    cl = [r["clean"] >= r["clean_before"] for r in rows]
    k = [r["kept"] >= 0.9 for r in rows]
    n = len(rows)
    return f"{sum(b)}/{n} | {sum(cl)}/{n} | {sum(k)}/{n} | {sum(x and y and z for x, y, z in zip(b, cl, k))}/{n}"


def main() -> None:
    args = parse_cell_arguments(__doc__)
    prov = provenance()
    mname = Path(args.model).stem
    cache = Path(args.cache) / mname / cells_name(args)
    cache.mkdir(parents=True, exist_ok=True)
    methods, corruptions = args.methods.split(","), args.corruptions.split(",")
    seeds = [int(v) for v in args.seeds.split(",")]
    loaded: dict = {}

    def data():
        if not loaded:
            import torch

            from deeprepair.data import load_dataset
            from deeprepair.models.checkpoint import load_checkpoint
            loaded["device"] = torch.device("cpu")
            loaded["model"], _ = load_checkpoint(args.model, loaded["device"])
            loaded["train"], loaded["test"] = load_dataset(args.data, "train"), load_dataset(args.data, "test")
        return loaded

    rows = []
    for m in methods:
        for s in seeds:
            for c in corruptions:
                path = cache / f"{c}__{m}__s{s}.npz"
                if not path.is_file():
                    from deeprepair.data import load_failure_set
                    d = data()
                    mine = REPO_ROOT / "runs" / "mine" / mname
                    dc = load_failure_set(mine / f"{c}.dc.npz", d["train"].classes)
                    de = load_failure_set(mine / f"{c}.de.npz", d["train"].classes)
                    _atomic_savez(path, build_cell(d["model"], d["train"], d["test"], dc, de, m, s, d["device"],
                                                       **repair_budget(args)))
                cell = dict(np.load(path))
                _, b_idx = heldout_split(len(cell["test_y"]))
                b_mask = np.zeros(len(cell["test_y"]), bool)
                b_mask[b_idx] = True
                with np.load(REPO_ROOT / "runs" / "mine" / mname / f"{c}.de.npz") as f:
                    src, ysrc = f["index"] % len(b_mask), f["y"]  # the clean test image each De image was made from
                if len(src) != len(cell["de_y"]) or not np.array_equal(ysrc, cell["de_y"]):
                    raise SystemExit(f"{path} does not match the mined De of {c}: delete it to rebuild")
                de_mask = b_mask[src]
                none = evaluate(cell, "switch", -np.inf, b_mask, de_mask)
                base = {"method": m, "corruption": c, "seed": s}
                rows.append({**base, "rule": "none (the repaired model alone)", **none, "kept": 1.0,
                             "wall": float(cell["wall"])})
                for label, comb, con in RULES:
                    t = -np.inf if con is None else rule_threshold(cell, comb, con, ~b_mask)
                    r = evaluate(cell, comb, t, b_mask, de_mask)
                    if con == "break" and comb == "switch":
                        r.update(fixes_and_breaks(cell, t, ~b_mask))
                        # the same gate on the whole test set and De (as gate_calibration.py measures it)
                        every, de_every = np.ones_like(b_mask), np.ones_like(de_mask)
                        whole, whole_none = evaluate(cell, comb, t, every, de_every), evaluate(cell, comb, -np.inf, every, de_every)
                        r.update({f"full_{k}": whole[k] for k in ("de", "clean", "clean_before", "break")},
                                 full_kept=whole["de"] / whole_none["de"],
                                 **{f"full_alone_{k}": whole_none[k] for k in ("de", "clean", "break")})
                    rows.append({**base, "rule": label, **r, "kept": r["de"] / none["de"]})
                r = evaluate(cell, "switch", test_chosen_threshold(cell, b_mask, de_mask), b_mask, de_mask)
                rows.append({**base, "rule": "switch, threshold chosen on B and De (a bound, not a method)", **r,
                             "kept": r["de"] / none["de"]})
                print(m, c, s, {r["rule"][:24]: (round(r["de"] * 100, 2), round(r["clean"] * 100, 2),
                                                 round(r["break"] * 100, 2)) for r in rows[-len(RULES) - 2:]}, flush=True)

    rules = list(dict.fromkeys(r["rule"] for r in rows))
    lines = [f"# Routed repair: how to combine the two models, and what sets the threshold ({mname})\n",
             provenance_markdown(prov),
             f"- budget per repair: {describe_budget(args)}; "
             f"corruptions: {args.corruptions}; router: `--gate` (deep features); every threshold is chosen by "
             "`deeprepair.repair.gate.choose_threshold` on the 1,000 + 5,000 held-back training images and the validation "
             "failures, never on what it is measured on\n"
             "- the clean test set is split once (seed 12345) into halves: A (5,000) stands in for a user's held-out clean "
             "validation images (`--gate-holdout`) and is read only by that rule; every figure is measured on B (the other "
             "5,000) and on the De images made from B's images\n"
             "- routed inputs are answered by: `switch` the repaired model (`--gate`), `average` the mean of the two "
             "softmax outputs, `product` their geometric mean, `confident` the more confident of the two; constraint: `break` = Wilson 95% upper bound "
             "of the validation break rate <= 1%; `break+clean (training)` = and clean accuracy >= the original's on the "
             "held-back training images; `break+clean (held-out)` = and >= the original's on A\n"
             "- test columns: mean over corruptions, ± = std over seeds; counts are per corruption and seed; "
             "`all three` = break <= 1%, clean >= the original's (on B) and >= 90% of the gain kept\n"]
    for m in methods:
        lines += [f"\n## {m}\n",
                  "| rule | De (%) | clean (%) | break (%) | gain kept (%) | clean routed (%) | break <= 1% | "
                  "clean >= original | kept >= 90% | all three |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        base_rows = [r for r in rows if r["method"] == m]
        walls = [r["wall"] for r in base_rows if "wall" in r]
        lines.insert(len(lines) - 2, f"Mean time per cell (repair, router fit and evaluation): {np.mean(walls):.0f} s.\n")
        lines.insert(len(lines) - 2, f"The original model's clean accuracy on B: {np.mean([r['clean_before'] for r in base_rows]) * 100:.2f}%.\n")
        for rule in rules:
            rs = [r for r in rows if r["method"] == m and r["rule"] == rule]
            if not rs:
                continue
            ms = lambda k, rs=rs: seed_mean(rs, k)  # noqa: E731
            lines.append(f"| {rule} | {ms('de')} | {ms('clean')} | {ms('break')} | {ms('kept')} | {ms('routed_clean')} | "
                         f"{target_counts(rs)} |")
        fb = [r for r in rows if r["method"] == m and "train_fixed" in r]
        if fb:
            mean = lambda k: np.mean([r[k] for r in fb]) * 100  # noqa: E731
            lines.append(f"\nAt the `--gate` threshold, the original model is right on {mean('train_original_acc'):.2f}% "
                         f"of the held-back training images (it was trained on them) and on {mean('heldout_original_acc'):.2f}% "
                         f"of test half A. Routing fixes {mean('train_fixed'):.2f}% and breaks {mean('train_broken'):.2f}% "
                         f"of the training images, and fixes {mean('heldout_fixed'):.2f}% and breaks "
                         f"{mean('heldout_broken'):.2f}% of A (means over corruptions and seeds): training images "
                         "measure the break rate but not the fixes.")
            msf = lambda k, fb=fb: seed_mean(fb, k)  # noqa: E731
            lines.append(f"\nThe repaired model alone on the whole test set and all of De: De {msf('full_alone_de')}%, clean "
                         f"{msf('full_alone_clean')}%, break {msf('full_alone_break')}%.")
            lines.append(f"\nThe `--gate` row on the whole test set and all of De (as `gate_calibration.py` measures it): De "
                         f"{msf('full_de')}%, clean {msf('full_clean')}% (original {np.mean([r['full_clean_before'] for r in fb]) * 100:.2f}%), "
                         f"break {msf('full_break')}%, gain kept {msf('full_kept')}%; break <= 1% in "
                         f"{sum(r['full_break'] <= MAX_BREAK for r in fb)}/{len(fb)}, clean >= original in "
                         f"{sum(r['full_clean'] >= r['full_clean_before'] for r in fb)}/{len(fb)}, kept >= 90% in "
                         f"{sum(r['full_kept'] >= 0.9 for r in fb)}/{len(fb)}, all three in "
                         f"{sum(r['full_break'] <= MAX_BREAK and r['full_clean'] >= r['full_clean_before'] and r['full_kept'] >= 0.9 for r in fb)}/{len(fb)}.")
    write_results(args.out, result_stem(cells_name(args), mname, args.tag), "\n".join(lines), {"provenance": prov, "rows": rows})


if __name__ == "__main__":
    main()
