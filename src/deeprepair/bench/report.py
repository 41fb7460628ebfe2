"""Turn benchmark cells into the paper's tables and figures: Markdown and a self-contained HTML page."""

from __future__ import annotations

import base64
import html
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..bounds import mean_std
from ..data.io import atomic_write_bytes
from ..errors import DeepRepairError
from ..figures import png_base64, pyplot
from ..tables import markdown_table
from .profile import as_today, current_name, frontier_row


def read_json_object(path: Path, what: str) -> dict:
    """A JSON object from ``path``, or a one-line error saying the file is not one."""
    fix = "delete it and rerun `deeprepair bench` with the same --out to remake it"
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DeepRepairError(f"{path} is not a readable {what} ({type(exc).__name__}: {exc}); {fix}") from None
    if not isinstance(obj, dict):
        raise DeepRepairError(f"{path} is not a {what}: it holds a JSON {type(obj).__name__}, not an object; {fix}")
    return obj


# what the report reads from each cell: key -> accepted types
_CELL_SCHEMA = {"arch": str, "corruption": str, "method": str, "metrics": dict, "repair": dict, "cross": dict}
_METRICS_SCHEMA = ("clean_after", "break_rate")


def read_cell(path: Path) -> dict:
    """One finished cell, checked against what the report reads from it (one-line error if not)."""
    c = read_json_object(path, "benchmark cell")
    bad = [k for k, t in _CELL_SCHEMA.items() if not isinstance(c.get(k), t)]
    bad += [f"metrics.{k}" for k in _METRICS_SCHEMA if not bad and not isinstance(c["metrics"].get(k), (int, float))]
    if bad:
        raise DeepRepairError(f"{path} is not a finished benchmark cell (missing or malformed: {', '.join(bad)}); "
                              "delete it and rerun `deeprepair bench` with the same --out to remake it")
    return as_today(c)  # a cell written under a former name reads under today's


def read_record(path: Path) -> dict:
    """A results folder's profile record (its methods under today's names)."""
    prof = read_json_object(path, "benchmark profile record")
    for key in ("methods", "ablation"):
        if isinstance(prof.get(key), list):
            prof[key] = [current_name(m) if isinstance(m, str) else m for m in prof[key]]
    return prof


def load_cells(out: Path) -> list[dict]:
    return [read_cell(p) for p in sorted((Path(out) / "cells").glob("*.json"))]


def grid(cells: list[dict], key) -> dict:
    """{arch: {method: {corruption: [key(cell) of each seed]}}}."""
    acc = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for c in cells:
        v = key(c)
        if v is not None:
            acc[c["arch"]][c["method"]][c["corruption"]].append(v)
    return {a: {m: dict(d) for m, d in ms.items()} for a, ms in acc.items()}


def _dr_minus(de: dict, archs: list[str], method: str) -> list[float]:
    """DeepRepair's De accuracy minus ``method``'s (points), one value per (arch, corruption) both ran."""
    return [(np.mean(de[a]["deeprepair"][c]) - np.mean(de[a][method][c])) * 100 for a in archs if method in de[a]
            for c in de[a][method] if c in de[a]["deeprepair"]]


# what a user lives with: (label, getter on a cell's metrics) averaged over corruptions per seed
LIVES_WITH = [
    ("shifted, never seen (%)", lambda m: m["shifted"]["after"]),
    ("change there (points)", lambda m: m["shifted"]["after"] - m["shifted"]["before"]),
    ("its break rate (%)", lambda m: m["shifted"]["break_rate"]),
    ("its fix rate (%)", lambda m: m["shifted"]["fix_rate"]),
    ("clean, not in Dc (%)", lambda m: m.get("clean_unseen", {}).get("after", m["clean_after"])),
    ("clean break (%)", lambda m: m.get("clean_unseen", {}).get("break_rate", m["break_rate"])),
    ("De (%)", lambda m: m.get("de_after")),
    ("other corruptions, change (points)", lambda m: m["elsewhere"]["after"] - m["elsewhere"]["before"]
     if "elsewhere" in m else None),
]


def lives_with(cells: list[dict], prof: dict) -> list[str]:
    """Markdown: per architecture and method, the metrics of ``LIVES_WITH`` as the mean over the
    profile's corruptions for each seed, then mean ± sample std over seeds; the original's row
    gives the before values. Empty when the cells carry no ``shifted`` metrics."""
    cells = [c for c in cells if isinstance(c["metrics"].get("shifted"), dict)]
    if not cells:
        return []
    out = ["## What a user lives with", "",
           "Accuracy on the shifted images the repair never saw (every image of the photos that are not sources "
           "of Dc; for real failures, the evaluation half of the photos), its break rate (right before, wrong "
           "after) and fix rate (wrong before, right after), clean accuracy and break rate on the test images "
           "that are not sources of Dc, De, and the change in accuracy on the other corruptions. Each figure is "
           "the mean over the corruptions for one seed, then mean ± sample std over seeds.", ""]
    for arch in dict.fromkeys(c["arch"] for c in cells):
        per = defaultdict(lambda: defaultdict(list))  # method -> seed -> cells
        for c in cells:
            if c["arch"] == arch:
                per[c["method"]][c["seed"]].append(c)
        rows = []
        if per:  # before = the original's, read from every cell (a real profile's evaluation half varies by seed)
            first = [c["metrics"] for ms in per.values() for cs in ms.values() for c in cs]
            rows.append(["original (before)", f"{np.mean([m['shifted']['before'] for m in first]) * 100:.2f}", "-", "-",
                         "-", f"{np.mean([m.get('clean_unseen', {}).get('before', m['clean_before']) for m in first]) * 100:.2f}",
                         "-", f"{np.mean([m.get('de_before', 0) for m in first]) * 100:.2f}", "-", "-"])
        for m in [m for m in prof["methods"] + prof.get("ablation", []) if m in per and m != "original"]:
            row = [m]
            for label, get in LIVES_WITH:
                seeds = [[get(c["metrics"]) for c in cs] for cs in per[m].values()]
                seeds = [np.mean(v) for v in seeds if v and all(x is not None for x in v)]
                row.append(mean_std(seeds, scale=100) if seeds else "-")
            row.append(str(len(per[m])))
            rows.append(row)
        out += [f"### {arch}", "", markdown_table(["method"] + [label for label, _ in LIVES_WITH] + ["seeds"], rows,
                                                 numbers=False), ""]
    return out


