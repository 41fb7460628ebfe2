#!/usr/bin/env python
"""How well each style backend moves a corruption onto clean images (issue: style engine).

For each of the 15 corruptions at severities 3 and 5: 500 clean test images are the content,
500 *other* test images corrupted with that corruption are the references (one each); the
backend renders content in the references' style. We compare the outputs with the real
corrupted versions of the same content images:

(a) style distance: per image, a band-energy profile (log mean square of each Haar detail
    level per channel, and the coarse band's per-channel mean and std); distance between the
    mean profile of the outputs and of the real corrupted images, as a share of the clean
    images' distance ("gap closed" = 1 - d(out, real) / d(clean, real); 1 = perfect, 0 = no
    better than doing nothing, < 0 = moved the wrong way);
(b) content: accuracy of the pre-trained model on outputs made with *clean* references
    (the transfer alone must not destroy the label), against its clean accuracy;
(c) "looks like the corruption": a small corruption-type classifier (16 classes: clean + 15),
    trained here on training images, predicts the type of the outputs; share predicted as the
    target corruption (real corrupted images give the ceiling).
Throughput: images/s at batch 256 with fitted references, per backend.

    python benchmarks/style.py [--n 500] [--model checkpoints/resnet-20.safetensors]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import DEFAULT_DATA, DEFAULT_OUT, REPO_ROOT, provenance, provenance_markdown, write_results

BACKENDS = {
    "wavelet (starlet, energy)": ("wavelet", {}),
    "wavelet (haar, energy)": ("wavelet", {"basis": "haar"}),
    "wavelet (starlet, hist)": ("wavelet", {"mode": "hist"}),
    "wavelet (starlet, meanstd)": ("wavelet", {"mode": "meanstd"}),
    "wavelet (starlet, wct)": ("wavelet", {"mode": "wct"}),
    "fourier (full swap)": ("fourier", {"beta": 0.5, "ratio": 1.0}),
    "fourier (full, mix 0.5)": ("fourier", {"beta": 0.5, "ratio": 0.5}),
    "fourier (low band 0.1)": ("fourier", {"beta": 0.1, "ratio": 1.0}),
    "adain (resnet-20 stage 1)": ("adain", {}),
    "adain, wct (resnet-20 stage 1)": ("adain", {"mode": "wct"}),
}


def adain_checkpoint(path: Path, model_path: str, data: str, epochs: int, limit: int = 0) -> tuple[Path, float]:
    """The adain decoder for the pre-trained model (trained here, once, if ``path`` is missing)."""
    import time

    import torch

    from deeprepair.data import load_dataset
    from deeprepair.models.checkpoint import load_checkpoint
    from deeprepair.style.adain import FeatureEncoder, save_style_checkpoint, train_decoder

    if path.is_file():
        return path, float(json.loads(path.with_suffix(".json").read_text())["train_seconds"])
    model, meta = load_checkpoint(model_path)
    enc = FeatureEncoder(model)
    t0 = time.perf_counter()
    x = load_dataset(data, "train").x
    decoder, history = train_decoder(enc, x[:limit] if limit else x, epochs=epochs,
                                     state_path=path.with_suffix(".state.safetensors"))
    secs = time.perf_counter() - t0
    cmd = f"deeprepair train-style --data {data} --model {model_path} --out {path} --epochs {epochs} --seed 0"
    smeta = {"encoder": {"checkpoint": model_path, **{k: meta[k] for k in ("arch", "num_classes", "mean", "std")}},
             "train_command": cmd, "history": history, "train_seconds": round(sum(r["seconds"] for r in history), 1),
             "torch_version": torch.__version__}
    save_style_checkpoint(path, enc, decoder, smeta)
    path.with_suffix(".state.safetensors").unlink(missing_ok=True)
    return path, secs


def profile(x):
    """(N, F) band-energy profile of float (N, 3, H, W) images."""
    import torch

    from deeprepair.style.wavelet import decompose

    bands = decompose(x, 3)
    feats = [torch.log(b.pow(2).mean(-1) + 1e-6) for b in bands[:-1]]
    feats += [bands[-1].mean(-1), bands[-1].std(-1)]
    return torch.cat(feats, 1)


def train_type_classifier(train_x, seed, device, epochs, n):
    """resnet-20 trained to tell clean (0) from each of the 15 corruptions (1..15), severities 1-5."""
    import numpy as np
    import torch

    from deeprepair.corruptions import CORRUPTIONS, corrupt
    from deeprepair.models import Classifier, create_model
    from deeprepair.train import TrainConfig, fit

    rng = np.random.default_rng(seed)
    idx = rng.choice(len(train_x), n, replace=False)
    label = rng.integers(0, 16, n)
    sev = rng.integers(1, 6, n)
    x = train_x[idx].copy()
    for t in range(1, 16):
        for s in range(1, 6):
            m = np.flatnonzero((label == t) & (sev == s))
            if len(m):
                x[m] = corrupt(train_x[idx[m]], CORRUPTIONS[t - 1], s, seed=seed + 1)
    torch.manual_seed(seed)
    clf = Classifier(create_model("resnet-20", 16))
    fit(clf, x, label, TrainConfig(epochs=epochs, seed=seed), device=device)
    return clf.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--model", default=str(REPO_ROOT / "checkpoints" / "resnet-20.safetensors"))
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--severities", default="3,5")
    ap.add_argument("--backends", default=";".join(BACKENDS), help="names separated by ;")
    ap.add_argument("--type-train", type=int, default=30000, help="images for the corruption-type classifier")
    ap.add_argument("--type-epochs", type=int, default=4)
    ap.add_argument("--adain", default=str(REPO_ROOT / "checkpoints" / "style-resnet-20.safetensors"),
                    help="adain decoder (trained for --model first when missing)")
    ap.add_argument("--adain-epochs", type=int, default=4)
    ap.add_argument("--adain-train", type=int, default=0, help="training images for the decoder (0 = all)")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args()

    import numpy as np
    import torch

    from deeprepair.corruptions import CORRUPTIONS, corrupt
    from deeprepair.data import load_dataset
    from deeprepair.engine import predict, to_float
    from deeprepair.models.checkpoint import load_checkpoint
    from deeprepair.style import create_style

    prov = provenance()
    device = torch.device("cpu")
    test, train = load_dataset(args.data, "test"), load_dataset(args.data, "train")
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(test))
    ci, ri = perm[: args.n], perm[args.n: 2 * args.n]
    content_u8, refs_clean_u8, y = test.x[ci], test.x[ri], test.y[ci]
    content = to_float(torch.from_numpy(content_u8)).contiguous()
    model, _ = load_checkpoint(args.model, device)
    t0 = time.perf_counter()
    typer = train_type_classifier(train.x, 0, device, args.type_epochs, args.type_train)
    type_secs = time.perf_counter() - t0
    backends = args.backends.split(";")
    adain_secs = None
    if any(BACKENDS[b][0] == "adain" for b in backends):
        ck, adain_secs = adain_checkpoint(Path(args.adain), args.model, args.data, args.adain_epochs,
                                         args.adain_train)
        for b in backends:
            if BACKENDS[b][0] == "adain":
                BACKENDS[b][1]["checkpoint"] = ck

    def u8(t):
        return (t.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()

    sevs = [int(s) for s in args.severities.split(",")]
    clean_acc = float((predict(model, content_u8) == y).mean())
    res = {"clean_acc": clean_acc, "content": {}, "speed": {}, "cells": {}}
    # (b) content preservation with clean references; throughput
    refs_clean = to_float(torch.from_numpy(refs_clean_u8)).contiguous()
    for b in backends:
        name, kw = BACKENDS[b]
        st = create_style(name, **kw)
        out = st.transfer(content, refs_clean)
        res["content"][b] = float((predict(model, u8(out)) == y).mean())
        st.fit(refs_clean)
        idx = torch.from_numpy(rng.integers(0, args.n, 256))
        batch = content[torch.arange(256) % len(content)]
        st.transfer(batch, index=idx)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            st.transfer(batch, index=idx)
            times.append(time.perf_counter() - t)
        res["speed"][b] = 256 / float(np.median(times))
        print(f"{b:28s} content acc {res['content'][b]:.3f}  {res['speed'][b]:,.0f} img/s", flush=True)
    pc = profile(content)
    for c in CORRUPTIONS:
        for s in sevs:
            real_u8 = corrupt(content_u8, c, s, seed=1)
            refs_u8 = corrupt(refs_clean_u8, c, s, seed=2)
            real, refs = to_float(torch.from_numpy(real_u8)), to_float(torch.from_numpy(refs_u8))
            pr = profile(real).mean(0)
            d_clean = float((pc.mean(0) - pr).norm())
            target = CORRUPTIONS.index(c) + 1
            cell = {"d_clean": d_clean, "type_real": float((predict(typer, real_u8) == target).mean()),
                    "type_clean": float((predict(typer, content_u8) == target).mean()),
                    "acc_real": float((predict(model, real_u8) == y).mean())}
            for b in backends:
                name, kw = BACKENDS[b]
                out = create_style(name, **kw).transfer(content, refs)
                out_u8 = u8(out)
                d = float((profile(out).mean(0) - pr).norm())
                cell[b] = {"gap_closed": 1 - d / d_clean if d_clean > 0 else None,
                           "type_acc": float((predict(typer, out_u8) == target).mean()),
                           "model_acc": float((predict(model, out_u8) == y).mean())}
            res["cells"][f"{c}/{s}"] = cell
            print(c, s, {b: round(cell[b]["gap_closed"], 3) for b in backends}, flush=True)

    def mean_over(key, b, s=None):
        vals = [v[b][key] for k, v in res["cells"].items() if s is None or k.endswith(f"/{s}")]
        vals = [v for v in vals if v is not None]
        return float(np.mean(vals)) if vals else float("nan")

    lines = ["# Style transfer backends: do they carry the corruption?\n", provenance_markdown(prov),
             f"- {args.n} content images and {args.n} other reference images from the test set (seed 0); "
             f"severities {sevs}; type classifier: resnet-20, {args.type_train:,} training images "
             f"x {args.type_epochs} epochs ({type_secs:.0f} s)",
             f"- pre-trained model `{args.model}`: clean accuracy on the content images {clean_acc * 100:.1f}%"
             + (f"\n- adain decoder `{args.adain}`: trained {adain_secs:.0f} s on the training split"
                if adain_secs is not None else "") + "\n",
             "## Summary (mean over the 15 corruptions and the severities)\n",
             "| backend | gap closed (a) | type recognised (c), % | content kept: acc. with clean refs (b), % | img/s (batch 256) |",
             "|---|---:|---:|---:|---:|"]
    ceiling = float(np.mean([v["type_real"] for v in res["cells"].values()]))
    floor = float(np.mean([v["type_clean"] for v in res["cells"].values()]))
    for b in backends:
        lines.append(f"| {b} | {mean_over('gap_closed', b):.3f} | {mean_over('type_acc', b) * 100:.1f} | "
                     f"{res['content'][b] * 100:.1f} | {res['speed'][b]:,.0f} |")
    lines.append(f"| *real corruption (ceiling)* | 1 | {ceiling * 100:.1f} | - | - |")
    lines.append(f"| *clean image (floor)* | 0 | {floor * 100:.1f} | {clean_acc * 100:.1f} | - |")
    lines += ["", "## Per corruption and severity: gap closed (a) / type recognised % (c)\n",
              "| corruption/severity | " + " | ".join(backends) + " | real: type % |",
              "|---|" + "---:|" * (len(backends) + 1)]
    for k, v in res["cells"].items():
        lines.append(f"| {k} | " + " | ".join(f"{v[b]['gap_closed']:.2f} / {v[b]['type_acc'] * 100:.0f}" for b in backends)
                     + f" | {v['type_real'] * 100:.0f} |")
    write_results(args.out, "style", "\n".join(lines), {"provenance": prov, **res})


if __name__ == "__main__":
    main()
