"""Write benchmarks/results/SUMMARY.md from the results' JSON files: one table per question, each
opening with a finding computed from its figures, naming its source file, the machine it ran on
and the command that regenerates it. Also fills the marked blocks
``<!-- summary:NAME:start -->`` ... ``<!-- summary:NAME:end -->`` in README.md, docs/repair.md,
docs/models.md and benchmarks/results/regressions.md with generated text, so that no figure there is retyped.

    python benchmarks/summary.py            # rewrite SUMMARY.md and the marked blocks
    python benchmarks/summary.py --check    # exit 1 if any of them is stale (nothing written)

Reads only committed files under benchmarks/results/; runs nothing and needs no data or torch.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from deeprepair.bench import METHOD_OPTIONS
from deeprepair.bench.report import FRONTIER, LIVES_WITH, frontier_points

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SUMMARY = RESULTS / "SUMMARY.md"
TARGET = "break <= 1%, clean >= the original's, >= 90% of the De gain kept"
NAMES = {"finetune": "fine-tune (CE on Dt + Dc)", "augmix": "AugMix", "deeprepair": "DeepRepair",
         "dr-uniform": "DeepRepair, no clustering", "dr-eq4": "DeepRepair (Eq. 4), wavelet",
         "dr-eq4-fourier": "DeepRepair (Eq. 4), fourier", "dr-eq4-adain": "DeepRepair (Eq. 4), adain",
         "dr-fourier": "DeepRepair, fourier", "dr-adain": "DeepRepair, adain",
         "original": "original", "cutout": "Cutout", "mixup": "Mixup", "cutmix": "CutMix",
         "fewshot": "few-shot (CE on Dc only)", "sensei": "SENSEI", "oracle": "oracle (AugMix + the true corruption)"}


# -- helpers ------------------------------------------------------------------------------------
class Finding(str):
    """A generated finding (the text, for SUMMARY.md and the docs) that also carries ``short``: its answer
    in a few words, for README's headline table."""

    short: str

    def __new__(cls, text: str, short: str) -> "Finding":
        obj = super().__new__(cls, text)
        obj.short = short
        return obj


def lead(body: str) -> str:
    """A section body's finding: its first paragraph (every body opens with its finding)."""
    return body.split("\n\n", 1)[0]


def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


def ms(xs, scale: float = 100.0, digits: int = 2) -> str:
    """``mean ± sample std`` of ``xs`` (scaled), or the value alone for one element."""
    xs = [x * scale for x in xs]
    if len(xs) == 1:
        return f"{xs[0]:.{digits}f}"
    return f"{mean(xs):.{digits}f} ± {statistics.stdev(xs):.{digits}f}"


def machine(prov: dict | None) -> str:
    m = (prov or {}).get("machine")
    if not m:
        return "**not recorded**"
    return f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores"


def command(prov: dict) -> str:
    cmd = prov["command"]
    if " --no-run" in cmd:  # the results were summarised from cached cells: regenerate by running them
        cmd = cmd.replace(" --no-run", "")
    return cmd


# The last commit with the retired study scripts (benchmarks/gate_*.py, regressions.py, repair.py,
# rq1_table1.py); their results moved to retired/ (retired/README.md says what replaced each).
RETIRED_AT = "1e66f62"
# the bench profiles that carry a retired script's study on (src/deeprepair/bench/profiles/)
NOW = {name: f"deeprepair bench --profile {name} --data DIR --out benchmarks/results/{name}"
       for name in ("repair", "fewdc", "mixed", "rq1")}


def source(name: str, prov: dict | None, cmd: str | None = None, note: str = "", now: str | None = None) -> str:
    """The source line of a table. A file under retired/ was made by a script that is no longer in the
    tree: it is regenerated at ``RETIRED_AT`` (a worktree of that commit), or, for a study that goes on
    as a bench profile, by ``now`` (the profile's command)."""
    prov = prov or {}
    when = ", ".join(x for x in (prov.get("commit") and f"commit {prov['commit']}",
                                 prov.get("date", "")[:10]) if x)
    regen = f"`{cmd or command(prov)}`"
    if name.startswith("retired/"):
        regen = (f"{regen} in a worktree of commit {RETIRED_AT} (`git worktree add ../deeprepair-{RETIRED_AT} "
                 f"{RETIRED_AT}`; the script is retired)")
        if now:
            regen = f"`{now}` (the study's bench profile; not finished yet), or as made: {regen}"
    return (f"Source: [`{name}`]({name}) ({when + '; ' if when else ''}machine: {machine(prov)}). "
            f"Regenerate: {regen}{note}.")