def certified_rows(cells: list[dict]) -> list[list]:
    """Per (method or variant, limit): of all cells, those whose clean break on the unseen test
    photos kept the limit and those whose clean accuracy did not drop; De and the measured break
    (mean over the corruptions of each seed that has them all, then mean ± sample std over those
    seeds), and the validation repair the
    choice of K may read (never De or the test set). Variants are a cell's own runs averaged
    (``variants``); a method row is the cell itself at its configured limit."""
    acc = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))  # row -> seed -> metric -> values
    for c in cells:
        lim = ((c.get("protection") or {}).get("interpolation") or {}).get("max_break")
        rows = [(c["method"], lim, c["metrics"].get("de_after"), c["metrics"].get("clean_unseen"),
                 (c["repair"].get("validation_final") or {}).get("val_failures_acc"))]
        rows += [(f"{c['method']}, {v['average']} run{'s' * (v['average'] > 1)} averaged"
                  + (", Fisher path" if v.get("mix_path") == "fisher" else ""), v["max_break"],
                  v["de_after"], v["clean_unseen"], (v.get("validation_final") or {}).get("val_failures_acc"))
                 for v in c.get("variants", [])]
        for name, limit, de, cu, val in rows:
            if c["method"] == "original" or not cu:
                continue
            a = acc[(name, limit)][c["seed"]]
            a["de"].append(de)
            a["break"].append(cu["break_rate"])
            a["kept"].append(limit is not None and cu["break_rate"] <= limit)
            a["clean_ok"].append(cu["after"] >= cu["before"])
            a["val"].append(val)
    n_corr = len({c["corruption"] for c in cells})
    out = []
    for (name, limit), seeds in acc.items():
        cell = [x for s in seeds.values() for x in s["kept"]]
        ok = [x for s in seeds.values() for x in s["clean_ok"]]
        whole = [s for s in seeds.values() if len(s["de"]) == n_corr]  # seeds with every corruption
        per = lambda k: [float(np.mean(s[k])) for s in whole if None not in s[k]]  # noqa: E731
        out.append([name, "-" if limit is None else f"{limit * 100:g}%", len(whole),
                    f"{sum(cell)}/{len(cell)}" if limit is not None else "-", f"{sum(ok)}/{len(ok)}",
                    *(mean_std(per(k), scale=100) if per(k) else "-" for k in ("de", "break", "val"))])
    return out


def k_choice_rows(cells: list[dict], limit: float = 0.01) -> tuple[list[list], int | None]:
    """How many runs to average, chosen on validation only: per K of the cells' variants at
    ``limit`` (linear path), the mean validation Dc repaired and its paired difference from the
    best K's over the cells that have every K (mean ± standard error); the chosen K is the
    smallest within one standard error of the best (the one-standard-error rule, Breiman et al. 1984)."""
    return one_se_rows(_variant_scores(cells, lambda v: v["average"] if v.get("mix_path", "linear") == "linear"
                                       and v["max_break"] == limit else None))


def path_choice_rows(cells: list[dict], k: int, limit: float = 0.01) -> tuple[list[list], str | None]:
    """The mix path (linear or fisher) chosen on validation only, as ``k_choice_rows`` chooses K,
    among the variants of ``k`` runs at ``limit``; linear comes first, so a tie keeps it."""
    return one_se_rows(_variant_scores(cells, lambda v: v.get("mix_path", "linear") if v["average"] == k
                                       and v["max_break"] == limit else None), order=["linear", "fisher"])


def combine_choice_rows(cells: list[dict], limit: float = 0.01) -> tuple[list[list], str | None]:
    """Averaging the K runs' weights or distilling them into one more run (``combine``), chosen on
    validation only as ``k_choice_rows`` chooses K: a distilling cell at ``limit`` against the
    variant of its own K runs averaged at the same limit; averaging comes first, so a tie keeps it."""
    from .profile import recipe_options

    per = defaultdict(dict)
    for c in cells:
        opts = recipe_options(c["method"])
        if opts.get("combine") != "distill" or (c["protection"].get("interpolation") or {}).get("max_break") != limit:
            continue
        avg = [v for v in c.get("variants", []) if v["average"] == opts["average"] and v["max_break"] == limit
               and v.get("mix_path", "linear") == "linear"]
        val = (c["repair"].get("validation_final") or {}).get("val_failures_acc")
        if avg and val is not None and (avg[0].get("validation_final") or {}).get("val_failures_acc") is not None:
            per["distill"][(c["corruption"], c["seed"])] = val
            per["average"][(c["corruption"], c["seed"])] = avg[0]["validation_final"]["val_failures_acc"]
    return one_se_rows(per, order=["average", "distill"])


