"""Neural style transfer with AdaIN (Huang & Belongie 2017) or WCT (Li et al. 2017) at a bottleneck.

The encoder is the first layers of a classifier trained on the same data -- by default the
deployed model itself, up to its last full-resolution feature map -- kept frozen. A small
decoder is trained by this project to invert it (``train_decoder``: pixel reconstruction plus
feature reconstruction, as WCT's universal decoders), on the user's own training images, so
no VGG download is needed. Transfer re-normalises the content's features to the reference's
per-channel statistics and decodes:

    AdaIN(f_c, f_s) = sigma(f_s) * (f_c - mu(f_c)) / sigma(f_c) + mu(f_s)
    WCT(f_c, f_s)   = Cov(f_s)^(1/2) Cov(f_c)^(-1/2) (f_c - mu(f_c)) + mu(f_s)

Users with their own encoder/decoder (e.g. VGG-19 and a matching decoder) pass the two modules
to ``AdaINStyle(encoder=..., decoder=...)``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import DeepRepairError
from .base import StyleTransfer

FORMAT = "deeprepair-style-adain/1"
EPS = 1e-5


class _Stop(Exception):
    pass


class FeatureEncoder(nn.Module):
    """``model`` run up to the output of its submodule ``layer``, frozen (the rest is skipped)."""

    def __init__(self, model: nn.Module, layer: str | None = None, size: int = 32, channels: int = 3):
        super().__init__()
        if isinstance(model, torch.jit.ScriptModule):
            raise DeepRepairError("a TorchScript model cannot be cut at a layer; give the model as a "
                                  "deeprepair checkpoint or --factory instead")
        self.model = model.eval().requires_grad_(False)
        names = dict(model.named_modules())
        self.layer = layer or last_full_resolution_layer(model, size, channels)
        if self.layer not in names or self.layer == "":
            raise DeepRepairError(f"layer {self.layer!r} is not a submodule of the encoder model; "
                                  f"choose one of: {', '.join(n for n in names if n)[:300]}")
        self._module = names[self.layer]

    def train(self, mode: bool = True) -> FeatureEncoder:  # the encoder stays in eval mode
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: list[torch.Tensor] = []

        def grab(_m, _i, o):
            out.append(o)
            raise _Stop

        handle = self._module.register_forward_hook(grab)
        try:
            self.model(x)
        except _Stop:
            pass
        finally:
            handle.remove()
        if not out or not isinstance(out[0], torch.Tensor) or out[0].ndim != 4:
            raise DeepRepairError(f"layer {self.layer!r} does not output a (B, C, H, W) feature map")
        return out[0]


def last_full_resolution_layer(model: nn.Module, size: int = 32, channels: int = 3) -> str:
    """The last submodule (in the order outputs are produced) whose output is a feature map at
    the input's resolution with more channels than the image: the deepest features that still
    see every pixel, where noise, blur and compression blocks are visible."""
    order: list[tuple[str, tuple]] = []
    handles = [m.register_forward_hook(lambda _m, _i, o, n=n: order.append((n, tuple(o.shape))
                                                                          if isinstance(o, torch.Tensor) else None))
               for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            model.eval()(torch.rand(1, channels, size, size))
    finally:
        for h in handles:
            h.remove()
    full = [n for n, s in order if len(s) == 4 and s[2:] == (size, size) and s[1] > channels]
    if not full:
        raise DeepRepairError("the encoder model has no full-resolution feature map; give --layer")
    return full[-1]


def make_decoder(channels: int, upsamples: int = 0, width: int = 64) -> nn.Sequential:
    """Convolutions (and nearest-neighbour 2x upsampling) from ``channels`` features back to RGB."""
    layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
    for _ in range(upsamples):
        layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width, width, 3, padding=1),
                   nn.ReLU(inplace=True)]
    layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(width, 3, 3, padding=1)]
    return nn.Sequential(*layers)


def mean_std(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image, per-channel mean and standard deviation over space: (B, C) each."""
    flat = f.flatten(2)
    return flat.mean(-1), (flat.var(-1, unbiased=False) + EPS).sqrt()