def table(header: list[str], rows: list[list]) -> str:
    def numeric(c) -> bool:
        return str(c).lstrip("+-")[:1].isdigit()

    align = ["---:" if i and any(numeric(r[i]) for r in rows) and all(numeric(r[i]) or r[i] == "-" for r in rows)
             else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def by_seed(rows, key: str, *group) -> dict:
    """{group values: [per-seed mean over corruptions of key]}."""
    acc: dict = defaultdict(lambda: defaultdict(list))
    for r in rows:
        acc[tuple(r[g] for g in group)][r["seed"]].append(r[key])
    return {g: [mean(v) for _, v in sorted(s.items())] for g, s in acc.items()}


# -- 0. before repair (RQ1, Table 1) -------------------------------------------------------------
def rq1_rows() -> tuple[dict, str]:
    """{arch: {"clean": acc, "acc": {corruption: mean over severities}, "failures": {corruption: n}}}, in
    the profile's order, and the source line, from the `rq1` bench folder's cells."""
    cells, prof = bench_folder("rq1")
    out: dict = {a: {"acc": {}, "failures": {}} for a in prof["archs"]}
    for c in cells:
        if c["method"] == "original":
            a = out[c["arch"]]
            a["clean"] = c["metrics"]["clean_before"]
            a["acc"][c["corruption"]] = mean(c["original_acc_by_severity"])
            a["failures"][c["corruption"]] = c["failures"]
    return out, bench_source("rq1", cells, prof)


def section_rq1() -> tuple[str, str]:
    from deeprepair.corruptions import CORRUPTIONS, HELDOUT_CORRUPTIONS

    res, src = rq1_rows()
    rows, drops, fewest = [], [], []
    for arch, r in res.items():
        main = [r["acc"][c] for c in CORRUPTIONS if c in r["acc"]]
        held = [r["acc"][c] for c in HELDOUT_CORRUPTIONS if c in r["acc"]]
        worst = min((c for c in CORRUPTIONS if c in r["acc"]), key=r["acc"].get)
        fails = [r["failures"][c] for c in CORRUPTIONS if c in r["failures"]]
        drops.append(100 * (r["clean"] - mean(main)))
        fewest.append(min(fails))
        rows.append([arch, f"{100 * r['clean']:.2f}", f"{100 * mean(main):.2f} ({len(main)})",
                     f"{100 * mean(held):.2f} ({len(held)})" if held else "-", f"{worst} {100 * r['acc'][worst]:.2f}",
                     f"{min(fails):,}-{max(fails):,}"])
    finding = (f"The {len(res)} pre-trained models lose {min(drops):.1f}-{max(drops):.1f} points of accuracy on "
               f"average under the 15 CIFAR-10-C corruptions (five severities each); every corruption leaves at least "
               f"{min(fewest):,} failures among its 50,000 images, far more than the 1,000 a repair collects.")
    finding = Finding(finding, f"{min(drops):.1f}-{max(drops):.1f} points of accuracy on average under the 15 "
                               f"corruptions ({len(res)} models); at least {min(fewest):,} failures per corruption")
    t = table(["model", "clean (%)", "mean over the 15 (%)", "mean over the 4 held-out (%)", "worst of the 15 (%)",
               "failures per corruption (of 50,000)"], rows)
    return f"{finding}\n\n{t}\n\n{src}\n", finding


def models_block() -> str:
    """docs/models.md's table of the committed checkpoints, as they record their own pre-training
    (the `rq1` bench folder's models.json)."""
    models = load("rq1/models.json")["models"]
    src = ("Source: [`rq1/models.json`](rq1/models.json) (each checkpoint's own training record, read by "
           f"`{NOW['rq1']}`).")
    rows = [[a, m["epochs"], f"{100 * m['clean_accuracy']:.2f}%", f"{m['train_seconds'] / 60:.1f} min",
             f"{m['median_epoch_seconds']:.0f} s", f"{m['epochs'] * m['median_epoch_seconds'] / 60:.1f} min",
             f"`{m['train_command']}`"] for a, m in models.items()]
    return (table(["model", "epochs", "clean test accuracy", "wall-clock (sum of epochs)", "median epoch",
                   "epochs x median", "command"], rows) + f"\n\n{src}\n")


# -- 1. repair vs baselines ---------------------------------------------------------------------
def bench_cells() -> tuple[list[dict], dict]:
    cells = [json.loads(p.read_text()) for p in sorted((RESULTS / "cpu" / "cells").glob("*.json"))]
    return cells, load("cpu/profile.json")


def repair_runs() -> tuple[list[dict], str, str]:
    """The repair comparison's runs (corruption, variant, seed, de, clean, brk) from the `repair` bench
    folder's cells (every seed done), its source line and DeepRepair's name there."""
    cells, prof = bench_folder("repair")
    runs = [{"corruption": c["corruption"], "variant": c["method"], "seed": c["seed"],
             "de": c["metrics"]["de_after"], "clean": c["metrics"]["clean_after"],
             "brk": c["metrics"]["break_rate"]} for c in cells if c["method"] != "original"]
    return runs, bench_source("repair", cells, prof), "deeprepair"


def section_repair() -> tuple[str, str]:
    cells, prof = bench_cells()
    de = {(c["arch"], c["corruption"], c["method"]): c["metrics"].get("de_after") for c in cells}
    pairs = [(k[:2], v, de.get((*k[:2], "augmix")), de.get((*k[:2], "finetune")))
             for k, v in de.items() if k[2] == "deeprepair"]
    vs_aug = [d - a for _, d, a, _ in pairs if a is not None]
    vs_ft = [d - f for _, d, _, f in pairs if f is not None]
    arch = "resnet-20"
    rows, means = [], {}
    methods = prof["methods"] + prof.get("ablation", [])
    for m in methods:
        cs = [c for c in cells if c["arch"] == arch and c["method"] == m]
        if not cs:
            continue
        cross = [mean(v for j, v in c["cross"].items() if j != c["corruption"]) for c in cs if len(c["cross"]) > 1]
        means[m] = mean(c["metrics"].get("de_after", 0.0) for c in cs)
        rows.append([NAMES.get(m, m), len(cs), f"{100 * means[m]:.2f}",
                     f"{100 * mean(c['metrics']['clean_after'] for c in cs):.2f}",
                     "-" if m == "original" else f"{100 * mean(c['metrics']['break_rate'] for c in cs):.2f}",
                     f"{100 * mean(cross):.2f}" if cross else "-"])
    best = max((m for m in means if m != "original"), key=means.get)
    finding = (f"With 1,000 collected failures, DeepRepair repairs more held-out failures (De) than AugMix in "
               f"{sum(x > 0 for x in vs_aug)} of {len(vs_aug)} model x corruption cells ({100 * mean(vs_aug):+.1f} "
               f"points on average) and than plain fine-tuning on Dt + Dc in {sum(x > 0 for x in vs_ft)} of "
               f"{len(vs_ft)} ({100 * mean(vs_ft):+.1f}); the highest mean De on {arch} is "
               f"{NAMES.get(best, best)}'s (`{prof['name']}` profile, 1 seed).")
    bench_cmd = (f"deeprepair bench --profile {prof['name']} --data DIR --out benchmarks/results/cpu && "
                 "deeprepair report benchmarks/results/cpu")
    t1 = table(["method", "cells", "De (%)", "clean (%)", "break (%)", "other corruptions' De (%)"], rows)
    recorded = prof.get("provenance") or next((c["provenance"] for c in cells if c.get("provenance")), None)
    where = machine(recorded) if recorded else "**not recorded** in `cpu/profile.json` or the cell files"
    src1 = (f"Source: [`cpu/cells/*.json`](cpu/) ({len(cells)} cells; machine: {where}). Regenerate: `{bench_cmd}`."
            + (f" {PAPER_SPLIT}" if paper_split(cells) else ""))

    mixed, seeded = section_mixed(), section_repair_seeds()
    grid = finding
    # a claim needs seeds: the section opens with the seeded comparison
    finding = Finding(f"{lead(seeded)} Over the whole one-seed grid: {grid[0].lower()}{grid[1:]}",
                      f"at 1,000 failures {seeded.short}; on failures of mixed types {mixed.short}"
                      + ("; the paper's per-failure split" if paper_split(folder_cells("repair") + folder_cells("mixed")) else ""))
    per_arch = defaultdict(set)
    for c in cells:
        per_arch[c["arch"]].add(c["corruption"])
    note1 = (f"Mean over {arch}'s {len(per_arch[arch])} corruptions; the finding counts every model x corruption "
             f"cell ({', '.join(f'{a}: {len(cs)}' for a, cs in per_arch.items())}). Other corruptions' De: the "
             "repaired model on the held-out failures of the model's other corruptions (Fig. 4).")
    body = (f"### Repair vs baselines, over seeds\n\n{seeded}\n"
            f"### Failures of 15 mixed types, over seeds\n\n{mixed}\n"
            f"### Repair vs baselines, one seed, the whole grid\n\n{grid}\n\n{t1}\n\n{note1}\n\n{src1}\n\n"
            f"### Label-free test-time baselines\n\n{section_testtime()}")
    return body, finding


def section_repair_seeds() -> str:
    """The repair comparison over seeds (the `repair` profile)."""
    runs, src, dr = repair_runs()
    seeds = {k: by_seed(runs, k, "variant") for k in ("de", "clean", "brk")}
    order = sorted(seeds["de"], key=lambda v: list(NAMES).index(v[0]) if v[0] in NAMES else 99)
    rows = [[NAMES.get(v[0], v[0]), len(seeds["de"][v]), ms(seeds["de"][v]), ms(seeds["clean"][v]),
             ms(seeds["brk"][v])] for v in order]
    t = table(["method", "seeds", "De (%)", "clean (%)", "break (%)"], rows)
    de = {(r["variant"], r["seed"]): [] for r in runs}
    for r in runs:
        de[(r["variant"], r["seed"])].append(r["de"])
    paired = sorted({s for v, s in de if v == dr})

    def minus(other: str) -> list[float]:  # paired by seed
        return [mean(de[(dr, s)]) - mean(de[(other, s)]) for s in paired if (other, s) in de]
    d_aug, d_ft = minus("augmix"), minus("finetune")
    corr = sorted({r["corruption"] for r in runs})
    n = len(d_ft)
    finding = (f"With {n} seed{'s' * (n != 1)} on resnet-20's {len(corr)} corruptions ({', '.join(corr)}), DeepRepair "
               f"minus AugMix on De is {ms(d_aug)} points and DeepRepair minus fine-tuning {ms(d_ft)} (mean over "
               "corruptions, ± = std over seeds).")
    return Finding(f"{finding}\n\n{t}\n\n{src}\n", f"DeepRepair's De minus AugMix's is {ms(d_aug)} points, minus "
                   f"fine-tuning's {ms(d_ft)} ({n} seeds)")


def folder_cells(name: str) -> list[dict]:
    folder = RESULTS / name
    return [json.loads(p.read_text()) for p in sorted(folder.glob("cells/*.json")) + sorted(folder.glob("dc*/cells/*.json"))]


def seeds_done(cells: list[dict]) -> set:
    """The seeds with every method x corruption x size that any seed has (the original's cells are one
    seed's, so they count only for a profile that repairs nothing, like rq1)."""
    repaired = [c for c in cells if c["method"] != "original"] or cells
    keys = {(c["method"], c["corruption"], c.get("collected")) for c in repaired}
    have = defaultdict(set)
    for c in repaired:
        have[c["seed"]].add((c["method"], c["corruption"], c.get("collected")))
    return {s for s, k in have.items() if k == keys}


def bench_folder(name: str) -> tuple[list[dict], dict | None]:
    """The cells (of every run: ``dc<N>/cells`` too) and profile record of results/<name> once every
    seed of the profile is done; ([], None) before: a study's tables keep the retired files' three
    seeds until then."""
    from deeprepair.bench import load_profile

    cells = folder_cells(name)
    if not cells or not set(load_profile(name)["seeds"]) <= seeds_done(cells):
        return [], None
    folder = RESULTS / name
    record = folder / "profile.json" if (folder / "profile.json").is_file() else next(folder.glob("dc*/profile.json"))
    return cells, json.loads(record.read_text())


def partial(name: str) -> str:
    """A note for a source line when results/<name> holds a run that is not finished yet."""
    from deeprepair.bench import load_profile

    cells = folder_cells(name)
    if not cells:
        return ""
    done = sorted(seeds_done(cells))
    return (f" The `{name}` profile's run is not finished: [`{name}/`]({name}/) holds {len(cells)} cells (seeds "
            f"done: {', '.join(map(str, done)) or 'none'} of {', '.join(map(str, load_profile(name)['seeds']))}); "
            "these tables read it once every seed is done.")


PAPER_SPLIT = ("Split: the paper's, each failure drawn on its own (`split_by: failure`), so a held-out failure "
               "can be a collected photo at another severity (docs/repair.md, \"Leak-free split\"); SUMMARY.md "
               "section 5 is leak-free.")


def paper_split(cells: list[dict]) -> bool:
    """Whether the cells' Dc/De split is the paper's per-failure one (cells made before ``split_by`` was
    recorded used it too)."""
    return all(c.get("split_by", "failure") == "failure" for c in cells if c["method"] != "original")


def bench_source(name: str, cells: list[dict], prof: dict, pattern: str = "cells/*.json") -> str:
    split = f" {PAPER_SPLIT}" if name != "rq1" and paper_split(cells) else ""
    return (f"Source: [`{name}/{pattern}`]({name}/) ({len(cells)} cells; machine: {machine(prof)}). "
            f"Regenerate: `{NOW[name]}`.{split}")


def section_mixed() -> str:
    cells, prof = bench_folder("mixed")
    if cells:  # the mixed profile's cells: De per type is the mixed repair's cross-failure row
        rows = [{"method": c["method"], "seed": c["seed"], "clean": c["metrics"]["clean_after"],
                 "break": c["metrics"]["break_rate"],
                 "de_mean": mean(v for j, v in c["cross"].items() if j != "mixed")}
                for c in cells if c["corruption"] == "mixed" and c["method"] in ("finetune", "augmix", "deeprepair")]
        src = bench_source("mixed", cells, prof)
        types = len({j for c in cells if c["corruption"] == "mixed" for j in c["cross"] if j != "mixed"})
    else:
        d = load("retired/regressions_mixed.json")
        rows = [r for r in d["rows"] if r["method"] in ("finetune", "augmix", "deeprepair")]
        src = source("retired/regressions_mixed.json", d["provenance"], now=NOW["mixed"]) + partial("mixed")
        types = len({k for r in rows for k in r if k.startswith("de_") and k != "de_mean"})
    seeds = {k: by_seed(rows, k, "method") for k in ("de_mean", "clean", "break")}
    out = [[NAMES[m], len(seeds["de_mean"][(m,)]), ms(seeds["de_mean"][(m,)]), ms(seeds["clean"][(m,)]),
            ms(seeds["break"][(m,)])] for m in ("finetune", "augmix", "deeprepair")]
    d_aug = [a - b for a, b in zip(seeds["de_mean"][("deeprepair",)], seeds["de_mean"][("augmix",)])]
    d_ft = [a - b for a, b in zip(seeds["de_mean"][("deeprepair",)], seeds["de_mean"][("finetune",)])]
    finding = (f"One repair on 1,000 failures drawn across {types} corruption types (types not told to the methods): "
               f"DeepRepair minus AugMix on the mean De over the {types} types is {ms(d_aug)} points (higher in "
               f"{sum(x > 0 for x in d_aug)} of {len(d_aug)} seeds), minus fine-tuning {ms(d_ft)} (higher in "
               f"{sum(x > 0 for x in d_ft)} of {len(d_ft)}).")
    t = table(["method", "seeds", f"De, mean over {types} types (%)", "clean (%)", "break (%)"], out)
    return Finding(f"{finding}\n\n{t}\n\n{src}\n", f"{ms(d_aug)} and {ms(d_ft)} ({len(d_aug)} seeds)")


def section_testtime() -> str:
    d = load("retired/regressions_testtime.json")
    rows = d["rows"]
    out, parts = [], []
    for m in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == m]
        de, clean = mean(r["de"] for r in rs), mean(r["clean"] for r in rs)
        out.append([m, len(rs), f"{100 * de:.1f}", f"{100 * clean:.1f}", f"{100 * mean(r['break'] for r in rs):.1f}"])
        parts.append((m, de, clean))
    before = mean(r["clean_before"] for r in rows)
    finding = (f"Without labels, {' and '.join(f'`{m}` repairs {100 * de:.1f}%' for m, de, _ in parts)} of the "
               f"held-out failures, but clean accuracy falls to {' and '.join(f'{100 * c:.1f}%' for _, _, c in parts)} "
               f"(the original: {100 * before:.2f}%)"
               + (": they adapt the model to the shift instead of repairing it." if max(c for _, _, c in parts) < before - 0.05
                  else "."))
    t = table(["method", "runs", "De (%)", "clean (%)", "break (%)"], out)
    return f"{finding}\n\n{t}\n\nMean over {len({r['corruption'] for r in rows})} corruptions, deterministic.\n\n" \
           f"{source('retired/regressions_testtime.json', d['provenance'])}\n"


