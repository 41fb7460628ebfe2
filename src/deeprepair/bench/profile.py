"""Benchmark profiles: committed JSON files that state every number of a run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..corruptions import ALL_CORRUPTIONS
from ..errors import DeepRepairError
from ..repair_config import MIX_PATHS

PROFILE_DIR = Path(__file__).parent / "profiles"
MIXED = "mixed"  # a profile's pseudo-corruption: failures drawn across its other corruptions, types not told
REQUIRED = ("name", "archs", "corruptions", "methods", "seeds", "collect", "repair", "cross_subsample")
REQUIRED_TYPES = {"name": str, "archs": dict, "corruptions": list, "methods": list, "seeds": list, "collect": int,
                  "repair": dict, "cross_subsample": int}

# A bench method names a repair as ``<training method>[-<variant>][+<protection>...]``: a method of
# the registry (repair/methods.py), a variant of its options, then the protections added, in the
# words of the command line and docs (finetune+focal+mix is the default recipe, ``repair`` with no
# options). Every recipe builds on DeepRepair as the paper states it (``deeprepair-paper``: no
# protection), so a bare method name is that method unprotected.
VARIANTS: dict[str, dict] = {
    "first-block": {"tune": "first-block"},  # surgical fine-tuning (repair/tuning.py)
    "bn": {"tune": "bn"},  # only the normalisation layers' affine parameters (repair/tuning.py)
    "half": {"train_subset": 5000},  # each run fine-tunes on 5,000 training images, half the default's 10,000
    "share": {"dc_share": 1 / 12},  # failures repeated to 1 in 12 fine-tuning images (1 copy of 900 beside 10,000)
    "uniform": {"sampling": "uniform"},  # DeepRepair's ablations: no clusters,
    "per-class": {"sampling": "per-class"},  # the authors' per-class sampling,
    "fourier": {"style": "fourier"},  # other style backends,
    # the adain decoder of the committed model (`deeprepair train-style`; path from the repository root)
    "adain": {"style": "adain", "style_options": {"checkpoint": "checkpoints/style-resnet-20.safetensors"}},
    "style-clusters": {"cluster_features": "style"},  # clusters of wavelet band energies
}
# each "+name" a bench method adds (repair_config.PROTECTIONS says what each one reads)
PROTECTIONS: dict[str, dict] = {
    "focal": {"distill": 1.0, "distill_focus": "right"},  # focal distillation from the original
    "focal3": {"distill": 3.0, "distill_focus": "right"},  # ... with 3 times the default's weight
    "field": {"field": True},  # unlabelled field photos distilled ("field": the runner passes a real profile's)
    "pseudo": {"field": True, "field_labels": "self"},  # ... taught with FixMatch-style pseudo-labels instead
    "mix": {"interpolate": True},  # the validation-held weight mix (a point estimate, as the paper-based recipes)
    "avg2": {"average": 2},  # 2 runs averaged weight by weight
    "avg3": {"average": 3},  # 3 runs averaged weight by weight (the default)
    "keptbn": {"average_bn": "kept"},  # ... their averaged BatchNorm statistics kept, never recomputed
    "elodi2": {"average": 2, "combine": "distill"},  # 2 runs distilled into one more (ELODI-style)
    "certified": {"interpolate": True, "mix_bound": "clopper-pearson", "mix_steps": 20},  # the exact bound, 0.05 steps
    "fieldcheck": {"field_check": True},  # the runner passes a real profile's field half, labelled
}
SAFE = "deeprepair+distill+gate"  # the --safe preset as it was measured (routed: two networks and a router)
_SAFE_OPTIONS = {"method": "deeprepair", "epochs": 1, "train_subset": 0.8, "dc_repeat": 4, "distill": 1.0,
                 "distill_focus": "all", "interpolate": False, "gate": True, "gate_router": "mlp",
                 "gate_features": "deep+style"}
# the bench names results were written under before the names were unified: old -> new. Read
# through ``current_name`` (a cell's method, a results folder's profile record, a cell file's
# name); the options, and so every cell's hash, are the same under the new name.
RENAMED: dict[str, str] = {
    "ft-focal": "finetune+focal", "dr-focal": "deeprepair+focal", "dr-first-block": "deeprepair-first-block",
    "dr-fb-focal": "deeprepair-first-block+focal", "ft-focal+field": "finetune+focal+field",
    "dr-focal+field": "deeprepair+focal+field", "dr-fb-focal+field": "deeprepair-first-block+focal+field",
    "dr-focal+interp": "deeprepair+focal+mix", "dr-focal+field+interp": "deeprepair+focal+field+mix",
    "ft-focal+interp": "finetune+focal+mix", "dr-focal+pseudo+interp": "deeprepair+focal+pseudo+mix",
    "ft-focal+pseudo+interp": "finetune+focal+pseudo+mix", "dr-safe": SAFE, "dr-uniform": "deeprepair-uniform",
    "dr-per-class": "deeprepair-per-class", "dr-fourier": "deeprepair-fourier", "dr-adain": "deeprepair-adain",
    "dr-style-clusters": "deeprepair-style-clusters", "ft-focal+avg3+certified": "finetune+focal+avg3+certified",
    "ft-focal+avg3+certified+fieldcheck": "finetune+focal+avg3+certified+fieldcheck",
}


def current_name(name: str) -> str:
    """A bench method's name today (results written before the renames say the old one)."""
    return RENAMED.get(name, name)