def option_choice_rows(cells: list[dict], option: str, order: list | None, limit: float = 0.01
                       ) -> tuple[list[list], object]:
    """One option of a recipe (``train_subset``, ``tune``, ``distill``, ``average_bn``), chosen on
    validation only as ``k_choice_rows`` chooses K: the cells, at ``limit``, of the recipes that
    differ from one another only in it (the largest such family when a profile has several).
    ``order`` (default: ascending) puts the cheaper values first, so a tie keeps the cheaper recipe."""
    import dataclasses

    from ..repair_config import RepairConfig
    from .profile import recipe_options

    family = defaultdict(lambda: defaultdict(dict))  # the recipe but the option -> value -> cell -> score
    for c in cells:
        val = (c["repair"].get("validation_final") or {}).get("val_failures_acc") if c.get("repair") else None
        if (val is None or c.get("method") in (None, "original")
                or ((c.get("protection") or {}).get("interpolation") or {}).get("max_break") != limit):
            continue
        cfg = RepairConfig.preset("deeprepair-paper", **recipe_options(c["method"]))
        rest = repr(sorted({**dataclasses.asdict(cfg), option: None}.items()))
        family[rest][getattr(cfg, option)][(c["corruption"], c["seed"])] = val
    per = max((f for f in family.values() if len(f) > 1), key=lambda f: sum(map(len, f.values())), default=None)
    return one_se_rows(per, order=[o for o in (order or sorted(per)) if o in per]) if per else ([], None)


def budget_choice_rows(cells: list[dict], limit: float = 0.01) -> tuple[list[list], int | None]:
    """Training images per run, chosen on validation (``option_choice_rows``); fewer come first."""
    return option_choice_rows(cells, "train_subset", None, limit)


TUNE_COST = ["head", "bn", "first-block", "all"]  # repair/tuning.py's choices, cheapest to train first


def tune_choice_rows(cells: list[dict], limit: float = 0.01) -> tuple[list[list], str | None]:
    """The parameters a recipe fine-tunes (``tune``: all, or surgical: first-block, bn), chosen on
    validation (``option_choice_rows``); the cheaper comes first, so a tie keeps it."""
    return option_choice_rows(cells, "tune", TUNE_COST, limit)


def _variant_scores(cells: list[dict], key) -> dict:
    """{key(variant): {(method, corruption, seed): validation Dc repaired}} over the cells' variants
    (``key`` None: left out); each cell pairs its own variants, whatever recipes the profile runs."""
    per = defaultdict(dict)
    for c in cells:
        for v in c.get("variants", []):
            val = (v.get("validation_final") or {}).get("val_failures_acc")
            if key(v) is not None and val is not None:
                per[key(v)][(c.get("method"), c["corruption"], c["seed"])] = val
    return per


def one_se_rows(per: dict, order: list | None = None) -> tuple[list[list], object]:
    """Rows of ``K_HEAD`` shape for each option of ``per`` ({option: {cell: score}}) over the cells
    every option has, and the chosen option: the first (in ``order``, default sorted) whose mean is
    within one paired standard error of the best's (the one-standard-error rule)."""
    common = sorted(set.intersection(*(set(d) for d in per.values()))) if per else []
    if len(common) < 2:
        return [], None
    means = {k: float(np.mean([d[c] for c in common])) for k, d in per.items()}
    best = max(means, key=means.get)
    rows, chosen = [], None
    for k in [o for o in (order or sorted(per)) if o in per]:
        diff = np.array([per[k][c] - per[best][c] for c in common])
        se = float(diff.std(ddof=1) / np.sqrt(len(diff)))
        within = bool(-diff.mean() <= se)
        chosen = k if (chosen is None and within) else chosen
        rows.append([k, len(common), f"{means[k] * 100:.2f}", f"{diff.mean() * 100:.2f} ± {se * 100:.2f}",
                     "yes" if within else "no"])
    return rows, chosen


def choice_tables(cells: list[dict], var: dict) -> list[str]:
    """The report's choices made on validation only: K (several K in the variants) and the mix
    path (several paths), each by the one-standard-error rule at the 1% limit."""
    md = []
    ks, k = k_choice_rows(cells) if len(var.get("average", [])) > 1 else ([], None)
    if ks:
        md += ["### Runs averaged, chosen on validation", "", markdown_table(K_HEAD, ks, numbers=False), "",
               f"Chosen: K = {k}.", ""]
    if len(var.get("mix_path", [])) > 1:
        k = k or max(var["average"])
        rows, path = path_choice_rows(cells, k)
        if rows:
            md += [f"### Mix path ({k} run{'s' * (k > 1)} averaged), chosen on validation", "",
                   markdown_table(["mix path", *K_HEAD[1:3], "minus the best path's (points, ± s.e.)", K_HEAD[4]],
                                  rows, numbers=False), "", f"Chosen: {path}.", ""]
    rows, n = budget_choice_rows(cells)
    if rows:
        md += ["### Training images per run, chosen on validation", "",
               markdown_table(["training images per run", *K_HEAD[1:3], "minus the best's (points, ± s.e.)",
                               K_HEAD[4]], [[f"{r[0]:,}", *r[1:]] for r in rows], numbers=False), "",
               f"Chosen: {n:,} per run.", ""]
    for what, head, (rows, chosen) in (
            ("Parameters fine-tuned", "parameters fine-tuned", tune_choice_rows(cells)),
            ("Weight of focal distillation", "distillation weight", option_choice_rows(cells, "distill", None)),
            ("BatchNorm statistics after averaging", "BatchNorm statistics",
             option_choice_rows(cells, "average_bn", ["kept", "recompute"]))):
        if rows:
            md += [f"### {what}, chosen on validation", "",
                   markdown_table([head, *K_HEAD[1:3], "minus the best's (points, ± s.e.)", K_HEAD[4]], rows,
                                  numbers=False), "", f"Chosen: {chosen:g}." if isinstance(chosen, float)
                   else f"Chosen: {chosen}.", ""]
    rows, how = combine_choice_rows(cells)
    if rows:
        md += ["### Averaging or distilling the runs, chosen on validation", "",
               markdown_table(["combine", *K_HEAD[1:3], "minus the better's (points, ± s.e.)", K_HEAD[4]],
                              rows, numbers=False), "", f"Chosen: {how}.", ""]
    return md


