"""Write the tables between ``<!-- summary:NAME:start/end -->`` in benchmarks/results/SUMMARY.md from the committed
results beside it, each with the files it read, their machine and the command that makes them. Tables only: the words
around them are written by people. Runs nothing and needs no data.

    python benchmarks/summary.py [--check]    # --check: exit 1 if a table is stale, write nothing
"""

import argparse
import json
import re
import sys
from collections import defaultdict
from functools import partial
from pathlib import Path
from statistics import fmean as mean

from deeprepair.bench.profile import as_today, computes_default, label
from deeprepair.bench.report import (CERTIFIED_HEAD, FRONTIER, LIVES_WITH, certified_rows, choice_tables,
                                     frontier_points, read_record)
from deeprepair.bounds import mean_std
from deeprepair.repair_config import RepairConfig

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SUMMARY = RESULTS / "SUMMARY.md"
RETIRED_AT = "1e66f62"  # the last commit with the retired study scripts (results/retired/README.md)

ms = partial(mean_std, scale=100)  # mean ± sample std over seeds, in points
load = lambda name: json.loads((RESULTS / name).read_text())  # noqa: E731
pct = lambda x, digits=2: f"{100 * x:.{digits}f}"  # noqa: E731
machine = lambda r: f"{r['machine']['cpu']}, {r['machine']['cores']} cores" if "machine" in r else "unrecorded"  # noqa
DE, CLEAN, BREAK = ("De (%)", lambda c: c["metrics"].get("de_after")), \
    ("clean (%)", lambda c: c["metrics"]["clean_after"]), ("break (%)", lambda c: c["metrics"]["break_rate"])


def table(header: list[str], rows: list[list]) -> str:
    num = lambda c: str(c).lstrip("+-")[:1].isdigit()  # noqa: E731
    align = ["---:" if i and any(num(r[i]) for r in rows) and all(num(r[i]) or r[i] == "-" for r in rows) else "---"
             for i in range(len(header))]
    return "\n".join([f"| {' | '.join(header)} |", f"|{'|'.join(align)}|"]
                     + [f"| {' | '.join(map(str, r))} |" for r in rows])


def folder(name: str) -> tuple[list[dict], dict, str]:
    """The cells of results/<name> (``dc<N>/cells`` too), its profile record and its source line."""
    root = RESULTS / name
    cells = [as_today(json.loads(p.read_text())) for p in sorted(root.glob("cells/*.json")) + sorted(root.glob("dc*/cells/*"))]
    prof = read_record((sorted(root.glob("profile.json")) + sorted(root.glob("dc*/profile.json")))[0])
    split = {c.get("split_by", "failure") for c in cells if c["method"] != "original"}
    how = "" if prof.get("real") or name == "rq1" else "; split: " + ("per failure, the paper's" if split == {"failure"}
                                                                       else "by photo, leak-free")
    seeds = ", ".join(map(str, sorted({c["seed"] for c in cells})))
    return cells, prof, (f"Source: [`{name}/`]({name}/) ({len(cells)} cells, seeds {seeds}; machine: "
                         f"{machine(prof)}{how}). Regenerate: `deeprepair bench --profile {name} --data DIR --out "
                         f"benchmarks/results/{name}`.")


def retired(name: str, before: str = "") -> tuple[dict, str]:
    """A retired study's results file and its source line (its script runs at commit RETIRED_AT)."""
    p = (d := load(f"retired/{name}"))["provenance"]
    return d, (f"Source: [`retired/{name}`](retired/{name}) (commit {p['commit']}, {p['date'][:10]}; machine: "
               f"{machine(p)}). Regenerate: `{before}{p['command']}` at commit {RETIRED_AT} (a retired script).")


def per_seed(cells: list[dict], get) -> dict[str, list[float]]:
    """{method: [per seed, the mean over corruptions of get(cell)]}, seeds with every corruption."""
    acc: dict = defaultdict(lambda: defaultdict(dict))
    for c in cells:
        if get(c) is not None:
            acc[c["method"]][c["seed"]][c["corruption"]] = get(c)
    corrs = {c["corruption"] for c in cells}
    return {m: [mean(v.values()) for _, v in sorted(s.items()) if set(v) == corrs] for m, s in acc.items()}