# -- 2. few failures ----------------------------------------------------------------------------
def section_fewdc() -> tuple[str, str]:
    cells, prof = bench_folder("fewdc")
    if cells:  # the fewdc profile's runs, one folder per size
        sizes = {c["hash"]: c.get("collected") for c in cells}
        rows = [{"corruption": c["corruption"], "method": c["method"], "size": sizes[c["hash"]], "seed": c["seed"],
                 "de": c["metrics"]["de_after"], "best_epoch": c.get("repair", {}).get("best_epoch")}
                for c in cells if c["method"] != "original"]
        src = (f"{bench_source('fewdc', cells, prof, 'dc*/cells/*.json')} "
               "Figure: [`fewdc/figures/fewdc-curve.png`](fewdc/figures/fewdc-curve.png).")
    else:
        d = load("retired/regressions_fewdc.json")
        rows = [r for r in d["rows"] if "(" not in r["method"]]  # `holdout` selection; "(last)" rows are partial
        src = (f"{source('retired/regressions_fewdc.json', d['provenance'], now=NOW['fewdc'])} "
               "Figure: [`retired/regressions_fewdc.png`](retired/regressions_fewdc.png)." + partial("fewdc"))
    sizes = sorted({r["size"] for r in rows})
    methods = [m for m in ("finetune", "augmix", "deeprepair") if any(r["method"] == m for r in rows)]
    de = {(r["method"], r["size"], r["corruption"], r["seed"]): r["de"] for r in rows}
    out = []
    for m in methods:
        out.append([NAMES[m]] + [f"{100 * mean(v for k, v in de.items() if k[0] == m and k[1] == s):.1f}" for s in sizes])
    wins = {}
    for other in ("augmix", "finetune"):
        row = [f"DeepRepair > {'fine-tune' if other == 'finetune' else NAMES[other]} (pairs)"]
        for s in sizes:
            keys = [k for k in de if k[0] == "deeprepair" and k[1] == s and ("augmix", *k[1:]) in de]
            w = sum(de[k] > de[(other, *k[1:])] for k in keys)
            wins[(other, s)] = (w, len(keys))
            row.append(f"{w}/{len(keys)}")
        out.append(row)
    mid = [s for s in sizes if 25 < s < 1000]
    fa = sum(wins[("augmix", s)][0] for s in mid), sum(wins[("augmix", s)][1] for s in mid)
    ff = sum(wins[("finetune", s)][0] for s in mid), sum(wins[("finetune", s)][1] for s in mid)
    finding = (f"With {min(mid)}-{max(mid)} collected failures DeepRepair repairs more held-out failures than "
               f"fine-tuning in {ff[0]} of {ff[1]} (corruption, seed) pairs and than AugMix in {fa[0]} of {fa[1]}; "
               f"at {max(sizes):,} failures it beats fine-tuning in {wins[('finetune', max(sizes))][0]} of "
               f"{wins[('finetune', max(sizes))][1]}.")
    finding = Finding(finding, f"at {min(mid)}-{max(mid)} failures DeepRepair repairs more of De than fine-tuning in "
                               f"{ff[0]} of {ff[1]} (corruption, seed) pairs and than AugMix in {fa[0]} of {fa[1]}"
                               + ("; the paper's per-failure split" if cells and paper_split(cells) else ""))
    t = table(["De (%) at \\|Dc\\| =", *map(str, sizes)], out)
    corr = sorted({r["corruption"] for r in rows})
    note = (f"Mean over {len(corr)} corruptions x {len({r['seed'] for r in rows})} seeds, resnet-20, model selection "
            "`holdout`" + ("." if cells else " (the `--selection last` rows of the source are left out)."))
    if cells:
        note += " " + fewdc_detail(rows, de, mid)
    body = f"{finding}\n\n{t}\n\n{note}\n\n{src}\n"
    return body, finding


def fewdc_detail(rows: list[dict], de: dict, mid: list[int]) -> str:
    """Per corruption, DeepRepair against AugMix at the middle sizes, and how often ``holdout`` kept the
    unchanged original at the smallest size (the finding behind ``--selection auto``)."""
    per = []
    for c in sorted({r["corruption"] for r in rows}):
        keys = [k for k in de if k[0] == "deeprepair" and k[1] in mid and k[2] == c and ("augmix", *k[1:]) in de]
        per.append(f"{c} {sum(de[k] > de[('augmix', *k[1:])] for k in keys)}/{len(keys)}")
    n = min(r["size"] for r in rows)
    small = [r for r in rows if r["size"] == n]
    kept = (f" At {n} failures `holdout` kept the unchanged original (epoch 0) in "
            f"{sum(r['best_epoch'] == 0 for r in small)} of {len(small)} runs."
            if all(r["best_epoch"] is not None for r in small) else "")
    return f"Per corruption at {min(mid)}-{max(mid)} failures, DeepRepair beats AugMix in (pairs): {', '.join(per)}.{kept}"