K_HEAD = ["runs averaged (K)", "cells", "validation Dc repaired (%)", "minus the best K's (points, ± s.e.)",
          "within one s.e."]


CERTIFIED_HEAD = ["repair", "limit", "seeds with every corruption", "cells within the limit (clean, unseen)", "cells with clean >= the original's",
                  "De (%)", "clean break, measured (%)", "validation Dc repaired (%)"]


# the interpolation path (a profile's "frontier"): (label, getter on a frontier row; ``before`` = the
# original's accuracy on the shifted images)
FRONTIER = [
    ("De (%)", lambda r, before: r["de_after"]),
    ("shifted, change (points)", lambda r, before: r["shifted_after"] - before),
    ("shifted break (%)", lambda r, before: r["shifted_break_rate"]),
    ("clean break (%)", lambda r, before: r.get("clean_unseen_break_rate", r["break_rate"])),
]


def frontier_points(cells: list[dict]) -> dict:
    """{arch: {method: {alpha: [per seed, the mean over corruptions of each FRONTIER value]}}}:
    alpha 0 is the original (the cells' before values), 1 the repaired network (the cell's metrics)."""
    acc = defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))
    for c in cells:
        m = c["metrics"]
        if not c.get("frontier") or not isinstance(m.get("shifted"), dict):
            continue
        before = m["shifted"]["before"]
        zero = {"de_after": m.get("de_before"), "shifted_after": before, "shifted_break_rate": 0.0, "break_rate": 0.0}
        for r in [{**zero, "alpha": 0.0}, *c["frontier"], frontier_row(1.0, m)]:
            vals = [np.nan if get(r, before) is None else get(r, before) for _, get in FRONTIER]
            acc[c["arch"]][c["method"]][r["alpha"]][c["seed"]].append(vals)
    return {arch: {meth: {a: [np.mean(np.array(v, float), axis=0) for v in seeds.values()]
                          for a, seeds in sorted(alphas.items())} for meth, alphas in ms.items()}
            for arch, ms in acc.items()}