def method_table(cells: list[dict], cols: list[tuple], methods: list[str], before: dict | None = None) -> str:
    """One row per method: seeds, then each column's mean ± std over seeds; ``before``: the original's row."""
    vals = {h: per_seed(cells, get) for h, get in cols}
    vals = {label(m): {h: vals[h].get(m, []) for h, _ in cols} for m in methods if vals[cols[0][0]].get(m)}
    rows = [[m, len(next(iter(v.values())))] + [ms(v.get(h, [])).replace("n/a", "-") for h, _ in cols]
            for m, v in [*({"original (before)": before} if before else {}).items(), *vals.items()] if m != "original"]
    return table(["method", "seeds"] + [h for h, _ in cols], rows)


def seeded(name: str) -> str:
    """A seeded comparison (profiles repair, mixed), then DeepRepair minus each baseline on De, paired by seed. A
    mixed repair's De is the mean over the failure types of its cross-failure row."""
    cells, prof, src = folder(name)
    types = len({j for c in cells for j in c["cross"]} - {"mixed"})
    de = DE if name != "mixed" else (f"De, mean over {types} types (%)",
                                     lambda c: mean(v for j, v in c["cross"].items() if j != "mixed"))
    rep = [c for c in cells if c["method"] != "original" and (name != "mixed" or c["corruption"] == "mixed")]
    v = per_seed(rep, de[1])
    d = {o: [a - b for a, b in zip(v["deeprepair"], v[o])] for o in ("augmix", "finetune")}
    rows = [[f"DeepRepair minus {label(o)}", len(x), ms(x), f"{sum(y > 0 for y in x)}/{len(x)}"] for o, x in d.items()]
    return (method_table(rep, [de, CLEAN, BREAK], prof["methods"] + prof.get("ablation", [])) + "\n\n"
            + table(["De difference", "seeds", "points", "seeds where DeepRepair is higher"], rows) + "\n\n" + src)


def rq1() -> str:
    from deeprepair.corruptions import CORRUPTIONS, HELDOUT_CORRUPTIONS

    cells, prof, src = folder("rq1")
    rows = []
    for a in prof["archs"]:
        cs = {c["corruption"]: c for c in cells if c["arch"] == a and c["method"] == "original"}
        acc = {k: mean(c["original_acc_by_severity"]) for k, c in cs.items()}
        main, held = [acc[k] for k in CORRUPTIONS if k in acc], [acc[k] for k in HELDOUT_CORRUPTIONS if k in acc]
        clean, worst = cs[next(iter(cs))]["metrics"]["clean_before"], min(set(CORRUPTIONS) & set(acc), key=acc.get)
        fails = [cs[k]["failures"] for k in CORRUPTIONS if k in cs]
        rows.append([a, pct(clean), pct(mean(main)), pct(clean - mean(main)), pct(mean(held)) if held else "-",
                     f"{worst} {pct(acc[worst])}", f"{min(fails):,}-{max(fails):,}"])
    return table(["model", "clean (%)", "mean over the 15 (%)", "drop (points)", "mean over the 4 held-out (%)",
                  "worst of the 15 (%)", "failures per corruption (of 50,000)"], rows) + "\n\n" + src


def fewdc() -> str:
    cells, prof, src = folder("fewdc")
    de = {(c["method"], c["collected"], c["corruption"], c["seed"]): DE[1](c)
          for c in cells if c["method"] != "original"}
    sizes = sorted({k[1] for k in de})

    def wins(o: str, test) -> str:  # (corruption, seed) pairs where DeepRepair's De is above o's
        ks = [k for k in de if k[0] == "deeprepair" and test(k) and (o, *k[1:]) in de]
        return f"{sum(de[k] > de[(o, *k[1:])] for k in ks)}/{len(ks)}"
    rows = [[label(m)] + [pct(mean(v for k, v in de.items() if k[:2] == (m, s)), 1) for s in sizes]
            for m in ("finetune", "augmix", "deeprepair")]
    rows += [[f"DeepRepair > {label(o)} (pairs)"] + [wins(o, lambda k: k[1] == s) for s in sizes]
             for o in ("augmix", "finetune")]
    kept = [[c["repair"].get("best_epoch") == 0 for c in cells if c.get("collected") == n and c["method"] != "original"]
            for n in sizes]
    rows.append(["runs where `holdout` kept the original (epoch 0)"] + [f"{sum(k)}/{len(k)}" for k in kept])
    return (table(["De (%) at \\|Dc\\| =", *map(str, sizes)], rows) + "\n\nPer corruption: [`fewdc/report.md`]"
            "(fewdc/report.md); figure: [`fewdc/figures/fewdc-curve.png`](fewdc/figures/fewdc-curve.png). " + src)