def section_selection() -> str:
    """``holdout`` vs ``last`` model selection at few failures (the "(last)" rows of fewdc)."""
    d = load("retired/regressions_fewdc.json")
    last = [r for r in d["rows"] if r["method"].endswith(" (last)")]
    corr = sorted({r["corruption"] for r in last})
    sizes = sorted({r["size"] for r in last})
    hold = [r for r in d["rows"] if "(" not in r["method"] and r["corruption"] in corr and r["size"] in sizes]
    out, diffs = [], []
    for m in ("finetune", "augmix", "deeprepair"):
        for n in sizes:
            h = [r for r in hold if r["method"] == m and r["size"] == n]
            la = [r for r in last if r["method"] == f"{m} (last)" and r["size"] == n]
            hd, ld = by_seed(h, "de", "size")[(n,)], by_seed(la, "de", "size")[(n,)]
            hb, lb = by_seed(h, "break", "size")[(n,)], by_seed(la, "break", "size")[(n,)]
            diffs.append((n, mean(ld) - mean(hd)))
            out.append([NAMES[m].split(" (")[0], n, ms(hd), ms(ld), ms(hb), ms(lb)])
    smallest = [x for n, x in diffs if n == min(sizes)]
    finding = (f"At {min(sizes)} failures, keeping the last epoch instead of the best on the validation split "
               f"changes mean De by {min(smallest) * 100:+.1f} to {max(smallest) * 100:+.1f} points"
               f"{' (higher for every method)' if min(smallest) > 0 else ''}; "
               f"at {', '.join(str(n) for n in sizes if n != min(sizes))} the differences range "
               f"{100 * min(x for n, x in diffs if n != min(sizes)):+.1f} to {100 * max(x for n, x in diffs if n != min(sizes)):+.1f}.")
    t = table(["method", "\\|Dc\\|", "De, holdout (%)", "De, last (%)", "break, holdout (%)", "break, last (%)"], out)
    return (f"{finding}\n\n{t}\n\nOn {', '.join(corr)}, 3 seeds (± = std over seeds of the mean over the "
            f"corruptions). {source('retired/regressions_fewdc.json', d['provenance'])}\n")


# -- 3. regressions and routed repair -----------------------------------------------------------
def meets(de_gain_kept: float, brk: float, clean: float, clean_before: float) -> bool:
    return brk <= 0.01 and clean >= clean_before and de_gain_kept >= 0.9


def section_control() -> tuple[str, str]:
    d = load("retired/regressions_control.json")
    rows = d["rows"]
    base = {(r["method"], r["corruption"], r["seed"]): r for r in rows if r["control"] == "none"}
    for r in rows:
        b = base[(r["method"], r["corruption"], r["seed"])]
        gain = b["de"] - b["de_before"]
        r["kept"] = (r["de"] - r["de_before"]) / gain if gain > 0 else float("nan")
        r["ok"] = meets(r["kept"], r["break"], r["clean"], r["clean_before"])
    groups = defaultdict(list)
    for r in rows:
        groups[(r["method"], r["control"])].append(r)
    out, best = [], (0, None)
    for (m, c), rs in groups.items():
        seeds = {k: by_seed(rs, k, "method")[(m,)] for k in ("de", "clean", "break")}
        ok = sum(r["ok"] for r in rs)
        best = max(best, (ok, f"{NAMES[m].split(' (')[0]} with `{c}`"), key=lambda x: x[0])
        out.append([NAMES[m], c, ms(seeds["de"]), ms(seeds["clean"]), ms(seeds["break"]),
                    f"{100 * mean(r['kept'] for r in rs):.0f}%", f"{ok}/{len(rs)}"])
    brk = [mean(r["break"] for r in rs) for (m, c), rs in groups.items() if c == "none"]
    finding = (f"Uncontrolled repairs break {100 * min(brk):.1f}-{100 * max(brk):.1f}% of the clean images the "
               f"original got right, and at the comparison's budget (2 epochs over 5,000 training images + Dc) no "
               f"regression control meets the target ({TARGET}) in more than {best[0]} of 15 (corruption, seed) "
               f"cells (best: {best[1]}).")
    finding = Finding(finding, f"uncontrolled repairs break {100 * min(brk):.1f}-{100 * max(brk):.1f}% of the clean "
                               f"images; at the comparison's budget no control meets the target ({TARGET}) in more "
                               f"than {best[0]} of 15 cells")
    t = table(["method", "control", "De (%)", "clean (%)", "break (%)", "De gain kept", "cells meeting the target"], out)
    return (f"{finding}\n\n{t}\n\n{source('retired/regressions_control.json', d['provenance'])}\n"), finding


def section_routers() -> tuple[str, str]:
    """Thresholds (gate_calibration*.json) and routers (gate_routers.json) at the short budget."""
    out, srcs = [], []
    for name in ("retired/gate_calibration.json", "retired/gate_calibration_finetune.json"):
        d = load(name)
        m = "finetune" if "--method finetune" in d["provenance"]["command"] else "deeprepair"
        srcs.append(source(name, d["provenance"]))
        for v in dict.fromkeys(r["variant"] for r in d["rows"]):
            g = [r for r in d["rows"] if r["variant"] == v]
            if v == "none":
                continue
            seeds = {k: by_seed(g, k, "variant")[(v,)] for k in ("de", "clean", "break")}
            out.append([NAMES[m].split(" (")[0], "linear", f"calibration `{v}`", ms(seeds["de"]), ms(seeds["clean"]),
                        ms(seeds["break"]), f"{100 * mean(r['kept'] for r in g):.1f}%",
                        f"{sum(r['break'] <= 0.01 for r in g)}/{len(g)}",
                        f"{sum(meets(r['kept'], r['break'], r['clean'], r['clean_before']) for r in g)}/{len(g)}"])
    d = load("retired/gate_routers.json")
    srcs.append(source("retired/gate_routers.json", d["provenance"], f"python benchmarks/gate_rules.py && {command(d['provenance'])}"))
    rs = [r for r in d["rows"] if "full_de" in r]
    for m in dict.fromkeys(r["method"] for r in rs):
        for router in ("linear", "mlp+style"):
            for rule in ("`--gate` rule", "`--gate-keep 0.9` rule"):
                g = [r for r in rs if (r["method"], r["router"], r["rule"]) == (m, router, rule)]
                if not g:
                    continue
                for r in g:
                    r.update(de=r["full_de"], clean=r["full_clean"], brk=r["full_break"])
                seeds = {k: by_seed(g, k, "method")[(m,)] for k in ("de", "clean", "brk")}
                out.append([NAMES[m].split(" (")[0], router, rule.strip("`").replace("` rule", " rule"),
                            ms(seeds["de"]), ms(seeds["clean"]), ms(seeds["brk"]),
                            f"{100 * mean(r['full_kept'] for r in g):.1f}%",
                            f"{sum(r['full_break'] <= 0.01 for r in g)}/{len(g)}",
                            f"{sum(meets(r['full_kept'], r['full_break'], r['full_clean'], r['full_clean_before']) for r in g)}/{len(g)}"])
    best = max(out, key=lambda r: int(r[-1].split("/")[0]))
    held = {(r[0], r[2]): r[7] for r in out if r[2].startswith("calibration")}
    first, wilson = "calibration `val-1000 point`", "calibration `cal-5000 wilson`"
    finding = (f"At the comparison's budget, calibrating `--gate`'s threshold on 5,000 more images with a Wilson "
               f"bound holds the 1% break limit in {' and '.join(held[(m, wilson)] for m in ('DeepRepair', 'fine-tune'))} "
               f"cells (DeepRepair, fine-tune) against {' and '.join(held[(m, first)] for m in ('DeepRepair', 'fine-tune'))} "
               f"with 1,000 images and a point estimate, but no threshold rule or router meets the whole target in more "
               f"than {best[-1].split('/')[0]} of 15 cells (best: {best[0]}, {best[1]} router, {best[2]}).")
    t = table(["method", "router", "threshold", "De (%)", "clean (%)", "break (%)", "De gain kept",
               "break <= 1%", "cells meeting the target"], out)
    return (f"{finding}\n\n{t}\n\nWhole clean test set and all of De (these rules read no test image); "
            "± = std over seeds of the mean over the five corruptions. The `gate_routers` rows use today's "
            "`--gate` defaults (`--gate-calibration 5000 --gate-bound wilson`).\n\n"
            + "\n".join(f"- {x}" for x in srcs) + "\n"), finding


def gate_files() -> list[str]:
    return sorted(f"retired/{p.name}" for p in (RESULTS / "retired").glob("gate_routers_dt*.json"))


