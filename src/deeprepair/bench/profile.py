"""Benchmark profiles: committed JSON files that state every number of a run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..corruptions import ALL_CORRUPTIONS
from ..errors import DeepRepairError
from ..repair_config import PRESETS

PROFILE_DIR = Path(__file__).parent / "profiles"
MIXED = "mixed"  # a profile's pseudo-corruption: failures drawn across its other corruptions, types not told
REQUIRED = ("name", "archs", "corruptions", "methods", "seeds", "collect", "repair", "cross_subsample")
REQUIRED_TYPES = {"name": str, "archs": dict, "corruptions": list, "methods": list, "seeds": list, "collect": int,
                  "repair": dict, "cross_subsample": int}

# bench method name -> RepairConfig options ("original" = the pre-trained model, no repair)
METHOD_OPTIONS: dict[str, dict] = {
    "original": {},
    "finetune": {"method": "finetune"},
    "fewshot": {"method": "fewshot"},
    "cutout": {"method": "cutout"},
    "mixup": {"method": "mixup"},
    "cutmix": {"method": "cutmix"},
    "sensei": {"method": "sensei"},
    "augmix": {"method": "augmix"},
    "deeprepair": {"method": "deeprepair"},
    "dr-uniform": {"method": "deeprepair", "sampling": "uniform"},
    "dr-per-class": {"method": "deeprepair", "sampling": "per-class"},
    "dr-fourier": {"method": "deeprepair", "style": "fourier"},
    # the adain decoder of the committed model (`deeprepair train-style`; path from the repository root)
    "dr-adain": {"method": "deeprepair", "style": "adain",
                 "style_options": {"checkpoint": "checkpoints/style-resnet-20.safetensors"}},
    "dr-style-clusters": {"method": "deeprepair", "cluster_features": "style"},
    "oracle": {"method": "oracle"},
    # issue 22's candidates: touch less (tune) and protect what was right (focal distillation,
    # unlabelled field photos; "field": the runner passes a real profile's field half)
    "ft-focal": {"method": "finetune", "distill": 1.0, "distill_focus": "right"},
    "dr-focal": {"method": "deeprepair", "distill": 1.0, "distill_focus": "right"},
    "dr-first-block": {"method": "deeprepair", "tune": "first-block"},
    "dr-fb-focal": {"method": "deeprepair", "tune": "first-block", "distill": 1.0, "distill_focus": "right"},
    "ft-focal+field": {"method": "finetune", "distill": 1.0, "distill_focus": "right", "field": True},
    "dr-focal+field": {"method": "deeprepair", "distill": 1.0, "distill_focus": "right", "field": True},
    "dr-fb-focal+field": {"method": "deeprepair", "tune": "first-block", "distill": 1.0, "distill_focus": "right",
                          "field": True},
    "dr-focal+interp": {"method": "deeprepair", "distill": 1.0, "distill_focus": "right", "interpolate": True},
    "dr-focal+field+interp": {"method": "deeprepair", "distill": 1.0, "distill_focus": "right", "field": True,
                              "interpolate": True},
    "ft-focal+interp": {"method": "finetune", "distill": 1.0, "distill_focus": "right", "interpolate": True},
    # field photos taught with the repairing network's own confident answers (FixMatch-style pseudo-labels)
    "dr-focal+pseudo+interp": {"method": "deeprepair", "distill": 1.0, "distill_focus": "right", "field": True,
                               "field_labels": "self", "interpolate": True},
    "ft-focal+pseudo+interp": {"method": "finetune", "distill": 1.0, "distill_focus": "right", "field": True,
                               "field_labels": "self", "interpolate": True},
    # the --safe preset (routed repair: the original, the repaired network and a router)
    "dr-safe": {"method": "deeprepair", **PRESETS["safe"]},
    "bn-adapt": {"method": "bn-adapt"},
    "tent": {"method": "tent"},
}


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
    bad = [m for m in prof["methods"] + prof.get("ablation", []) if m not in METHOD_OPTIONS]
    if bad:
        raise DeepRepairError(f"profile {path}: unknown methods {bad}; known: {list(METHOD_OPTIONS)}")
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
           **{k: prof[k] for k in ("shifted", "real", "elsewhere", "dc_size", "frontier") if k in prof},
           # the paper's per-failure split keeps the hashes of the runs made before the split existed
           **({} if prof.get("split_by", "image") == "failure" else {"split_by": prof.get("split_by", "image")}),
           "method": METHOD_OPTIONS[method], "seed": seed, "model": model_id,
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