def adain(f: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """AdaIN: ``f``'s per-channel statistics replaced by (``mu``, ``sigma``), each (B, C)."""
    m, s = mean_std(f)
    return (f - m[..., None, None]) / s[..., None, None] * sigma[..., None, None] + mu[..., None, None]


def _sym_power(cov: torch.Tensor, power: float) -> torch.Tensor:
    evals, evecs = torch.linalg.eigh(cov)
    return evecs @ torch.diag_embed(evals.clamp_min(EPS).pow(power)) @ evecs.transpose(-1, -2)


def mean_colour(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image channel mean (B, C) and covariance square root (B, C, C) for WCT."""
    flat = f.flatten(2).double()
    mu = flat.mean(-1)
    c = flat - mu[..., None]
    cov = c @ c.transpose(1, 2) / flat.shape[-1]
    return mu.float(), _sym_power(cov, 0.5).float()


def wct(f: torch.Tensor, mu: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """Whitening-colouring: ``f`` decorrelated, then given the reference's covariance and mean."""
    b, c, h, w = f.shape
    flat = f.flatten(2).double()
    m = flat.mean(-1, keepdim=True)
    x = flat - m
    white = _sym_power(x @ x.transpose(1, 2) / (h * w), -0.5)
    out = colour.double() @ (white @ x) + mu.double()[..., None]
    return out.float().view(b, c, h, w)


class AdaINStyle(StyleTransfer):
    """Encode, re-normalise features to a reference's statistics (``mode`` adain or wct), decode."""

    name = "adain"

    def __init__(self, checkpoint: str | Path | None = None, *, encoder: nn.Module | None = None,
                 decoder: nn.Module | None = None, mode: str = "adain", batch_size: int = 512):
        super().__init__()
        if mode not in ("adain", "wct"):
            raise DeepRepairError(f"adain mode must be adain or wct, got {mode!r}")
        if checkpoint is not None:
            encoder, decoder, self.meta = load_style_checkpoint(checkpoint, encoder)
        elif encoder is None or decoder is None:
            raise DeepRepairError("the adain backend needs checkpoint= (from `deeprepair train-style`) "
                                  "or both encoder= and decoder= modules")
        else:
            self.meta = {}
        self.encoder, self.decoder = encoder.eval(), decoder.eval()
        self.mode, self.batch_size = mode, batch_size

    def _to(self, device: torch.device) -> None:
        first = next(self.decoder.parameters())
        if first.device != device:
            self.encoder.to(device)
            self.decoder.to(device)

    @torch.no_grad()
    def stats(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._to(images.device)
        parts = [(mean_std if self.mode == "adain" else mean_colour)(self.encoder(images[i:i + self.batch_size]))
                 for i in range(0, len(images), self.batch_size)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    @torch.no_grad()
    def apply(self, content: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        self._to(content.device)
        f = self.encoder(content)
        f = adain(f, *stats) if self.mode == "adain" else wct(f, *stats)
        return self.decoder(f)


# --------------------------------------------------------------------------- training the decoder
def train_decoder(encoder: FeatureEncoder, x: np.ndarray, *, epochs: int = 4, batch_size: int = 128,
                  lr: float = 2e-3, feature_weight: float = 1.0, width: int = 64, seed: int = 0,
                  device: torch.device | str = "cpu", precision: str = "auto", state_path: Path | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  on_epoch: Callable[[dict], None] | None = None) -> tuple[nn.Sequential, list[dict]]:
    """A decoder that inverts ``encoder`` on uint8 NHWC images ``x`` (random crops and flips).

    Loss: ``mse(D(E(x)), x) + feature_weight * mse(E(D(E(x))), E(x)) / var(E(x))``; Adam with a
    cosine schedule. With ``state_path`` every epoch is saved and a rerun resumes after the last
    finished one.
    """
    from ..engine import autocast, batches, resolve_precision, to_float
    from ..train import crop_flip, load_run_state, save_run_state

    device = torch.device(device)
    precision = resolve_precision(precision, device)
    encoder.to(device)
    h, w = x.shape[1:3]
    with torch.no_grad():
        probe = encoder(torch.zeros(1, x.shape[3], h, w, device=device))
    ups = int(round(math.log2(h / probe.shape[2])))
    torch.manual_seed(seed)
    decoder = make_decoder(probe.shape[1], ups, width).to(device)
    opt = torch.optim.Adam(decoder.parameters(), lr=lr)
    config = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "feature_weight": feature_weight,
              "width": width, "seed": seed, "n": len(x)}
    start, history = 0, []
    if state_path is not None and Path(state_path).exists():
        meta, _ = load_run_state(Path(state_path), decoder, opt)
        if meta.get("config") != config:
            raise DeepRepairError(f"{state_path} was written by a run with other settings; delete it "
                                  "to start over, or rerun with the same settings")
        start, history = meta["epochs_done"], meta["history"]
    xt = torch.from_numpy(np.ascontiguousarray(x))
    n = len(xt)
    steps = math.ceil(n / batch_size)
    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(seed * 100003 + epoch)
        order = torch.randperm(n, generator=gen)
        decoder.train()
        pix_sum = feat_sum = 0.0
        for i, s in enumerate(batches(n, batch_size)):
            for g in opt.param_groups:
                g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * (epoch * steps + i) / (epochs * steps)))
            xb = to_float(crop_flip(xt[order[s]], gen).to(device))
            with autocast(device, precision):
                with torch.no_grad():
                    f = encoder(xb)
                out = decoder(f)
                f2 = encoder(out) if feature_weight else None
            pix = F.mse_loss(out.float(), xb.expand_as(out))  # grey images: every RGB channel learns the grey
            loss = pix
            if f2 is not None:
                feat = F.mse_loss(f2.float(), f.float()) / f.float().var().clamp_min(EPS)
                loss = pix + feature_weight * feat
                feat_sum += feat.item() * len(xb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            pix_sum += pix.item() * len(xb)
            if progress is not None:
                progress(len(xb), epoch)
        if not math.isfinite(pix_sum):
            raise DeepRepairError(f"decoder training diverged at epoch {epoch + 1}; lower --lr")
        row = {"epoch": epoch + 1, "pixel_mse": pix_sum / n, "feature_mse": feat_sum / n,
               "psnr": -10 * math.log10(max(pix_sum / n, 1e-12)), "seconds": time.perf_counter() - t0}
        history.append(row)
        if state_path is not None:
            save_run_state(Path(state_path), decoder, opt, {"config": config, "epochs_done": epoch + 1,
                                                         "history": history})
        if on_epoch is not None:
            on_epoch(row)
    return decoder.eval(), history


# --------------------------------------------------------------------------- checkpoint
def save_style_checkpoint(path: str | Path, encoder: FeatureEncoder, decoder: nn.Sequential,
                          meta: dict) -> Path:
    """Decoder weights, the encoder's weights (for a registered architecture) and metadata in one
    safetensors file, plus the metadata as JSON beside it; atomic."""
    from safetensors.torch import save

    from ..data.io import atomic_write_bytes

    path = Path(path)
    if path.suffix != ".safetensors":
        raise DeepRepairError(f"style checkpoint path must end in .safetensors, got {path}")
    convs = [m for m in decoder if isinstance(m, nn.Conv2d)]
    meta = {**meta, "format": FORMAT, "layer": encoder.layer, "decoder": {
        "channels": convs[0].in_channels, "width": convs[0].out_channels,
        "upsamples": sum(isinstance(m, nn.Upsample) for m in decoder)}}
    tensors = {f"decoder.{k}": v.detach().cpu().contiguous() for k, v in decoder.state_dict().items()}
    if meta.get("encoder", {}).get("arch"):
        tensors.update({f"encoder.{k}": v.detach().cpu().contiguous()
                        for k, v in encoder.model.state_dict().items()})
    text = json.dumps(meta, indent=2, sort_keys=True)
    atomic_write_bytes(path, save(tensors, metadata={"deeprepair": text}))
    atomic_write_bytes(path.with_suffix(".json"), (text + "\n").encode())
    return path


def check_style_checkpoint(path: str | Path) -> dict:
    """The metadata of a style checkpoint, read without its tensors: a one-line error when ``path``
    is missing, not a safetensors file, or another kind of file (a classifier's checkpoint, random
    weights, a pickle), as model checkpoints are checked before any work starts."""
    meta, _ = _read_style_file(Path(path), tensors=False)
    return _check_style_metadata(meta, Path(path), True)


def _read_style_file(path: Path, tensors: bool) -> tuple[dict, dict]:
    """(metadata, tensors or {}) of a style checkpoint file, opened once; one line when it is
    missing or not a readable safetensors file."""
    from safetensors import safe_open

    if not path.is_file():
        raise DeepRepairError(f"style checkpoint {path} not found; make one with `deeprepair train-style`")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("deeprepair", "{}"))
            return meta, ({k: f.get_tensor(k) for k in f.keys()} if tensors else {})
    except Exception as exc:
        raise DeepRepairError(f"{path} is not a style checkpoint: not a readable safetensors file "
                              f"({type(exc).__name__}); make one with `deeprepair train-style`") from None


def load_style_checkpoint(path: str | Path, encoder_model: nn.Module | None = None
                          ) -> tuple[FeatureEncoder, nn.Sequential, dict]:
    """(encoder, decoder, metadata) from ``save_style_checkpoint``'s file; ``encoder_model`` is
    needed only when the encoder was a user's own model (its weights are not stored)."""
    from ..models import Classifier, create_model, list_models

    path = Path(path)
    meta, tensors = _read_style_file(path, tensors=True)
    from ..models.checkpoint import check_finite

    meta = _check_style_metadata(meta, path, encoder_model is None)
    check_finite(tensors, path)
    enc = meta.get("encoder", {})
    if encoder_model is None:
        if enc.get("arch") not in list_models():
            raise DeepRepairError(f"{path} was trained on a user model's features; pass that model as "
                                  "encoder= (its weights are not stored in the style checkpoint)")
        encoder_model = Classifier(create_model(enc["arch"], int(enc["num_classes"])),
                                   enc.get("mean", (0.5,) * 3), enc.get("std", (0.5,) * 3))
        _load_part(encoder_model, tensors, "encoder.", path)
    d = meta["decoder"]
    decoder = make_decoder(d["channels"], d["upsamples"], d["width"])
    _load_part(decoder, tensors, "decoder.", path)
    return FeatureEncoder(encoder_model, meta["layer"]), decoder.eval(), meta


def _check_style_metadata(meta, path: Path, with_encoder: bool) -> dict:
    """The schema of a style checkpoint's metadata (its encoder part is a model's: check_metadata)."""
    from ..models import list_models
    from ..models.checkpoint import check_metadata

    fix = "remake it with `deeprepair train-style`"
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise DeepRepairError(f"{path} is not a deeprepair style checkpoint (format {got!r})")
    d = meta.get("decoder")
    if not (isinstance(d, dict) and all(isinstance(d.get(k), int) and not isinstance(d.get(k), bool) for k in
                                         ("channels", "upsamples", "width"))
            and d["channels"] > 0 and d["width"] > 0 and 0 <= d["upsamples"] <= 8):
        raise DeepRepairError(f"{path}: metadata field 'decoder' must give positive integers channels and width "
                              f"and upsamples 0..8, got {d!r}; {fix}")
    if not isinstance(meta.get("layer"), str):
        raise DeepRepairError(f"{path}: metadata field 'layer' must name the encoder's layer, got {meta.get('layer')!r}; {fix}")
    enc = meta.get("encoder", {})
    if not isinstance(enc, dict):
        raise DeepRepairError(f"{path}: metadata field 'encoder' must be a JSON object, got {type(enc).__name__}; {fix}")
    if with_encoder and enc.get("arch") in list_models():
        check_metadata(enc, f"{path} (its encoder)")
    return meta


def _load_part(module: nn.Module, tensors: dict, prefix: str, path: Path) -> None:
    try:
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    except RuntimeError as exc:
        first = " ".join(str(exc).splitlines()[:2])
        raise DeepRepairError(f"{path}: its {prefix[:-1]} weights do not fit the network its metadata describes "
                              f"({first[:200]}); remake it with `deeprepair train-style`") from None