def as_today(cell: dict) -> dict:
    """A result cell (a dict read from its JSON file) with its method under today's name."""
    if isinstance(cell.get("method"), str):
        cell["method"] = current_name(cell["method"])
    return cell


def recipe_options(name: str) -> dict:
    """The RepairConfig options of the bench method ``name`` (``original``: the pre-trained model,
    no repair); a one-line error for an unknown name, naming the replacement of a former one."""
    from ..repair.methods import method_names

    if name in RENAMED:
        raise DeepRepairError(f"bench method {name!r} is now called {RENAMED[name]!r}")
    if name == "original":
        return {}
    if name == SAFE:
        return dict(_SAFE_OPTIONS)
    head, *prots = name.split("+")
    method = max((m for m in method_names() if head == m or head.startswith(m + "-")), key=len, default=None)
    variant = head[len(method) + 1:] if method else None
    if method is None or (variant and variant not in VARIANTS) or any(p not in PROTECTIONS for p in prots):
        raise DeepRepairError(f"unknown bench method {name!r}: a repair method ({', '.join(method_names())}), "
                              f"optionally -variant ({', '.join(VARIANTS)}), then +protection "
                              f"({', '.join(PROTECTIONS)}), or {SAFE} or original")
    opts = {"method": method, **(VARIANTS[variant] if variant else {})}
    for p in prots:
        opts.update(PROTECTIONS[p])
    return opts


def computes_default(name: str, **over) -> bool:
    """Whether the bench method ``name``, with the options ``over`` put over its own (a variant's K
    runs averaged, another training budget), makes the default recipe's computation."""
    from ..repair_config import RepairConfig

    return name != "original" and RepairConfig.preset("deeprepair-paper", **{**recipe_options(name), **over}) == RepairConfig()


def label(name: str) -> str:
    """A bench method's name in reports: the registry's label of its method, then its variant and
    protections in words (a former name reads as its replacement)."""
    from ..repair.methods import get_method

    name = current_name(name)
    if name in ("original", SAFE):
        return {"original": "original", SAFE: "DeepRepair --safe (routed: two networks and a router)"}[name]
    opts = recipe_options(name)
    head, *prots = name.split("+")
    variant = head[len(opts["method"]) + 1:]
    words = get_method(opts["method"]).label + (f", {VARIANT_WORDS[variant]}" if variant else "")
    words += "".join(f" + {PROTECTION_WORDS[p]}" for p in prots)
    return words + (" (the default recipe)" if name == DEFAULT_RECIPE else "")