HEAD = ["De (%)", "clean (%)", "original clean (%)", "break (%)", "De gain kept", "break <= 1%",
        "cells meeting the target", "seeds meeting it on their mean"]
KEYS = ("de", "clean", "break", "kept", "clean_before")


def routed(rows: list[dict], pre: str = "") -> list[str]:
    """The HEAD columns of retired rows (keys after ``pre``; ``full_``: the whole test set). The target: break <= 1%,
    clean >= the original's, >= 90% of the De gain kept, per cell and on each seed's mean."""
    ok = lambda r: r["break"] <= 0.01 and r["clean"] >= r["clean_before"] and r["kept"] >= 0.9  # noqa: E731
    rows, seeds = [{**r, **{k: r[pre + k] for k in KEYS}} for r in rows], defaultdict(list)
    for r in rows:
        seeds[r["seed"]].append(r)
    avg = [{k: mean(r[k] for r in s) for k in KEYS} for s in seeds.values()]
    n, low, kept = len(rows), sum(r["break"] <= 0.01 for r in rows), f"{100 * mean(r['kept'] for r in rows):.1f}%"
    return [ms([a["de"] for a in avg]), ms([a["clean"] for a in avg]), pct(mean(r["clean_before"] for r in rows)),
            ms([a["break"] for a in avg]), kept, f"{low}/{n}", f"{sum(map(ok, rows))}/{n}",
            f"{sum(map(ok, avg))}/{len(avg)}"]


def control() -> str:
    d, src = retired("regressions_control.json")
    base = {(r["method"], r["corruption"], r["seed"]): r for r in d["rows"] if r["control"] == "none"}
    groups = defaultdict(list)
    for r in d["rows"]:
        gain = base[(r["method"], r["corruption"], r["seed"])]["de"] - r["de_before"]
        groups[(r["method"], r["control"])].append({**r, "kept": (r["de"] - r["de_before"]) / gain})
    rows = [[label(m), c] + routed(g) for (m, c), g in groups.items()]
    return table(["method", "control"] + HEAD, rows) + "\n\n" + src


def routers() -> str:
    d, src = retired("gate_routers.json", "python benchmarks/gate_rules.py && ")
    rs = [r for r in d["rows"] if "full_de" in r]
    rows = [[label(m), router, rule] + routed(g, "full_") for m in dict.fromkeys(r["method"] for r in rs)
            for router in ("linear", "mlp+style") for rule in ("`--gate` rule", "`--gate-keep 0.9` rule")
            for g in [[r for r in rs if (r["method"], r["router"], r["rule"]) == (m, router, rule)]] if g]
    return table(["method", "router", "threshold"] + HEAD, rows) + "\n\n" + src


def gate() -> str:
    rows, srcs = [], []
    for path in sorted((RESULTS / "retired").glob("gate_routers_dt*.json")):
        rules = path.parent / path.name.replace("gate_routers", "gate_rules")
        d, src = retired(path.name, f"{json.loads(rules.read_text())['provenance']['command']} && " * rules.is_file())
        srcs.append(src)
        budget = " ".join(re.findall(r"--(?:train-subset|epochs|dc-repeat|distill) \S+", d["provenance"]["command"]))
        rs = [r for r in d["rows"] if "full_de" in r]
        rows += [[label(m), budget, rule if router == "none" else f"{router} router"] + routed(g, "full_")
                 + [machine(d["provenance"])]
                 for m in sorted({r["method"] for r in rs})
                 for router, rule in (("none", "alone"), ("linear", "`--gate` rule"), ("mlp+style", "`--gate` rule"))
                 for g in [[r for r in rs if (r["method"], r["router"], r["rule"]) == (m, router, rule)]] if g]
    return (table(["method", "budget", "control"] + HEAD + ["machine"], rows) + "\n\n"
            + "\n".join(f"- {s}" for s in srcs))