def frontier(cells: list[dict], prof: dict) -> tuple[list[str], list]:
    """Markdown and a figure: De, the change on the never-seen shifted images and the break rates
    along the straight line from the original's weights to each repaired network's (the profile's
    ``frontier`` weights; a report of the trade-off, not a choice). Empty without frontier cells."""
    pts = frontier_points(cells)
    if not pts:
        return [], []
    md = ["## The trade-off along the interpolation path", "",
          "Each repaired network mixed with the original, theta = (1 - alpha) theta_original + alpha "
          "theta_repaired (`--interpolate` picks alpha on validation; here every alpha of the profile is scored "
          "on the cell's held-out sets, to show what any choice of alpha can reach). Alpha 0 is the original, 1 "
          "the repaired network. Mean over the corruptions per seed, then mean ± sample std over seeds.", ""]
    figs = []
    for arch, ms in pts.items():
        rows = []
        for meth in [m for m in prof["methods"] + prof.get("ablation", []) if m in ms]:
            for a, seeds in ms[meth].items():
                rows.append([meth, f"{a:g}"] + [mean_std([s[i] for s in seeds], scale=100) if not np.isnan(seeds[0][i]) else "-"
                                                for i in range(len(FRONTIER))] + [str(len(seeds))])
        md += [f"### {arch}", "", markdown_table(["method", "alpha"] + [lab for lab, _ in FRONTIER] + ["seeds"], rows, numbers=False), ""]
        fig, axes = pyplot().subplots(1, 2, figsize=(10, 3.8))
        for meth, alphas in ms.items():
            xs = [np.mean([s[3] for s in seeds]) * 100 for seeds in alphas.values()]
            for ax, i in zip(axes, (0, 1)):
                ys = [np.mean([s[i] for s in seeds]) * 100 for seeds in alphas.values()]
                ax.plot(xs, ys, "o-", label=meth)
                for a, x, y in zip(alphas, xs, ys):
                    ax.annotate(f"{a:g}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        for ax, lab in zip(axes, ("held-out failures De (%)", "never-seen shifted images, change (points)")):
            ax.axvline(1.0, color="grey", ls="--", lw=1)
            ax.set_xlabel("clean break rate (%)  (dashed: 1%)")
            ax.set_ylabel(lab)
        axes[1].axhline(0.0, color="grey", lw=0.8)
        axes[0].legend(fontsize=7)
        fig.suptitle(f"{arch}: the interpolation path, original (alpha 0) to repaired (alpha 1)")
        figs.append((f"frontier-{arch}", png_base64(fig, dpi=90)))
    return md, figs


def _header(cells: list[dict], prof: dict, provenance: dict | None) -> list[str]:
    """The report's title, provenance, machines and cell wall times."""
    md = [f"# Benchmark report: profile `{prof['name']}`", "", prof.get("about", ""), ""]
    if provenance:
        md += [f"- {k}: {v}" for k, v in provenance.items()] + [""]
    machines = sorted({f"{c['machine']['cpu']} ({c['machine']['device']}, auto = {c['machine']['precision_auto']})"
                       for c in cells if isinstance(c.get("machine"), dict)})
    md += [f"- machine of the cells: {'; '.join(machines) or 'not recorded (cells made before machines were recorded)'}", ""]
    md.append(f"{len(cells)} cells. Accuracy in %, mean ± sample std over seeds where there are several.")
    walls = defaultdict(list)
    for c in cells:
        walls[c["arch"]].append(c.get("wall", 0.0))
    md.append("Cell wall time (repair + evaluation, summed; model loading and mining not included): "
              + ", ".join(f"{a} {sum(w) / 60:.1f} min for {len(w)} cells" for a, w in walls.items())
              + f"; total {sum(map(sum, walls.values())) / 60:.1f} min.")
    return md


def _models(out: Path) -> list[str]:
    """The models as their checkpoints record them (OUT/models.json, written by the run)."""
    path = out / "models.json"
    if not path.is_file():
        return []
    rec = read_json_object(path, "record of the benchmark's models").get("models")
    if not isinstance(rec, dict):
        raise DeepRepairError(f"{path} lists no models; rerun `deeprepair bench` with the same --out to remake it")

    def num(v, fmt: str) -> str:
        return format(v, fmt) if isinstance(v, (int, float)) else "-"

    rows = [[a, num(m.get("parameters"), ","), num(m.get("epochs"), "d"), num((m.get("clean_accuracy") or 0) * 100, ".2f"),
             num((m.get("train_seconds") or 0) / 60, ".1f"), num(m.get("median_epoch_seconds"), ".0f"),
             str(m.get("precision") or "-"), f"`{m['train_command']}`" if m.get("train_command") else "-"]
            for a, m in rec.items() if isinstance(m, dict)]
    return ["", "## Models (as their checkpoints record them)", "",
            markdown_table(["arch", "parameters", "epochs", "clean acc. (%)", "training (min)", "median epoch (s)",
                            "precision", "command"], rows, numbers=False)]


def _table1(cells: list[dict], prof: dict, arch: str) -> list[str]:
    """Table 1: failures (Dc+De), collected (Dc), held out (De) per corruption."""
    t1 = {}
    for c in cells:
        if c["arch"] == arch and c["method"] == "original":
            n_de = c["metrics"].get("de_images", 0)
            t1[c["corruption"]] = [f"{c['failures']:,}", f"{c['failures'] - n_de:,}", f"{n_de:,}"]
    return ["", f"## {arch}", "", "### Table 1: failures (Dc+De), collected (Dc), held out (De)", "",
            markdown_table(["corruption", "Dc+De", "Dc", "De"], [[k, *t1[k]] for k in prof["corruptions"] if k in t1], numbers=False)]


def _table2(de: dict, arch: str, methods: list[str], corrs: list[str]) -> list[str]:
    """Table 2: accuracy on the held-out failures De, the best non-oracle method per row in bold."""
    rows = []
    for c in corrs:
        vals = {m: de[arch][m].get(c) for m in methods}
        cand = [m for m in methods if m not in ("oracle", "original") and vals[m]]
        best = max(cand, key=lambda m: np.mean(vals[m])) if cand else None
        rows.append([c] + [(f"**{mean_std(vals[m], scale=100)}**" if m == best else mean_std(vals[m], scale=100))
                           if vals[m] else "-"
                           for m in methods])
    means = []
    for m in methods:
        v = [np.mean(de[arch][m][c]) for c in corrs if c in de[arch][m]]
        means.append(f"{np.mean(v) * 100:.2f}" if v else "-")
    rows.append(["**mean**"] + means)
    return ["", "### Table 2: accuracy on the held-out failures De (repair rate; the original gets 0)", "",
            "Best non-oracle method per row in bold; `oracle` knows the true corruption (an upper bound).", "",
            markdown_table(["corruption"] + methods, rows, numbers=False)]


def _clean_break_time(clean: dict, brk: dict, secs: dict, arch: str, methods: list[str], corrs: list[str]) -> list[str]:
    rows = []
    for m in methods:
        cl = [np.mean(clean[arch][m][c]) for c in corrs if c in clean[arch][m]]
        br = [np.mean(brk[arch][m][c]) for c in corrs if m in brk.get(arch, {}) and c in brk[arch][m]]
        tt = [np.mean(secs[arch][m][c]) for c in corrs if c in secs[arch][m]]
        rows.append([m, f"{np.mean(cl) * 100:.2f}" if cl else "-", f"{np.mean(br) * 100:.2f}" if br else "-",
                     f"{np.mean(tt):.0f}" if tt else "-"])
    return ["", "### Clean accuracy, break rate and repair time (means over corruptions)", "",
            markdown_table(["method", "clean acc. (%)", "break rate (%)", "repair time (s)"], rows, numbers=False)]


def _head_to_head(de: dict, arch: str, methods: list[str]) -> list[str]:
    """On how many corruptions DeepRepair's De accuracy is above each method's."""
    if "deeprepair" not in de[arch]:
        return []
    rows = []
    for m in methods:
        if m in ("deeprepair", "original"):
            continue
        diff = _dr_minus(de, [arch], m)
        if diff:
            rows.append([m, f"{sum(d > 0 for d in diff)} / {len(diff)}", f"{np.mean(diff):+.2f}",
                         f"{min(diff):+.2f} .. {max(diff):+.2f}"])
    return ["", "### DeepRepair against each method (De accuracy, per corruption)", "",
            markdown_table(["method", "DeepRepair higher", "mean difference (points)", "range"], rows, numbers=False)]


def _cross_failure(cells: list[dict], prof: dict, arch: str, methods: list[str], corrs: list[str]) -> list[str]:
    """Cross-failure generalisation: accuracy on the other corruptions' held-out failures."""
    cross = defaultdict(lambda: defaultdict(list))
    for c in cells:
        if c["arch"] == arch and c["corruption"] in corrs:
            own = [v for j, v in c["cross"].items() if j == c["corruption"]]
            other = [v for j, v in c["cross"].items() if j != c["corruption"] and j in corrs]
            cross[c["method"]]["own"] += own
            cross[c["method"]]["other"] += [float(np.mean(other))] if other else []
    rows = [[m, f"{np.mean(cross[m]['own']) * 100:.2f}" if cross[m]["own"] else "-",
             f"{np.mean(cross[m]['other']) * 100:.2f}" if cross[m]["other"] else "-"] for m in methods if m in cross]
    return ["", "### Cross-failure accuracy (Fig. 4 in numbers)", "",
            f"Accuracy of each repaired model on a fixed random subsample of up to {prof.get('cross_subsample', '?'):,} "
            "held-out failures of every corruption this architecture has: on its own corruption and, averaged, "
            "on the others (means over the repaired models).", "",
            markdown_table(["method", "own corruption (%)", "other corruptions (%)"], rows, numbers=False)]


def _table3(de: dict, arch: str, corrs: list[str]) -> list[str]:
    """Table 3: the ablation, no-cluster (uniform sampling) vs clustering + Eq. 4."""
    if not ("deeprepair" in de[arch] and "deeprepair-uniform" in de[arch]):
        return []
    rows = [[c, mean_std(de[arch]["deeprepair-uniform"][c], scale=100), mean_std(de[arch]["deeprepair"][c], scale=100)]
            for c in corrs if c in de[arch]["deeprepair-uniform"] and c in de[arch]["deeprepair"]]
    return ["", "### Table 3: ablation, no-cluster (uniform sampling) vs clustering + Eq. 4", "",
            markdown_table(["corruption", "no-cluster", "DeepRepair (Eq. 4)"], rows, numbers=False)]


def _fig2(cells: list[dict], arch: str) -> list:
    """Fig. 2: the original model per severity."""
    orig = {c["corruption"]: c["original_acc_by_severity"] for c in cells if c["arch"] == arch and c["method"] == "original"}
    if not orig:
        return []
    fig, ax = pyplot().subplots(figsize=(max(6, 0.6 * len(orig)), 3))
    for s in range(5):
        ax.bar(np.arange(len(orig)) + (s - 2) * 0.16, [orig[c][s] * 100 for c in orig], 0.16, label=f"s{s + 1}")
    ax.set_xticks(range(len(orig)), list(orig), rotation=45, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"Fig. 2: {arch} before repair, per severity")
    ax.legend(ncol=5, fontsize=7)
    return [(f"fig2-{arch}", png_base64(fig, dpi=90))]


def _fig3(de: dict, clean: dict, arch: str, methods: list[str], corrs: list[str]) -> list:
    """Fig. 3: clean vs De accuracy after repair, per method."""
    fig, ax = pyplot().subplots(figsize=(5, 3.5))
    for m in methods:
        cl = [np.mean(clean[arch][m][c]) * 100 for c in corrs if c in clean[arch][m]]
        d = [np.mean(de[arch][m][c]) * 100 for c in corrs if c in de[arch][m]]
        if cl and d:
            ax.scatter(np.mean(cl), np.mean(d), label=m)
            ax.annotate(m, (np.mean(cl), np.mean(d)), fontsize=7)
    ax.set_xlabel("clean test accuracy (%)")
    ax.set_ylabel("held-out failure accuracy (%)")
    ax.set_title(f"Fig. 3: {arch}, means over corruptions")
    return [(f"fig3-{arch}", png_base64(fig, dpi=90))]


def _fig4(cells: list[dict], arch: str, methods: list[str], corrs: list[str]) -> list:
    """Fig. 4: cross-failure heat maps, one per repair method."""
    heat_methods = [m for m in methods if m != "original"]
    if not (heat_methods and len(corrs) > 1):
        return []
    fig, axes = pyplot().subplots(1, len(heat_methods), figsize=(2.6 * len(heat_methods), 2.8), squeeze=False)
    for ax, m in zip(axes[0], heat_methods):
        mat = np.full((len(corrs), len(corrs)), np.nan)
        for c in cells:
            if c["arch"] == arch and c["method"] == m and c["corruption"] in corrs:
                for j, v in c["cross"].items():
                    if j in corrs:
                        i_, j_ = corrs.index(c["corruption"]), corrs.index(j)
                        mat[i_, j_] = v * 100 if np.isnan(mat[i_, j_]) else (mat[i_, j_] + v * 100) / 2
        ax.imshow(mat, vmin=0, vmax=100, cmap="viridis")
        ax.set_title(m, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("repaired for (rows)")
    fig.suptitle(f"Fig. 4: {arch}, accuracy on each corruption's held-out failures (columns)", fontsize=9)
    return [(f"fig4-{arch}", png_base64(fig, dpi=90))]


def _fig5(cells: list[dict], de: dict, arch: str, corrs: list[str]) -> list:
    """Fig. 5: the ablation's variants on the other corruptions."""
    pair = [m for m in ("deeprepair-uniform", "deeprepair") if m in de[arch]]
    if not (len(pair) == 2 and len(corrs) > 1):
        return []
    fig, ax = pyplot().subplots(figsize=(max(6, 0.55 * len(corrs)), 3))
    for k, (m, label) in enumerate(zip(pair, ("no-cluster", "cluster (Eq. 4)"))):
        vals = []
        for cn in corrs:
            v = [np.mean([x for j, x in c["cross"].items() if j != cn and j in corrs]) * 100 for c in cells
                 if c["arch"] == arch and c["method"] == m and c["corruption"] == cn]
            vals.append(np.mean(v) if v else np.nan)
        ax.bar(np.arange(len(corrs)) + (k - 0.5) * 0.4, vals, 0.4, label=label)
    ax.set_xticks(range(len(corrs)), corrs, rotation=45, ha="right")
    ax.set_ylabel("accuracy on the other\ncorruptions' De (%)")
    ax.set_title(f"Fig. 5: {arch}, ablation, repaired for one corruption (x) and tested on the others")
    ax.legend(fontsize=7)
    return [(f"fig5-{arch}", png_base64(fig, dpi=90))]


def _all_archs_head_to_head(de: dict, prof: dict) -> list[str]:
    """DeepRepair against each method over every (architecture, corruption) cell of the run."""
    if not (len(de) > 1 and all("deeprepair" in de[a] for a in de)):
        return []
    rows = []
    for m in dict.fromkeys([*prof["methods"], *prof["ablation"], *(m for a in de for m in de[a])]):
        if m in ("deeprepair", "original"):
            continue
        diff = _dr_minus(de, list(de), m)
        if diff:
            rows.append([m, f"{sum(d > 0 for d in diff)} / {len(diff)}", f"{np.mean(diff):+.2f}"])
    return ["", "## All architectures: DeepRepair against each method", "",
            "Over every (architecture, corruption) pair both were run on; De accuracy, seed means.", "",
            markdown_table(["method", "DeepRepair higher", "mean difference (points)"], rows, numbers=False)]


def build(out: Path, prof: dict | None = None, provenance: dict | None = None) -> tuple[str, str, list]:
    """(markdown, html, [(figure name, base64 PNG)]) for the cells under ``out``: per architecture the
    paper's Tables 1-3 and Figs. 2-5, then DeepRepair against each method over the whole run."""
    cells = load_cells(out)
    prof = prof or read_record(Path(out) / "profile.json")
    if not isinstance(prof.get("name"), str):
        raise DeepRepairError(f"{Path(out) / 'profile.json'} names no profile; rerun `deeprepair bench` to remake it")
    de = grid(cells, lambda c: c["metrics"].get("de_after"))
    clean = grid(cells, lambda c: c["metrics"]["clean_after"])
    brk = grid(cells, lambda c: c["metrics"]["break_rate"] if c["method"] != "original" else None)
    secs = grid(cells, lambda c: c["repair"].get("seconds"))
    md = _header(cells, prof, provenance)
    md += _models(Path(out)) + [""] + lives_with(cells, prof)
    if prof.get("calibration"):
        md += ["## The break limit on images the repair never saw", "",
               "Break measured on the clean test photos that are neither sources of Dc nor calibration photos; "
               "variants are the cell's own runs averaged and mixed at each limit.", "",
               markdown_table(CERTIFIED_HEAD, certified_rows(cells), numbers=False), ""]
        md += choice_tables(cells, prof.get("variants") or {})
    fr_md, figs = frontier(cells, prof)
    md += fr_md
    paper_tables = not prof.get("real")  # the paper's tables and figures read corruption severities
    for arch in [a for a in prof["archs"] if a in de and paper_tables] + [a for a in de if a not in prof["archs"]]:
        methods = [m for m in prof["methods"] + prof["ablation"] if m in de[arch]]
        corrs = [c for c in prof["corruptions"] if any(c in de[arch][m] for m in methods)]
        md += (_table1(cells, prof, arch) + _table2(de, arch, methods, corrs)
               + _clean_break_time(clean, brk, secs, arch, methods, corrs) + _head_to_head(de, arch, methods)
               + _cross_failure(cells, prof, arch, methods, corrs) + _table3(de, arch, corrs))
        figs += (_fig2(cells, arch) + _fig3(de, clean, arch, methods, corrs) + _fig4(cells, arch, methods, corrs)
                 + _fig5(cells, de, arch, corrs))
    md += _all_archs_head_to_head(de, prof)
    md += ["", "## Figures", "", "Also in report.html (self-contained)."]
    md += [f"\n![{n}](figures/{n}.png)" for n, _ in figs]
    text = "\n".join(md) + "\n"
    body = "".join(f"<h3>{html.escape(n)}</h3><img src='data:image/png;base64,{b}'/>" for n, b in figs)
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>deeprepair benchmark</title>"
            "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style></head><body>"
            + _md_to_html(text) + body + "</body></html>")
    return text, page, figs


def _md_to_html(md: str) -> str:
    """Just enough Markdown for our reports: headings, tables, bullets, bold, paragraphs."""
    import re

    out, table = [], []

    def flush():
        if table:
            rows = [r for r in table if not set(r.replace("|", "").strip()) <= set("-: ")]
            cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows]
            out.append("<table>" + "".join("<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{c}</{'th' if i == 0 else 'td'}>"
                                                            for c in row) + "</tr>" for i, row in enumerate(cells)) + "</table>")
            table.clear()

    for line in md.splitlines():
        line_h = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(line))
        if line.startswith("!["):  # figures are appended to the page as embedded images
            continue
        if line.startswith("|"):
            table.append(line_h)
            continue
        flush()
        if line.startswith("#"):
            k = len(line) - len(line.lstrip("#"))
            out.append(f"<h{k}>{line_h[k:].strip()}</h{k}>")
        elif line.startswith("- "):
            out.append(f"<li>{line_h[2:]}</li>")
        elif line.strip():
            out.append(f"<p>{line_h}</p>")
    flush()
    return "\n".join(out)