VARIANT_WORDS = {"first-block": "first block", "bn": "normalisation layers only", "half": "5,000 training images per run",
                 "share": "failures repeated to 1 in 12 fine-tuning images", "uniform": "no clustering", "per-class": "per-class sampling",
                 "fourier": "fourier", "adain": "adain", "style-clusters": "clusters of style features"}
PROTECTION_WORDS = {"focal": "focal distillation", "focal3": "focal distillation of weight 3", "field": "field photos",
                    "pseudo": "field photos as pseudo-labels", "mix": "weight mix (point estimate)",
                    "avg2": "2 runs averaged", "avg3": "3 runs averaged",
                    "keptbn": "their BatchNorm statistics averaged too",
                    "elodi2": "2 runs distilled into one (ELODI-style)", "certified": "certified weight mix",
                    "fieldcheck": "field check"}
DEFAULT_RECIPE = "finetune+focal+avg3+keptbn+certified"  # = repair_config.DEFAULT_PRESET (tested)


def list_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.json"))


def load_profile(name_or_path: str) -> dict:
    """A profile by name (``smoke``, ``cpu``, ``paper``) or path, validated."""
    path = Path(name_or_path)
    if not path.is_file():
        path = PROFILE_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise DeepRepairError(f"unknown profile {name_or_path!r}; choose one of {list_profiles()} or give a JSON file")
    try:
        prof = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:  # e.g. a checkpoint given as --profile
        raise DeepRepairError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(prof, dict):
        raise DeepRepairError(f"profile {path} must be a JSON object, got a {type(prof).__name__}")
    missing = [k for k in REQUIRED if k not in prof]
    if missing:
        raise DeepRepairError(f"profile {path} lacks {missing}")
    wrong = [k for k, t in REQUIRED_TYPES.items() if not isinstance(prof[k], t) or isinstance(prof[k], bool)]
    if wrong:
        raise DeepRepairError(f"profile {path}: {', '.join(f'{k} must be a {REQUIRED_TYPES[k].__name__}' for k in wrong)}")
    for m in prof["methods"] + prof.get("ablation", []):
        try:
            recipe_options(m)
        except DeepRepairError as exc:
            raise DeepRepairError(f"profile {path}: {exc}") from None
    bad = [c for c in prof["corruptions"] if c not in ALL_CORRUPTIONS and c != MIXED]  # the 15, or the 4 held out
    if bad and not prof.get("real"):
        raise DeepRepairError(f"profile {path}: unknown corruptions {bad}")
    if MIXED in prof["corruptions"] and (prof.get("real") or prof.get("shifted") or len(prof["corruptions"]) < 2):
        raise DeepRepairError(f"profile {path}: {MIXED!r} needs other corruptions to draw from, and no real or "
                              "shifted sets")
    sizes = prof.get("dc_sizes", [])
    if not isinstance(sizes, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sizes):
        raise DeepRepairError(f"profile {path}: dc_sizes must be a list of positive whole numbers")
    alphas = prof.get("frontier", [])
    if not isinstance(alphas, list) or not all(isinstance(a, (int, float)) and not isinstance(a, bool) and 0 < a < 1
                                               for a in alphas):
        raise DeepRepairError(f"profile {path}: frontier must be a list of weights strictly between 0 and 1 "
                              "(the original is 0, the repaired network 1)")
    cal = prof.get("calibration", 0)
    if not isinstance(cal, int) or isinstance(cal, bool) or cal < 0:
        raise DeepRepairError(f"profile {path}: calibration must be a whole number of clean test photos (0: none)")
    var = prof.get("variants")
    if var is not None and not (isinstance(var, dict) and {"average", "max_break"} <= set(var)
                                and set(var) <= {"average", "max_break", "mix_path"}
                                and all(isinstance(k, int) and k >= 1 for k in var["average"])
                                and all(isinstance(b, (int, float)) and 0 < b <= 0.5 for b in var["max_break"])
                                and all(p in MIX_PATHS for p in var.get("mix_path", ["linear"]))):
        raise DeepRepairError(f"profile {path}: variants must be {{\"average\": [K, ...], \"max_break\": [limit, ...]}} "
                              f"with K >= 1 and limits in (0, 0.5], and optionally \"mix_path\": [{', '.join(MIX_PATHS)}]")
    prof.setdefault("ablation", [])
    prof.setdefault("data", {"train_subset": 0, "test_subset": 0})
    return prof