def section_gate() -> tuple[str, str]:
    out, winners, short = [], [], []
    srcs = []
    for name in gate_files():
        d = load(name)
        rules_name = name.replace("gate_routers", "gate_rules")
        rules_cmd = load(rules_name)["provenance"]["command"] if (RESULTS / rules_name).is_file() else None
        srcs.append(source(name, d["provenance"], (f"{rules_cmd} && " if rules_cmd else "") + command(d["provenance"])))
        cmd = d["provenance"]["command"]
        budget = " ".join(re.findall(r"--(?:train-subset|epochs|dc-repeat|distill) \S+", cmd))
        rs = [r for r in d["rows"] if "full_de" in r]
        for m in sorted({r["method"] for r in rs}):
            for router, rule in (("none", "alone"), ("linear", "`--gate` rule"), ("mlp+style", "`--gate` rule")):
                g = [r for r in rs if r["method"] == m and r["router"] == router and r["rule"] == rule]
                if not g:
                    continue
                per_seed = defaultdict(list)
                for r in g:
                    per_seed[r["seed"]].append(r)
                seed_ok = sum(meets(mean(r["full_kept"] for r in s), mean(r["full_break"] for r in s),
                                    mean(r["full_clean"] for r in s), mean(r["full_clean_before"] for r in s))
                              for s in per_seed.values())
                cells = sum(meets(r["full_kept"], r["full_break"], r["full_clean"], r["full_clean_before"]) for r in g)
                label = "alone" if router == "none" else f"`--gate --gate-router {router.replace('+style', ' --gate-features deep+style')}`" if router != "linear" else "`--gate`"
                if router != "none" and seed_ok == len(per_seed):
                    extra = " ".join(re.findall(r"--distill \S+", cmd))
                    winners.append(f"{NAMES[m].split(' (')[0]}{' with `' + extra + '`' if extra else ''} behind "
                                   f"the `{router}` router ({len(per_seed)} seeds, {machine(d['provenance'])})")
                    short.append(f"{NAMES[m].split(' (')[0]}{' `' + extra + '`' if extra else ''} "
                                 f"({machine(d['provenance']).split(' ')[0].split('(')[0]})")
                out.append([NAMES[m], budget, label,
                            ms([mean(r["full_de"] for r in s) for s in per_seed.values()]),
                            ms([mean(r["full_clean"] for r in s) for s in per_seed.values()]),
                            f"{100 * mean(r['full_clean_before'] for r in g):.2f}",
                            ms([mean(r["full_break"] for r in s) for s in per_seed.values()]),
                            "-" if router == "none" else f"{100 * mean(r['full_kept'] for r in g):.1f}%",
                            "-" if router == "none" else f"{cells}/{len(g)}",
                            "-" if router == "none" else f"{seed_ok}/{len(per_seed)}",
                            machine(d["provenance"])])
    finding = ("With longer repairs (40,000 training images, 1 epoch, Dc repeated 4 times), routed repair meets the "
               f"target on the mean of every seed only for {' and for '.join(winners) if winners else 'no method'}.")
    finding = Finding(finding, "a longer repair behind a router meets it on every seed's mean for "
                               + (" and ".join(short) if short else "no method"))
    t = table(["method", "budget", "control", "De (%)", "clean (%)", "original clean (%)", "break (%)",
               "De gain kept", "cells meeting the target", "seeds meeting it on their mean", "machine"], out)
    machines = "Machines differ between files: the seeds were mined and repaired on each machine separately."
    return (f"{finding}\n\n{t}\n\nWhole clean test set and all of De; ± = std over seeds of the mean over the "
            f"five corruptions. {machines}\n\n" + "\n".join(f"- {s}" for s in srcs) + "\n"), finding


# -- 4. speed -----------------------------------------------------------------------------------
def section_speed() -> tuple[str, str]:
    cs, cg, au = load("corruption_speed.json"), load("corruption_generate.json"), load("augment_speed.json")
    tr, inf = load("train_speed.json"), load("inference_speed.json")
    s = cs["summary"]
    rows = [
        ["batched corruptions vs the per-image reference (15 corruptions, harmonic mean)",
         f"{s['harmonic_mean_speedup']:.1f}x (target {s['target_harmonic_mean']:.0f}x; slowest "
         f"{s['min_speedup_corruption']} {s['min_speedup']:.1f}x)", "corruption_speed.json", cs["provenance"]],
        ["rendering CIFAR-10-C (15 x 5 x 10,000 images)", f"{cg['wall_seconds']:.0f} s",
         "corruption_generate.json", cg["provenance"]],
        ["batched AugMix vs the per-image PIL reference", f"{au['batched'] / au['per_image']:.1f}x",
         "augment_speed.json", au["provenance"]],
        ["style ops' share of a DeepRepair training step (resnet-20)", f"{100 * au['style_share']:.1f}% (target <= 10%)",
         "augment_speed.json", au["provenance"]],
    ]
    for model, modes in tr["img_per_s"].items():
        fastest = max((k for k in modes if "jsd" not in k), key=modes.get)
        rows.append([f"training {model}, img/s (fp32 -> fastest, `{fastest}`)",
                     f"{modes['fp32']:.0f} -> {modes[fastest]:.0f}", "train_speed.json", tr["provenance"]])
    rs = load("repair_speed.json")
    if "ratios" in rs:  # issue 34: each variant against the plain PyTorch loop of equal work
        for m, r in rs["ratios"].items():
            rows.append([f"one repair, `{m}` vs the plain PyTorch loop ({r['plain']}; resnet-20, 1,000 fog failures, "
                         "fastest of interleaved repeats)", f"{r['ours_s']:.0f} s vs {r['plain_s']:.0f} s = "
                         f"{r['ratio']:.2f}x (target <= {r['target']:.1f}x)", "repair_speed.json", rs["provenance"]])
    else:
        rows.append(["one repair, the default recipe vs `--preset paper` (resnet-20, 1,000 fog failures, median wall)",
                     f"{rs['median_wall_s']['protect (default)']:.0f} s vs {rs['median_wall_s']['paper']:.0f} s = "
                     f"{rs['ratio']:.2f}x (target <= 1x)", "repair_speed.json", rs["provenance"]])
    for r in inf["rows"]:
        rows.append([f"inference {r['model']}, img/s (default -> `keep_heap`)",
                     f"{r['default_heap']:.0f} -> {r['keep_heap']:.0f}", "inference_speed.json", inf["provenance"]])
    finding = (f"The batched corruptions run {s['harmonic_mean_speedup']:.1f}x the per-image reference "
               f"({'meeting' if s['pass'] else 'missing'} the {s['target_harmonic_mean']:.0f}x target), "
               f"CIFAR-10-C renders in {cg['wall_seconds']:.0f} s, and the style ops take "
               f"{100 * au['style_share']:.1f}% of a DeepRepair step.")
    finding = Finding(finding, f"corruptions {s['harmonic_mean_speedup']:.1f}x the per-image reference; style ops "
                               f"{100 * au['style_share']:.1f}% of a step; " + (
                                   f"the default repair {rs['ratios']['default']['ratio']:.2f}x the plain PyTorch loop"
                                   if "default" in rs.get("ratios", {}) else
                                   f"the default repair {rs['ratio']:.2f}x the paper's wall time"))
    t = table(["what", "measured", "source", "machine"],
              [[w, v, f"[`{n}`]({n})", machine(p)] for w, v, n, p in rows])
    cmds = []
    for n in dict.fromkeys(r[2] for r in rows):
        p = load(n)["provenance"]
        cmds.append(f"- `{n}` (commit {p['commit']}, {p['date'][:10]}): `{command(p)}`")
    return f"{finding}\n\n{t}\n\nRegenerate:\n\n" + "\n".join(cmds) + "\n", finding


# -- 5. the net effect of a repair (issue 22) --------------------------------------------------------
NET_NAMES = {"dr-focal": "DeepRepair + focal distillation", "dr-fb-focal": "DeepRepair, first block + focal distillation",
             "dr-first-block": "DeepRepair, first block", "ft-focal": "fine-tune + focal distillation",
             "dr-focal+field": "DeepRepair + focal distillation + field photos",
             "dr-fb-focal+field": "DeepRepair, first block + focal distillation + field photos",
             "ft-focal+field": "fine-tune + focal distillation + field photos",
             "dr-focal+interp": "DeepRepair + focal distillation, interpolated",
             "ft-focal+interp": "fine-tune + focal distillation, interpolated (`protect`, the default)",
             "dr-safe": "DeepRepair --safe (routed: two networks and a router)",
             "dr-focal+field+interp": "DeepRepair + focal distillation + field photos, interpolated (--interpolate)",
             "dr-focal+pseudo+interp": "DeepRepair + focal distillation + field photos as pseudo-labels, interpolated",
             "ft-focal+pseudo+interp": "fine-tune + focal distillation + field photos as pseudo-labels, interpolated"}


def net_cells(name: str) -> tuple[list[dict], dict | None]:
    """The cells and profile record of the bench folder benchmarks/results/<name> (empty if absent)."""
    folder = RESULTS / name
    if not (folder / "profile.json").is_file():
        return [], None
    return [json.loads(p.read_text()) for p in sorted((folder / "cells").glob("*.json"))], load(f"{name}/profile.json")


def per_seed(cells: list[dict], get) -> dict[str, list[float]]:
    """{method: [per-seed mean over the cell's corruptions of get(metrics)]}, seeds with every corruption."""
    acc: dict = defaultdict(lambda: defaultdict(dict))
    for c in cells:
        v = get(c["metrics"])
        if v is not None:
            acc[c["method"]][c["seed"]][c["corruption"]] = v
    corrs = {c["corruption"] for c in cells}
    return {m: [mean(v.values()) for _, v in sorted(s.items()) if set(v) == corrs] for m, s in acc.items()}