def speed() -> str:
    cs, cg, au, rs, cc = map(load, ("corruption_speed.json", "corruption_generate.json", "augment_speed.json",
                                    "repair_speed.json", "corruption_coldstart.json"))
    s, h = cs["summary"], cc.get("hmean_speedup_with_setup") or {}
    rows = [["batched corruptions vs the per-image reference (15 corruptions, harmonic mean)",
             f"{s['harmonic_mean_speedup']:.1f}x (target {s['target_harmonic_mean']:.0f}x; slowest "
             f"{s['min_speedup_corruption']} {s['min_speedup']:.1f}x)", "corruption_speed"],
            ["rendering CIFAR-10-C (15 x 5 x 10,000 images)", f"{cg['wall_seconds']:.0f} s", "corruption_generate"],
            ["batched AugMix vs the per-image PIL reference", f"{au['batched'] / au['per_image']:.1f}x",
             "augment_speed"],
            ["style ops' share of a DeepRepair training step (resnet-20)", f"{100 * au['style_share']:.1f}%", "augment_speed"]]
    rows += [["the first `corrupt` after an install vs the per-image reference (15 corruptions, harmonic mean)", f"{h['first']:.1f}x with numba's compile, {h['first_after_setup']:.1f}x after it (target 20x)", "corruption_coldstart"]] if h else []
    rows += [[f"today's code against each recorded figure's own code, this machine ({len(sr['rows'])} figures: corruptions, AugMix, style ops, inference)", f"{len(sr['rows']) - len(sr['regressed'])} of {len(sr['rows'])} not slower in every one of {sr['rounds']} rounds", "speed_regression"] for sr in [load("speed_regression.json")]]
    rows += [[f"one repair, `{m}` vs {r['plain']} (resnet-20, 1,000 fog failures)", f"{r['ours_s']:.0f} s vs {r['plain_s']:.0f} "
              f"s = {r['ratio']:.2f}x (target <= {r['target']:.1f}x)", "repair_speed"] for m, r in rs["ratios"].items()]
    prov = {n: load(f"{n}.json")["provenance"] for n in dict.fromkeys(r[2] for r in rows)}
    return (table(["what", "measured", "source", "machine"],
                  [[w, v, f"[`{n}.json`]({n}.json)", machine(prov[n])] for w, v, n in rows]) + "\n\nRegenerate:\n\n"
            + "\n".join(f"- `{n}.json` (commit {p['commit']}, {p['date'][:10]}): `{p['command']}`"
                        for n, p in prov.items()))


def net(name: str) -> str:
    """What a user lives with (bench LIVES_WITH columns); the original's row holds the before values; methods no
    longer in the profile are marked as probes."""
    cells, prof, src = folder(name)
    cells = [c for c in cells if isinstance(c["metrics"].get("shifted"), dict)]
    cols = [(h, lambda c, g=g: g(c["metrics"])) for h, g in LIVES_WITH]
    cols = [(h, g) for h, g in cols if any(per_seed(cells, g).values())]
    before = {h: next(v for v in per_seed(cells, lambda c, g=g: g(c["metrics"])).values() if v) for h, g in (
        (cols[0][0], lambda m: m["shifted"]["before"]),
        ("clean, not in Dc (%)", lambda m: m.get("clean_unseen", {}).get("before", m["clean_before"])))}
    listed = prof["methods"] + prof.get("ablation", [])
    probes = [m for m in dict.fromkeys(c["method"] for c in cells) if m not in listed]
    text = method_table(cells, cols, listed + probes, before)
    for m in probes:
        text = text.replace(f"| {label(m)} |", f"| {label(m)} (probe, not in the profile) |")
    return text + "\n\n" + src