def write(out: Path, provenance: dict | None = None) -> tuple[Path, Path]:
    """report.md, report.html and their figures in ``out``. ``provenance`` (the bench's command,
    data and seconds) is kept in ``out``/provenance.json, so that rewriting the report later
    (``deeprepair report``, no provenance given) still names what made the cells."""
    kept = Path(out) / "provenance.json"
    if provenance is not None:
        atomic_write_bytes(kept, (json.dumps(provenance, indent=2) + "\n").encode())
    elif kept.is_file():
        provenance = read_json_object(kept, "record of the bench command")
    text, page, figs = build(Path(out), provenance=provenance)
    for name, b64 in figs:  # the PNGs the Markdown report links to
        atomic_write_bytes(Path(out) / "figures" / f"{name}.png", base64.b64decode(b64))
    return (atomic_write_bytes(Path(out) / "report.md", text.encode()),
            atomic_write_bytes(Path(out) / "report.html", page.encode()))


def build_sweep(out: Path, parts: list[str]) -> tuple[str, list]:
    """The De-vs-|Dc| curve of a ``dc_sizes`` profile from its runs' folders (``out/dc<N>``): De per
    method and size, per corruption and as each seed's mean over the corruptions (mean ± std over
    seeds); and the curve as a figure."""
    sizes, de = [], defaultdict(lambda: defaultdict(lambda: defaultdict(list)))  # (arch, method) -> size -> seed
    per_corr = defaultdict(list)  # (arch, corruption, method, size) -> values over seeds
    prof = None
    for part in parts:
        prof = read_record(Path(out) / part / "profile.json")
        n = prof.get("dc_size") or prof["collect"]
        sizes.append(n)
        for c in load_cells(Path(out) / part):
            v = c["metrics"].get("de_after")
            if c["method"] != "original" and v is not None:
                de[(c["arch"], c["method"])][n][c["seed"]].append(v)
                per_corr[(c["arch"], c["corruption"], c["method"], n)].append(v)
    if prof is None:
        raise DeepRepairError(f"{out} holds no runs of a dc_sizes profile")
    seeds = sorted({s for d in de.values() for by in d.values() for s in by})
    head = ["arch", "method"] + [f"{n:,} collected" for n in sizes]
    curve = {k: [[float(np.mean(v)) for v in d[n].values()] if d.get(n) else None for n in sizes]  # per-seed means
             for k, d in de.items()}
    rows = [[a, m] + [mean_std(t, scale=100) if t else "-" for t in ts] for (a, m), ts in curve.items()]
    md = [f"# Benchmark report: profile `{prof['name']}`, De against |Dc|", "", prof.get("about", ""), "",
          f"Runs: {', '.join(f'`{p}/`' for p in parts)} (each a bench folder with its own report). Seeds in "
          f"the cells: {', '.join(map(str, seeds))} (a figure without ± is one seed's).", "",
          "## De (%) against |Dc|, each seed's mean over the corruptions (mean ± std over seeds)", "",
          markdown_table(head, rows, numbers=False), "", "## Per corruption (mean ± std over seeds)", ""]
    corr_rows = sorted({(a, c, m) for a, c, m, _ in per_corr})
    md.append(markdown_table(["arch", "corruption", "method"] + head[2:],
                             [[a, c, m] + [mean_std(per_corr[(a, c, m, n)], scale=100) if per_corr.get((a, c, m, n))
                                           else "-" for n in sizes] for a, c, m in corr_rows], numbers=False))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for (a, m), ts in curve.items():
        pts = [(n, t) for n, t in zip(sizes, ts) if t]
        ax.errorbar([n for n, _ in pts], [np.mean(t) * 100 for _, t in pts],
                    yerr=[0 if len(t) < 2 else np.std(t, ddof=1) * 100 for _, t in pts], marker="o", capsize=3,
                    label=m if len({a for a, _ in curve}) == 1 else f"{a} {m}")
    ax.set_xscale("log")
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.set_xlabel("|Dc| (collected failures)")
    ax.set_ylabel("De accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figs = [("fewdc-curve", png_base64(fig, dpi=90))]
    md += ["", "![De against |Dc|](figures/fewdc-curve.png)"]
    return "\n".join(md) + "\n", figs


def write_sweep(out: Path, parts: list[str]) -> Path:
    """``out/report.md`` and its figure for the runs of a ``dc_sizes`` profile."""
    text, figs = build_sweep(Path(out), parts)
    for name, b64 in figs:
        atomic_write_bytes(Path(out) / "figures" / f"{name}.png", base64.b64decode(b64))
    return atomic_write_bytes(Path(out) / "report.md", text.encode())