# the columns of the bench report's "What a user lives with" table: (label, getter on a cell's metrics)
NET_COLUMNS = LIVES_WITH


def net_table(cells: list[dict], prof: dict) -> tuple[str, dict]:
    """Per method: the NET_COLUMNS (in points: every figure is a fraction or a difference of two),
    mean ± sample std over seeds; the original's row gives the before values."""
    cols = {label: per_seed(cells, get) for label, get in NET_COLUMNS}
    used = [label for label, _ in NET_COLUMNS if any(cols[label].values())]
    before = {NET_COLUMNS[0][0]: per_seed(cells, lambda m: m["shifted"]["before"]),
              "clean, not in Dc (%)": per_seed(cells, lambda m: m.get("clean_unseen", {}).get("before", m["clean_before"]))}
    first = {k: next((v for v in b.values() if v), []) for k, b in before.items()}
    rows = [["original (before)", len(first[NET_COLUMNS[0][0]])] + [ms(first[k]) if k in first else "-" for k in used]]
    listed = prof["methods"] + prof.get("ablation", [])
    probes = [m for m in cols[NET_COLUMNS[0][0]] if m not in listed]  # cells of methods since dropped
    for m in listed + probes:
        if m != "original" and cols[NET_COLUMNS[0][0]].get(m):
            rows.append([NET_NAMES.get(m, NAMES.get(m, m)) + (" (probe, not in the profile)" if m in probes else ""),
                         len(cols[NET_COLUMNS[0][0]][m])] + [ms(cols[k][m]) if cols[k].get(m) else "-" for k in used])
    return table(["method", "seeds"] + used, rows), cols


BASELINES = ("finetune", "augmix", "deeprepair")  # today's methods; deeprepair is today's default


def verdict(ok: bool | None, text: str) -> str:
    return "-" if ok is None else f"{'**met**' if ok else 'missed'} ({text})"


def per_cell(cells: list[dict], get) -> dict:
    """{method: {corruption: [values over seeds]}}."""
    acc: dict = defaultdict(lambda: defaultdict(list))
    for c in cells:
        v = get(c)
        if v is not None:
            acc[c["method"]][c["corruption"]].append(v)
    return acc


def targets_cinic(cells: list[dict], prof: dict) -> str:
    """Issue 22's real-failure targets for every method: held-out photos >= the original's
    (+2 points with field photos), CIFAR-10 break <= 1% (means over seeds)."""
    change = per_seed(cells, lambda m: m["shifted"]["after"] - m["shifted"]["before"])
    brk = per_seed(cells, lambda m: m["break_rate"])
    rows = []
    for m in prof["methods"]:
        if m == "original" or not change.get(m):
            continue
        field = METHOD_OPTIONS[m].get("field", False)
        need = 0.02 if field else 0.0
        tie = len(change[m]) > 1 and abs(mean(change[m]) - need) < statistics.stdev(change[m])
        rows.append([NET_NAMES.get(m, NAMES.get(m, m)), len(change[m]),
                     verdict(mean(change[m]) >= need, f"{ms(change[m])} points, target >= {need * 100:+.0f}"
                             + ("; within the spread over seeds: a tie" if tie else "")),
                     verdict(mean(brk[m]) <= 0.01, f"{ms(brk[m])}%")])
    return table(["method", "seeds", "held-out photos vs the original", "CIFAR-10 break <= 1%"], rows)


def targets_leakfree(cells: list[dict], prof: dict) -> str:
    """Issue 22's CIFAR-10-C targets for every method (each corruption's mean over seeds)."""
    clean = per_cell(cells, lambda c: c["metrics"].get("clean_unseen", {}).get("after"))
    clean0 = per_cell(cells, lambda c: c["metrics"].get("clean_unseen", {}).get("before"))
    brk = per_cell(cells, lambda c: c["metrics"].get("clean_unseen", {}).get("break_rate"))
    de = per_seed(cells, lambda m: m.get("de_after"))
    shifted = per_seed(cells, lambda m: m["shifted"]["after"])
    other = per_seed(cells, lambda m: (m["elsewhere"]["after"] - m["elsewhere"]["before"]) if "elsewhere" in m else None)
    secs = per_cell(cells, lambda c: c["repair"].get("seconds"))
    corrs = sorted({c["corruption"] for c in cells})
    rows = []
    for m in prof["methods"]:
        if m == "original" or not shifted.get(m):
            continue
        done = [c for c in corrs if clean[m].get(c)]
        ok_b = [c for c in done if mean(brk[m][c]) <= 0.01]
        ok_c = [c for c in done if mean(clean[m][c]) >= mean(clean0[m][c])]
        base = {b: mean(shifted[b]) for b in BASELINES if b != m and shifted.get(b)}
        t_sec = mean(v for c in done for v in secs["deeprepair"].get(c, [])) if secs.get("deeprepair") else None
        m_sec = mean(v for c in done for v in secs[m][c])
        rows.append([NET_NAMES.get(m, NAMES.get(m, m)), f"{len(done)}/{len(corrs)}",
                     verdict(len(ok_b) == len(done) and len(ok_c) == len(done),
                             f"break <= 1% in {len(ok_b)}, clean >= original in {len(ok_c)} of {len(done)}"),
                     verdict(mean(de[m]) >= mean(de["finetune"]), f"{ms(de[m])} vs {ms(de['finetune'])}")
                     if de.get("finetune") and m != "finetune" else "-",
                     verdict(all(mean(shifted[m]) > v for v in base.values()),
                             f"{ms(shifted[m])} vs best baseline {max(base.values()) * 100:.2f}") if base else "-",
                     verdict(mean(other[m]) >= -0.01, f"{ms(other[m])} points") if other.get(m) else "-",
                     verdict(m_sec <= t_sec, f"{m_sec:.0f} s vs {t_sec:.0f} s") if t_sec and m not in BASELINES
                     else "-"])
    return table(["method", "corruptions", "break <= 1% and clean >= original, each corruption",
                  "De >= fine-tuning's", "never-seen shifted > every baseline", "other corruptions within 1 point",
                  "wall time <= today's default (deeprepair), for a new recipe"], rows)


def validation_choice(cells: list[dict], max_break: float = 0.01) -> tuple[str, str | None]:
    """The recipe a user would pick from validation numbers alone (never De or the test set):
    per method, the returned network on the held-back Dt and Dc images (``validation_final`` of
    each cell: break rate on Dt, accuracy on Dc's held-out tenth), and the one network with the
    highest validation repair among those whose mean validation break rate is <= ``max_break``."""
    acc: dict = defaultdict(lambda: defaultdict(list))
    has = defaultdict(set)  # method -> the (corruption, seed) cells with the record
    for c in cells:
        if (c.get("repair", {}).get("validation_final") or {}).get("val_break") is not None:
            has[c["method"]].add((c["corruption"], c["seed"]))
    common = set.intersection(*has.values()) if has else set()  # paired: the same cells for every method
    for c in cells:
        v = c.get("repair", {}).get("validation_final") or {}
        if (c["corruption"], c["seed"]) in common and v.get("val_break") is not None:
            for k in ("val_break", "val_failures_acc", "val_train_acc"):
                if v.get(k) is not None:
                    acc[c["method"]][k].append(v[k])
    if not acc:
        return "", None
    ok = {m: mean(a["val_break"]) <= max_break and m != "dr-safe" and bool(a["val_failures_acc"]) for m, a in acc.items()}
    best = max((m for m in acc if ok[m]), key=lambda m: mean(acc[m]["val_failures_acc"]), default=None)
    rows = [[NET_NAMES.get(m, NAMES.get(m, m)), len(a["val_break"]), ms(a["val_break"]),
             ms(a["val_failures_acc"]) if a["val_failures_acc"] else "-", ms(a["val_train_acc"]),
             "two networks" if m == "dr-safe" else ("**chosen**" if m == best else ("yes" if ok[m] else "no"))]
            for m, a in sorted(acc.items(), key=lambda kv: -mean(kv[1]["val_failures_acc"] or [0]))]
    return table(["method", "cells", f"validation break on Dt (%; limit {max_break * 100:.0f}%)",
                  "validation Dc repaired (%)", "validation Dt accuracy (%)", "one network within the limit"], rows), best


