"""A small fit + repair run for tests/test_distributed.py, in one process or under torchrun.

``python tests/_distributed_job.py OUT.safetensors [fp64|fp32] [METHOD] [field]``: trains a
ResNet-20 (3 classes) for one epoch on 53 seeded 32x32 noise images (batch 16: the last batch
of 5 splits 2 + 3 over two ranks), then repairs it with DeepRepair (or METHOD; style ops, JSD, distillation, L2 pull, and 16
unlabelled ``field`` images if asked) for one epoch on 40 images + 11 failures (the last batch
of 3 splits 1 + 2); rank 0 saves the trained and the repaired weights. ``fp64`` runs the
network in float64 (the inputs, augmentations and loss stay as in the product), which takes the
floating-point noise of the ReLU gates out of the comparison.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
import torch.nn as nn

from deeprepair import distributed
from deeprepair.data import ImageSet
from deeprepair.models import Classifier, create_model
from deeprepair.repair import RepairConfig, repair
from deeprepair.train import TrainConfig, fit


class Float64(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.double()


def main(out: str, dtype: str, method: str = "deeprepair", field: bool = False) -> None:
    distributed.setup()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 3, 64)
    torch.manual_seed(0)
    model = Classifier(create_model("resnet-20", 3))
    if dtype == "fp64":
        model = nn.Sequential(Float64(), model.double())
    cpu = torch.device("cpu")
    fit(model, x[:53], y[:53], TrainConfig(epochs=1, batch_size=16, lr=0.02, precision="fp32"), device=cpu)
    trained = {f"train.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    cfg = RepairConfig(method=method, epochs=1, batch_size=16, train_subset=40, val_train=0,
                       clusters=2, selection="last", distill=0.5, l2_pull=0.1, precision="fp32")
    repaired, _ = repair(model, ImageSet(x[:48], y[:48], list("abc")),
                         ImageSet(x[53:], (y[53:] + 1) % 3, list("abc")), cfg, device=cpu,
                         field=x[48:64] if field else None)
    if distributed.is_main():
        from safetensors.torch import save_file

        state = {**trained, **{f"repair.{k}": v for k, v in repaired.state_dict().items()}}
        save_file({k: v.contiguous() for k, v in state.items()}, out)


if __name__ == "__main__":
    argv = sys.argv[1:] + [None] * 3
    main(argv[0], argv[1] or "fp64", argv[2] or "deeprepair", argv[3] == "field")