def validation() -> str:
    """Per method, the returned network on the repair's own validation split (each cell's ``repair.validation_final``),
    over the (corruption, seed) cells every method has."""
    cells, prof, src = folder("leakfree")
    rec = {(c["method"], c["corruption"], c["seed"]): c["repair"].get("validation_final") or {} for c in cells}
    has = defaultdict(set)
    for (m, *cell), v in rec.items():
        _ = v.get("val_break") is None or has[m].add(tuple(cell))
    common = set.intersection(*has.values())
    keys = ("val_break", "val_failures_acc", "val_train_acc")
    rows = sorted(([label(m), len(common)] + [ms([rec[(m, *c)][k] for c in common]) for k in keys] for m in has),
                  key=lambda r: -float(r[3].split()[0]))
    return (table(["method", "cells", "validation break on Dt (%)", "validation Dc repaired (%)",
                   "validation Dt accuracy (%)"], rows) + "\n\n" + src + " ± = std over cells.")


def frontier(name: str) -> str:
    cells, prof, src = folder(name)
    pts = frontier_points(cells)["resnet-20"]
    rows = [[label(m), f"{a:g}", len(seeds)] + [ms([s[i] for s in seeds]) for i in range(len(FRONTIER))]
            for m in prof["methods"] if m in pts for a, seeds in pts[m].items()]
    return (table(["method", "weight (0 = original, 1 = repaired)", "seeds"] + [h for h, _ in FRONTIER], rows)
            + f"\n\nFigure: [`{name}/figures/frontier-resnet-20.png`]({name}/figures/frontier-resnet-20.png). " + src)


def certified(name: str) -> str:
    """The limit on images no repair saw (bench certified_rows: the cells, then variants of their own runs)."""
    cells, prof, src = folder(name)
    rows = [[label(r[0]) if ", " not in r[0] else "its own runs: " + r[0].split(", ", 1)[1] + (  # a variant; the default's
        " = the default recipe" if r[0].endswith(f", {RepairConfig().average} runs averaged") and r[1] == "1%"
        and computes_default(r[0].split(", ")[0], average=RepairConfig().average, combine="average") else ""),
        *r[1:]] for r in certified_rows(cells)]
    return table(CERTIFIED_HEAD, rows) + "\n\n" + "\n".join([*choice_tables(cells, prof.get("variants") or {}), src])


BLOCKS = {"rq1": rq1, "repair-seeds": partial(seeded, "repair"), "mixed": partial(seeded, "mixed"),
          **{n: partial(certified, n) for n in ("certified", "certified100", "half-runs", "surgical", "averaged-bn",
                                                 "mix-paths", "elodi", "runs-averaged")},
          "cinic-certified": partial(net, "cinic-certified"),
          "fewdc": fewdc, "control": control, "routers": routers, "gate": gate, "speed": speed,
          "cinic": partial(net, "cinic"), "leakfree": partial(net, "leakfree"), "validation": validation,
          "leakfree100": partial(net, "leakfree100"), "frontier": partial(frontier, "frontier"),
          "cinic-frontier": partial(frontier, "cinic-frontier")}
BLOCK = re.compile(r"(<!-- summary:(?P<name>[\w-]+):start -->\n)(.*?)(<!-- summary:(?P=name):end -->)", re.S)


def fill(text: str, blocks: dict) -> str:
    """``text`` with each marked block replaced by its table."""
    def sub(m: re.Match) -> str:
        if m.group("name") not in blocks:
            raise SystemExit(f"unknown summary block {m.group('name')!r}")
        body = blocks[m.group("name")]() if callable(blocks[m.group("name")]) else blocks[m.group("name")]
        return f"{m.group(1)}<!-- generated by benchmarks/summary.py; do not edit -->\n{body.rstrip()}\n{m.group(4)}"
    return BLOCK.sub(sub, text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a generated table is stale; write nothing")
    check, old = ap.parse_args(argv).check, SUMMARY.read_text()
    new = fill(old, BLOCKS)
    if new != old:
        print(f"{'stale' if check else 'wrote'}: {SUMMARY.relative_to(REPO)}")
        _ = check or SUMMARY.write_text(new)
    return int(check and new != old)


if __name__ == "__main__":
    sys.exit(main())