def section_few(cells1000: list[dict], prof1000: dict) -> tuple[str, str]:
    """Issue 22's few-failures target: De with |Dc| = 100 (profile leakfree100) >= 80% of what
    plain fine-tuning reaches with |Dc| = 1,000 (profile leakfree)."""
    cells, prof = net_cells("leakfree100")
    de_ft = per_seed(cells1000, lambda m: m.get("de_after")).get("finetune")
    if not prof or not de_ft:
        return ("### Few failures (|Dc| = 100)\n\nNot measured yet: `deeprepair bench --profile leakfree100 --data DIR "
                "--out benchmarks/results/leakfree100`.\n"), ""
    cells = [c for c in cells if isinstance(c["metrics"].get("shifted"), dict)]
    t, cols = net_table(cells, prof)
    de = cols["De (%)"]
    bar = 0.8 * mean(de_ft)
    rows = [[NET_NAMES.get(m, NAMES.get(m, m)), len(de[m]),
             verdict(mean(de[m]) >= bar, f"{ms(de[m])} vs {bar * 100:.2f}")]
            for m in prof["methods"] if m != "original" and de.get(m)]
    share = lambda m: f"{mean(de[m]) / mean(de_ft) * 100:.0f}%"  # noqa: E731
    brk = cols["clean break (%)"]
    finding = (f"With {prof['collect']} collected failures, "
               + "; ".join(f"{NET_NAMES.get(m, NAMES.get(m, m))} reaches De {ms(de[m])}% ({share(m)} of plain "
                           f"fine-tuning's with 1,000; clean break {ms(brk[m])}%, {len(de[m])} seed"
                           f"{'s' * (len(de[m]) != 1)})" for m in prof["methods"] if m != "original" and de.get(m))
               + "; the target is 80%.")
    return (f"### Few failures (|Dc| = {prof['collect']})\n\n{finding}\n\n{t}\n\nIssue 22's target: De >= 80% of plain fine-tuning's "
            f"De with 1,000 failures ({ms(de_ft)} over {len(de_ft)} seed{'s' * (len(de_ft) != 1)}; the De sets differ: "
            "each profile holds out the failures it did not collect):\n\n"
            + table(["method", "seeds", "De >= 80% of fine-tuning's at 1,000"], rows)
            + f"\n\nSource: [`leakfree100/cells/*.json`](leakfree100/) ({len(cells)} cells; machine: {machine(prof)}). "
            "Regenerate: `deeprepair bench --profile leakfree100 --data DIR --out benchmarks/results/leakfree100`.\n"), finding


def section_frontier(de_ft: list[float] | None) -> tuple[str, str]:
    """Why the one-network targets are out of reach: every weight of the straight line from the
    original's weights (0) to a repaired network's (1), scored on the held-out sets (profiles
    frontier and cinic-frontier); ``de_ft``: plain fine-tuning's per-seed De at 1,000 failures."""
    out, findings = [], []
    labels = [label for label, _ in FRONTIER]
    brk, de, change = (labels.index(k) for k in ("clean break (%)", "De (%)", "shifted, change (points)"))
    for name, what in (("frontier", "CIFAR-10-C, leak-free split"), ("cinic-frontier", "real failures (CINIC photos)")):
        cells, prof = net_cells(name)
        pts = frontier_points(cells).get("resnet-20") if prof else None
        if not pts:
            continue
        rows, within = [], []  # within: (value, method, alpha, per-seed values) of the points with break <= 1%
        goal = de if name == "frontier" else change
        for m in [m for m in prof["methods"] if m in pts]:
            for a, seeds in pts[m].items():
                cols = [[s[i] for s in seeds] for i in range(len(FRONTIER))]
                rows.append([NET_NAMES.get(m, NAMES.get(m, m)), f"{a:g}", len(seeds)] + [ms(v) for v in cols])
                if mean(cols[brk]) <= 0.01:
                    within.append((mean(cols[goal]), m, a, cols[goal]))
        v, m, a, vals = max(within, key=lambda t: (t[0], -t[2]))
        who = f"{NET_NAMES.get(m, NAMES.get(m, m))} at weight {a:g}"
        if name == "frontier":
            bar = mean(de_ft) if de_ft else None
            top = max(((mean(s[de] for s in seeds), mean(s[brk] for s in seeds), m, a) for m in pts
                       for a, seeds in pts[m].items()), key=lambda t: t[0])
            f = (f"On {what}, the most De any mix of the original with a repaired network reaches while the clean break "
                 f"rate stays within 1% is {ms(vals)}% ({who})"
                 + (f", against plain fine-tuning's {ms(de_ft)}% at full weight (profile leakfree): "
                    + ("a mix meets both targets" if v >= bar else "on this path the break and De targets exclude each "
                       "other") if bar else "")
                 + f"; without the limit the most De on any path is {top[0] * 100:.2f}% "
                   f"({NET_NAMES.get(top[2], NAMES.get(top[2], top[2]))} at weight {top[3]:g}, clean break "
                   f"{top[1] * 100:.2f}%).")
        else:
            tie = len(vals) > 1 and abs(v) < statistics.stdev(vals)
            paths = {m: max((mean(s[change] for s in seeds), a) for a, seeds in pts[m].items() if a > 0)
                     for m in prof["methods"] if m in pts}
            f = (f"On {what}, the largest change on the photos no method saw at any weight with CIFAR-10 break within 1% "
                 f"is {ms(vals)} points ({who}; target >= +0 from Dc alone)"
                 + (": within the spread over seeds, a tie" if tie else "" if v >= 0 else ": no mix gains there")
                 + "; along each path the best weight is "
                 + ", ".join(f"{a:g} for {NET_NAMES.get(m, NAMES.get(m, m))} ({c * 100:+.2f} points)"
                             for m, (c, a) in paths.items())
                 + (", and the change falls at every step as the weight grows beyond it." if all(
                     all(x > y for x, y in zip(c, c[1:])) for c in
                     ([mean(s[change] for s in seeds) for a, seeds in pts[m].items() if a >= paths[m][1]] for m in paths))
                    else "."))
        findings.append(f)
        out.append(f"{f}\n\n" + table(["method", "weight (0 = original, 1 = repaired)", "seeds"]
                                       + [label for label, _ in FRONTIER], rows)
                   + f"\n\nEach figure: the mean over the profile's corruptions for one seed, then mean ± sample std over "
                   f"seeds; clean break on {'the test images that are not sources of Dc' if name == 'frontier' else 'CIFAR-10' + chr(39) + 's test set'}. "
                   f"Figure: [`{name}/figures/frontier-resnet-20.png`]({name}/figures/frontier-resnet-20.png). "
                   f"Source: [`{name}/cells/*.json`]({name}/) ({len(cells)} cells; machine: {machine(prof)}). "
                   f"Regenerate: `deeprepair bench --profile {name} --data DIR --out benchmarks/results/{name}`.\n")
    if not out:
        return "", ""
    return ("### Why the one-network targets are out of reach: the interpolation path\n\n"
            "`protect` and `--interpolate` return a mix theta = (1 - w) theta_original + w theta_repaired with w chosen "
            "on validation. Here every w of a grid is scored on the held-out sets instead (reported, never used to "
            "choose), to show what any choice of w could reach.\n\n" + "\n".join(out)), " ".join(findings)