def restrict(prof: dict, archs: list[str] | None, corruptions: list[str] | None, methods: list[str] | None) -> dict:
    """The profile limited to the given archs / corruptions / methods (command-line filters)."""
    prof = json.loads(json.dumps(prof))
    if archs:
        unknown = [a for a in archs if a not in prof["archs"]]
        if unknown:
            raise DeepRepairError(f"--archs {unknown} not in profile {prof['name']} ({list(prof['archs'])})")
        prof["archs"] = {a: prof["archs"][a] for a in archs}
    if corruptions:
        unknown = [c for c in corruptions if c not in prof["corruptions"]]
        if unknown:
            raise DeepRepairError(f"--corruptions {unknown} not in profile {prof['name']}")
        prof["corruptions"] = corruptions
    if methods:
        allm = prof["methods"] + prof["ablation"]
        unknown = [m for m in methods if m not in allm]
        if unknown:
            raise DeepRepairError(f"--methods {unknown} not in profile {prof['name']} ({allm})")
        prof["methods"] = [m for m in prof["methods"] if m in methods]
        prof["ablation"] = [m for m in prof["ablation"] if m in methods]
    return prof


def expand(prof: dict) -> list[tuple[str, dict]]:
    """The runs a profile stands for: itself (``("", prof)``), or, for a profile with ``dc_sizes``
    (the De-vs-|Dc| curve), one run per size, ``("dc<N>", prof with dc_size N)``, each in its own
    subfolder: the same mined failures, Dc cut to a stratified N of them per seed."""
    if not prof.get("dc_sizes"):
        return [("", prof)]
    base = {k: v for k, v in prof.items() if k != "dc_sizes"}
    return [(f"dc{n}", {**base, "dc_size": n}) for n in prof["dc_sizes"]]


def arch_corruptions(prof: dict, arch: str) -> list[str]:
    sel = prof["archs"][arch].get("corruptions", "all")
    return list(prof["corruptions"]) if sel == "all" else [c for c in prof["corruptions"] if c in sel]


def cell_hash(prof: dict, arch: str, corruption: str, method: str, seed: int, model_id: str) -> str:
    """Hash of everything a cell's result depends on: same hash, same cell."""
    key = {"repair": prof["repair"], "collect": prof["collect"], "data": prof["data"],
           "cross": prof["cross_subsample"], "arch": arch, "corruption": corruption,
           **{k: prof[k] for k in ("shifted", "real", "elsewhere", "dc_size", "frontier", "calibration", "variants")
              if k in prof},
           # the paper's per-failure split keeps the hashes of the runs made before the split existed
           **({} if prof.get("split_by", "image") == "failure" else {"split_by": prof.get("split_by", "image")}),
           "method": recipe_options(method), "seed": seed, "model": model_id,
           "cross_set": arch_corruptions(prof, arch)}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def frontier_row(alpha: float, scores: dict) -> dict:
    """One point of the interpolation path in the shape a cell's ``frontier`` list stores it, from
    ``repair.compare()``'s scores (or a cell's ``metrics``, which are those scores): the runner
    writes the rows, the report reads them and the cell's own metrics (alpha 1) through this one
    list of keys."""
    return {"alpha": float(alpha), **{k: scores.get(k) for k in ("clean_after", "break_rate", "dc_after", "de_after")},
            **{f"{part}_{k}": scores[part].get(k) for part in ("shifted", "clean_unseen")
               if isinstance(scores.get(part), dict) for k in ("after", "break_rate", "fix_rate")}}
