"""Before/after comparison of a repair: accuracy, repair rate and break rate, with breakdowns."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from ..bounds import wilson
from ..data import ImageSet
from ..engine import predict
from ..tables import markdown_table


def _pred(model: nn.Module, x: np.ndarray, device: torch.device, precision: str) -> np.ndarray:
    return predict(model, x, device=device, precision=precision)


def _rates(right_b: np.ndarray, right_a: np.ndarray) -> dict:
    """Accuracy before/after, break rate (right before, wrong after; with a Wilson 95% CI) and
    fix rate (wrong before, right after) over one set of images."""
    broke = int((right_b & ~right_a).sum())
    return {"before": float(right_b.mean()) if len(right_b) else None,
            "after": float(right_a.mean()) if len(right_a) else None, "images": int(len(right_b)),
            "break_rate": float(broke / max(right_b.sum(), 1)), "break_rate_ci95": wilson(broke, int(right_b.sum())),
            "fix_rate": float((~right_b & right_a).sum() / max((~right_b).sum(), 1))}


def compare(before: nn.Module, after: nn.Module, test: ImageSet, *, failures: ImageSet | None = None,
            heldout: ImageSet | None = None, heldout_groups: dict[str, np.ndarray] | None = None,
            shifted: ImageSet | None = None, dc_sources: np.ndarray | None = None,
            device: torch.device, precision: str = "auto", cache: dict | None = None,
            predictions: dict | None = None) -> dict:
    """Accuracy before and after on the clean test set, the collected failures (Dc) and the
    held-out failures (De); repair rate = share of De now right that was wrong before; break
    rate = share of the clean test images right before and wrong after.

    What a user lives with, beside De: ``shifted`` is the whole shifted distribution the repair
    never saw (every held-out corrupted image or field photo, right or wrong before), reported
    as ``shifted`` (accuracy before/after, break and fix rate there); ``dc_sources`` are the test
    images Dc was rendered from, left out of ``clean_unseen`` (clean accuracy and break rate on
    the test images the repair never saw in any form).

    ``heldout_groups`` maps a group name (e.g. ``severity 3``) to a boolean mask over De for
    the per-group breakdown. ``cache`` (a dict kept by the caller) stores the original
    model's predictions so that comparing several repairs of one model predicts them once;
    ``predictions`` (a dict, optional) receives (before, after) predictions on ``test`` and on
    ``heldout`` (keys ``test``, ``de``), for pictures drawn without predicting again.
    """
    cache = {} if cache is None else cache

    def pred_before(name: str, x: np.ndarray) -> np.ndarray:
        key = (name, id(before), len(x))
        if key not in cache:
            cache[key] = _pred(before, x, device, precision)
        return cache[key]

    pb, pa = pred_before("test", test.x), _pred(after, test.x, device, precision)
    right_b, right_a = pb == test.y, pa == test.y
    if predictions is not None:
        predictions["test"] = (pb, pa)
    broke = np.flatnonzero(right_b & ~right_a)
    out = {
        "clean_before": float(right_b.mean()), "clean_after": float(right_a.mean()),
        "break_rate": float(len(broke) / max(right_b.sum(), 1)),
        "break_rate_ci95": wilson(len(broke), int(right_b.sum())),
        "broken_indices": broke.tolist(),
        "fix_rate_clean": float((~right_b & right_a).sum() / max((~right_b).sum(), 1)),
    }  # fmt: skip
    if dc_sources is not None:
        keep = np.ones(len(test), bool)
        keep[np.asarray(dc_sources, np.int64)] = False
        out["clean_unseen"] = _rates(right_b[keep], right_a[keep])
    if shifted is not None and len(shifted):
        sb = pred_before("shifted", shifted.x) == shifted.y
        out["shifted"] = _rates(sb, _pred(after, shifted.x, device, precision) == shifted.y)
    if failures is not None:
        out["dc_before"] = float((pred_before("dc", failures.x) == failures.y).mean())
        out["dc_after"] = float((_pred(after, failures.x, device, precision) == failures.y).mean())
    if heldout is not None:
        phb, pha = pred_before("de", heldout.x), _pred(after, heldout.x, device, precision)
        hb, ha = phb == heldout.y, pha == heldout.y
        if predictions is not None:
            predictions["de"] = (phb, pha)
        out["de_before"], out["de_after"] = float(hb.mean()), float(ha.mean())
        out["repair_rate"] = float((~hb & ha).sum() / max((~hb).sum(), 1))
        out["de_images"] = len(heldout)
        if heldout_groups:
            out["de_groups"] = {g: {"n": int(m.sum()), "before": float(hb[m].mean()) if m.any() else None,
                                    "after": float(ha[m].mean()) if m.any() else None}
                                for g, m in heldout_groups.items()}
    return out


def protection_lines(report: dict, cmp: dict) -> list[str]:
    """What protected the repair, in words: the limit it states and how sure it is, beside the
    break measured on the test images wherever they are known; averaging; the field check; and,
    first, why the original came back when it did."""
    pct = lambda v: "n/a" if v is None else f"{v * 100:.2f}"  # noqa: E731
    lines = []
    if report.get("kept_original"):
        lines.append(f"- **{report['kept_original'][0].upper()}{report['kept_original'][1:]}.**")
    avg = report.get("averaging")
    if avg and avg.get("averaged"):
        lines.append(f"- {avg['averaged']} of {avg['runs']} repairs (seeds {report['config']['seed']}, "
                     f"{report['config']['seed'] + 1}, ...) averaged weight by weight"
                     + (" (BatchNorm statistics recomputed on the fine-tuning images)" if avg.get("bn_recomputed") else ""))
    mix = report.get("interpolation")
    measured = cmp.get("clean_unseen", {}).get("break_rate", cmp.get("break_rate"))
    if mix and "grid" in mix:
        chosen = next(r for r in mix["grid"] if r["alpha"] == mix["alpha"])
        cal = report.get("calibration") or {}
        where = ("the validation images (never trained on)" if cal.get("source") == "val"
                 else "held-back training images (the model trained on them: optimistic)")
        if mix.get("bound", "point") == "point":
            lines.append(f"- weight mix alpha {mix['alpha']:g}: validation break {pct(chosen['val_break'])}% <= "
                         f"{mix['max_break'] * 100:.1f}% as a point estimate on {where} (no guarantee); "
                         f"measured on the test images: {pct(measured)}%")
        else:
            lines.append(f"- weight mix alpha {mix['alpha']:g}: break <= {pct(mix['break_bound'])}% (limit "
                         f"{mix['max_break'] * 100:.1f}%) with {mix['confidence']:.0%} confidence on images like "
                         f"{where}: {chosen['breaks']} of the {chosen['right_before']:,} it got right broke "
                         f"(exact one-sided Clopper-Pearson bound); measured on the test images: {pct(measured)}%")
    if cal_note := (report.get("calibration") or {}).get("note"):
        lines.append(f"- note: {cal_note}")
    fc = report.get("field_check")
    if fc:
        lines.append(f"- field check on {fc['images']:,} labelled field photos: accuracy {pct(fc['before'])}% -> "
                     f"{pct(fc['after'])}% ({fc['won']} won, {fc['lost']} lost); the change is >= "
                     f"{fc['change_lower_bound'] * 100:+.2f} points with {fc['confidence']:.0%} confidence: "
                     + ("passed" if fc["passed"] else "not level, so the original is kept"))
    return lines


def repair_report_markdown(name: str, cmp: dict, report: dict) -> str:
    """A short Markdown report of one repair."""
    pct = lambda v: "n/a" if v is None else f"{v * 100:.2f}"  # noqa: E731
    rows = [("clean test accuracy", cmp["clean_before"], cmp["clean_after"])]
    if "dc_before" in cmp:
        rows.append(("collected failures (Dc)", cmp["dc_before"], cmp["dc_after"]))
    if "de_before" in cmp:
        rows.append(("held-out failures (De)", cmp["de_before"], cmp["de_after"]))
    if "shifted" in cmp:
        rows.append((f"shifted images never seen ({cmp['shifted']['images']:,})", cmp["shifted"]["before"],
                     cmp["shifted"]["after"]))
    if "clean_unseen" in cmp:
        rows.append((f"clean test images not in Dc ({cmp['clean_unseen']['images']:,})", cmp["clean_unseen"]["before"],
                     cmp["clean_unseen"]["after"]))
    lines = [f"# Repair report: {name}", "",
             markdown_table(["accuracy (%)", "before", "after"], [[r, pct(b), pct(a)] for r, b, a in rows])]
    if "shifted" in cmp:
        sh = cmp["shifted"]
        lines += ["", f"- on the shifted images the repair never saw: {pct(sh['fix_rate'])}% of the wrong ones fixed, "
                  f"{pct(sh['break_rate'])}% of the right ones broken; net {(sh['after'] - sh['before']) * 100:+.2f} "
                  "points (the number to look at first)"]
    lo, hi = cmp.get("break_rate_ci95", [None, None])
    ci = f" (95% CI {pct(lo)}-{pct(hi)}%)" if lo is not None else ""
    lines += ["", f"- break rate (clean images right before, wrong after): {pct(cmp['break_rate'])}%{ci}; "
              f"the {len(cmp.get('broken_indices', []))} broken test images are listed in report.json (`broken_indices`)"]
    if "repair_rate" in cmp:
        lines.append(f"- repair rate (held-out failures now right): {pct(cmp['repair_rate'])}%")
    cfg = report["config"]
    lines.append(f"- method {cfg['method']}" + (f" (distillation weight {cfg['distill']})" if cfg.get("distill") else "")
                 + (f", style {cfg['style']}, sampling {cfg['sampling']}, "
                                                f"{cfg['clusters']} clusters" if cfg["method"] == "deeprepair" else "")
                 + f"; {cfg['epochs']} epochs over {report['finetune_images']:,} images, best epoch "
                 f"{report['best_epoch']} " + ("(the last: too few failures to hold any out for validation)"
                                               if report.get("selection") == "last"
                                               else "(selected on the validation split of Dt and Dc)"))
    lines += protection_lines(report, cmp)
    if report.get("gate"):
        g = report["gate"]
        lines.append(f"- routed repair: inputs whose {g.get('router', 'linear')} router score ({g.get('features', 'deep')} "
                     f"features) exceeds "
                     f"{g['threshold']:.2f} go to the repaired "
                     f"model, the rest to the original; on the validation split it routed "
                     f"{pct(g.get('routed_failures'))}% of the failures and {pct(g.get('routed_clean'))}% of the clean "
                     f"images (threshold chosen for break rate <= {g.get('max_break', 0) * 100:.1f}%"
                     + (f", routing the least that keeps {g['keep'] * 100:.0f}% of the validation repair"
                        if g.get("keep") else "")
                     + (f" and clean accuracy >= the original's on {g['heldout_clean_images']:,} held-out clean "
                        f"images: {g['heldout_clean_change'] * 100:+.2f} points there)" if g.get("heldout_clean_images")
                        else ")"))
        if g.get("calibration_note"):
            lines.append(f"- note: {g['calibration_note']}")
    if not (report.get("gate") or report.get("interpolation")) and cmp["break_rate"] > cfg.get("max_break", 0.01):
        lines.append(f"- no regression control was used and {pct(cmp['break_rate'])}% of the clean images the model "
                     f"got right now fail; `--gate` (routed repair) keeps the original's answers on inputs that do "
                     f"not look like the failures (docs/repair.md, Protection)")
    if report.get("seconds"):
        lines.append(f"- wall time {report['seconds']:.0f} s ({report['img_per_s']:.0f} img/s, "
                     f"{report['precision']})")
    if cmp.get("de_groups"):
        lines += ["", markdown_table(["held-out group", "images", "before (%)", "after (%)"],
                                     [[g, v["n"], pct(v["before"]), pct(v["after"])] for g, v in cmp["de_groups"].items()])]
    return "\n".join(lines) + "\n"