def section_net() -> tuple[str, dict[str, str]]:
    """Section 5 and its findings by name (cinic, leakfree, default, few, frontier)."""
    out, findings = [], {}
    cells, prof = net_cells("cinic")
    if prof:
        cells = [c for c in cells if isinstance(c["metrics"].get("shifted"), dict)]
        t, cols = net_table(cells, prof)
        change = cols["change there (points)"]
        worse = [m for m, v in change.items() if m != "original" and v and mean(v) < 0]
        best = max((m for m in change if m != "original" and change[m]), key=lambda m: mean(change[m]))
        probes = sum(1 for m in change if m not in prof["methods"] + prof.get("ablation", []) and change[m])
        f = (f"On real failures (CINIC photos, {prof['collect']} collected, {max(len(v) for v in change.values())} "
             f"seeds), {len(worse)} of {sum(1 for m in change if m != 'original' and change[m])} methods"
             + (f" ({probes} of them one-seed probes)" if probes else "") + " leave the model "
             f"worse on the photos no method saw; the best, {NET_NAMES.get(best, NAMES.get(best, best))}, changes "
             f"accuracy there by {ms(change[best])} points"
             + (f", the default (`protect`) by {ms(change['ft-focal+interp'])}" if change.get("ft-focal+interp")
                and best != "ft-focal+interp" else "") + ".")
        findings["cinic"] = f
        findings["cinic-short"] = (
            f"on real photos {len(worse)} of {sum(1 for m in change if m != 'original' and change[m])} methods leave "
            "the model worse" + (f"; the default changes accuracy there by {ms(change['ft-focal+interp'])} points"
                                 if change.get("ft-focal+interp") else ""))
        note = ("Shifted images = the evaluation half of the photos that are not in Dc (the other half is the "
                "unlabelled field half, given only to the `+ field photos` methods); clean = CIFAR-10's test set. "
                "± = sample std over seeds.")
        note += "\n\nIssue 22's targets (one network; means over seeds):\n\n" + targets_cinic(cells, prof)
        out.append(f"### Real failures (CINIC-10 ImageNet photos)\n\n{f}\n\n{t}\n\n{note}\n\n"
                   f"Source: [`cinic/cells/*.json`](cinic/) ({len(cells)} cells; machine: {machine(prof)}). "
                   f"Regenerate: `deeprepair bench --profile cinic --data DIR --out benchmarks/results/cinic`.\n")
    cells, prof = net_cells("leakfree")
    if prof:
        cells = [c for c in cells if isinstance(c["metrics"].get("shifted"), dict)]
        t, cols = net_table(cells, prof)
        change = cols["change there (points)"]
        done = {m: len(v) for m, v in change.items() if v}
        corr = sorted({c["corruption"] for c in cells})
        f = (f"On CIFAR-10-C with a leak-free split ({len(corr)} corruptions, {prof['collect']} failures collected, "
             f"{max(done.values())} seed{'s' if max(done.values()) > 1 else ''} so far), "
             + "; ".join(f"{NET_NAMES.get(m, NAMES.get(m, m))} changes accuracy on the never-seen shifted images by "
                         f"{ms(change[m])} points" for m in prof["methods"] if m in done and m != "original") + ".")
        findings["leakfree"] = f
        de, brk = cols["De (%)"], cols["clean break (%)"]
        if de.get("ft-focal+interp") and de.get("finetune"):
            findings["leakfree-short"] = (
                f"on CIFAR-10-C it repairs {ms(de['ft-focal+interp'])}% of De at a clean break of "
                f"{ms(brk['ft-focal+interp'])}% (plain fine-tuning: {ms(de['finetune'])}% at {ms(brk['finetune'])}%)")
        out.append(f"### CIFAR-10-C, leak-free split\n\n{f}\n\n{t}\n\nEach figure: the mean over {', '.join(corr)} for "
                   "one seed (seeds with every corruption done), then mean ± sample std over seeds.\n\n"
                   "Issue 22's targets (one network; each corruption's mean over seeds; wall times from the cells, "
                   "measured in one run on one machine while other work shared its cores):\n\n"
                   f"{targets_leakfree(cells, prof)}\n\n"
                   f"Source: [`leakfree/cells/*.json`](leakfree/) ({len(cells)} cells; machine: {machine(prof)}). "
                   f"Regenerate: `deeprepair bench --profile leakfree --data DIR --out benchmarks/results/leakfree`.\n")
        choice, best = validation_choice(cells)
        if choice:
            f = (f"Chosen on validation numbers alone (the repaired network's break rate on 1,000 held-back training "
                 f"images, <= 1%, then the most held-out Dc repaired): {NET_NAMES.get(best, NAMES.get(best, best))}"
                 if best else "On validation numbers alone no one-network recipe keeps the break rate within 1%")
            findings["default"] = f + ("; `protect` is the default of `repair`, the demo and the Python API." if best else ".")
            out.append(f"### The default, chosen on validation only\n\n{f}. The numbers are each cell's `validation_final` "
                       "(the network `repair` returns, after any interpolation) on the validation split that the repair "
                       "itself selects on: 1,000 held-back training images (Dt) and the held-out tenth of Dc; never De "
                       "or the test set. They are optimistic for every method alike (epochs, and `protect`'s mix, are "
                       f"chosen on the same images); only the (corruption, seed) cells that every method has with the record are counted (cells made before it existed are not); ± = sample std over cells.\n\n{choice}\n\n"
                       f"Source: [`leakfree/cells/*.json`](leakfree/) (their `repair.validation_final`; machine: "
                       f"{machine(prof)}). Regenerate: `deeprepair bench --profile leakfree --data DIR --out "
                       "benchmarks/results/leakfree`.\n")
        few, f_few = section_few(cells, prof)
        out.append(few)
        if f_few:
            findings["few"] = f_few
        fr, f_fr = section_frontier(per_seed(cells, lambda m: m.get("de_after")).get("finetune"))
        if fr:
            out.append(fr)
            findings["frontier"] = f_fr
    if not out:
        return "Not measured yet: `deeprepair bench --profile cinic` and `--profile leakfree`.\n", {}
    return "\n".join(out), findings


# -- assembly -----------------------------------------------------------------------------------
TITLES = ["0. Before repair: what do the corruptions cost? (RQ1, Table 1)", "1. Does DeepRepair beat the baselines?",
          "2. With few collected failures?", "3. Regressions: what does repair break, and can routing prevent it?",
          "4. Speed", "5. Net effect: what a user lives with (leak-free; real failures)"]


def anchor(title: str) -> str:
    """The link target GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def build() -> tuple[str, dict[str, str]]:
    rq1, f_rq1 = section_rq1()
    rep, f_rep = section_repair()
    few, f_few = section_fewdc()
    ctl, f_ctl = section_control()
    gate, f_gate = section_gate()
    routers, _ = section_routers()
    speed, f_speed = section_speed()
    net, f_nets = section_net()
    f_net = " ".join(v for k, v in f_nets.items() if not k.endswith("-short"))
    doc = ("# What has been measured\n\n"
           "Generated by `python benchmarks/summary.py` from the JSON files in this folder; do not edit by hand. "
           "Each table opens with its finding (computed from the table), and names its source file, the machine "
           "it ran on and the command that regenerates it. Model: the committed `checkpoints/resnet-20` unless "
           "a table says otherwise. De = accuracy on the held-out failures (0% before repair by construction), "
           "break = share of the clean test images the original got right and the repair gets wrong.\n\n"
           f"## {TITLES[0]}\n\n{rq1}\n"
           f"## {TITLES[1]}\n\n{rep}\n"
           f"## {TITLES[2]}\n\n{few}\n### Model selection with few failures\n\n{section_selection()}\n"
           f"## {TITLES[3]}\n\n### At the comparison's budget\n\n"
           f"{ctl}\n### Thresholds and routers at that budget\n\n{routers}\n"
           f"### A longer repair behind a router\n\n{gate}\n"
           f"## {TITLES[4]}\n\n{speed}\n"
           f"## {TITLES[5]}\n\n{net}")
    def findings_list(net: str) -> str:
        return (f"- **Before repair:** {f_rq1}\n- **Repair vs baselines:** {f_rep}\n- **Few failures:** {f_few}\n"
                f"- **Regressions:** {f_ctl} {f_gate}\n- **Speed:** {f_speed}\n"
                + (f"- **Net effect:** {net}\n" if net else ""))
    findings = findings_list(f_net)
    link = "[`benchmarks/results/SUMMARY.md`](benchmarks/results/SUMMARY.md)"
    docs = "../benchmarks/results/"  # links in docs/*.md
    # README: one short line per question, each linking to its section of SUMMARY.md
    net_short = "; ".join(f_nets[k] for k in ("cinic-short", "leakfree-short") if k in f_nets) or "not measured yet"
    headlines = [("What do the corruptions cost?", f_rq1.short),
                 ("Does DeepRepair beat the baselines?", f_rep.short),
                 ("With few collected failures?", f_few.short),
                 ("What does repair break?", f"{f_ctl.short}; {f_gate.short}"),
                 ("How fast?", f_speed.short),
                 ("Net effect of the default (`protect`)?", net_short)]
    readme = table(["question (SUMMARY.md section)", "answer (generated)"],
                   [[f"[{q}](benchmarks/results/SUMMARY.md#{anchor(title)})", a]
                    for title, (q, a) in zip(TITLES, headlines)])
    blocks = {
        "findings": f"{readme}\n\nEvery table, machine and regenerating command: {link}.",
        "findings-results": findings + "\nTables, machines and commands: [SUMMARY.md](SUMMARY.md).",
        "repair-seeds": relink(section_repair_seeds(), docs),
        "control": relink(ctl, docs),
        "fewdc": relink(few, docs),
        "gate": relink(gate, docs),
        "routers": relink(routers, docs),
        "selection": relink(section_selection(), docs),
        "mixed": relink(section_mixed(), docs),
        "testtime": relink(section_testtime(), docs),
        "net": relink(net, docs),
        "models": relink(models_block(), docs),
    }
    return doc, blocks


def relink(text: str, prefix: str) -> str:
    """Markdown links relative to benchmarks/results/ made relative to another folder."""
    return re.sub(r"\]\((?!https?:|\.\./|#|/)", "](" + prefix, text)


BLOCK = re.compile(r"(<!-- summary:(?P<name>[\w-]+):start -->\n)(.*?)(<!-- summary:(?P=name):end -->)", re.S)
TARGETS = [REPO / "README.md", REPO / "docs" / "repair.md", REPO / "docs" / "models.md", RESULTS / "regressions.md"]


def fill(text: str, blocks: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        name = m.group("name")
        if name not in blocks:
            raise SystemExit(f"unknown summary block {name!r}")
        return f"{m.group(1)}<!-- generated by benchmarks/summary.py; do not edit -->\n{blocks[name].rstrip()}\n{m.group(4)}"
    return BLOCK.sub(sub, text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if SUMMARY.md or a marked block is stale")
    args = ap.parse_args(argv)
    doc, blocks = build()
    stale = []
    outputs = {SUMMARY: doc.rstrip() + "\n"}
    for path in TARGETS:
        if path.is_file():
            outputs[path] = fill(path.read_text(), blocks)
    for path, text in outputs.items():
        if not path.is_file() or path.read_text() != text:
            stale.append(path)
            if not args.check:
                path.write_text(text)
    for path in stale:
        print(f"{'stale' if args.check else 'wrote'}: {path.relative_to(REPO)}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
