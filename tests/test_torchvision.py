"""Users' torchvision models go through the whole path.

torchvision's ResNet-18 (and -50) given as ``--factory torchvision.models:resnet18``, on a 64 px and
a 224 px RGB image folder, a grey 28 px PNG folder and true 1-channel 28 px data: corrupt -> train
-> mine -> repair -> evaluate through the CLI, and the user's own weights file loaded without
unpickling code. The registered models go through the same path in tests/test_image_sizes.py.

torchvision is an optional extra (``pip install -e '.[torchvision]'``, which pins torch 2.14.1 and
torchvision 0.29.1; docs/torchvision.md): where it cannot be imported, e.g. next to the project's
torch 2.13.0 CPU wheel, this file is skipped.
"""

from __future__ import annotations

import pytest

try:
    import torchvision  # noqa: F401
except Exception as exc:  # ImportError, or a torchvision built for another torch (RuntimeError)
    pytest.skip(f"torchvision cannot be imported here ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
                "install the extra in its own environment: pip install -e '.[torchvision,test]' (docs/torchvision.md)",
                allow_module_level=True)

import torch

from test_image_sizes import FOLDER_IDS, FOLDERS, cli, cli_error, grey_npz, image_folder, whole_path

RESNET18 = ["--factory", "torchvision.models:resnet18"]
USE18 = [*RESNET18, "--num-classes", "2"]

GREY_STEM = '''
import torch.nn as nn
import torchvision


def resnet18_grey(num_classes=1000):
    """torchvision's ResNet-18 with a 1-channel stem."""
    net = torchvision.models.resnet18(num_classes=num_classes)
    net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return net
'''


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("DEEPREPAIR_DATA", raising=False)


@pytest.mark.parametrize("size, channels", FOLDERS, ids=FOLDER_IDS)
def test_resnet18_whole_path_on_image_folders(tmp_path, size, channels):
    """train --factory writes the module's own weights (with its normalisation and classes in the
    header); mine, repair and evaluate read them with --factory; the repair is the module's own
    weights (model.safetensors) that evaluate reads with the same flags."""
    from deeprepair.models.checkpoint import load_model

    data = image_folder(tmp_path / "data", size, channels, *((8, 4) if size > 100 else ()))
    whole_path(data, tmp_path, RESNET18, USE18, "model.safetensors")
    _, meta = load_model(tmp_path / "rep" / "model.safetensors", factory=RESNET18[1], num_classes=2,
                         input_size=(size, size, 3))
    assert meta["arch"] == "factory:torchvision.models:resnet18" and meta["input_size"] == [size, size, 3]


def test_resnet18_on_one_channel_data_sees_rgb_copies(tmp_path):
    """True grey data (x: N x 28 x 28 x 1): the default 3-value normalisation copies the channel to
    R, G and B, so the RGB stem reads it, through the whole path."""
    data = grey_npz(tmp_path / "data")
    whole_path(data, tmp_path, RESNET18, USE18, "model.safetensors")


def test_one_channel_stem_with_a_one_value_normalisation(tmp_path, monkeypatch):
    """A user's factory with a 1-channel stem on 1-channel data needs a 1-value --mean/--std."""
    (tmp_path / "greynets.py").write_text(GREY_STEM)
    monkeypatch.syspath_prepend(str(tmp_path))
    data = grey_npz(tmp_path / "data")
    grey = ["--factory", "greynets:resnet18_grey", "--mean", "0.5", "--std", "0.25"]
    # the normalisation is recorded in the weights: the later commands need only --factory and --num-classes
    whole_path(data, tmp_path, grey, [*grey[:2], "--num-classes", "2"], "model.safetensors")


def test_mismatched_channels_are_one_line_errors(tmp_path, monkeypatch, capsys):
    (tmp_path / "greynets.py").write_text(GREY_STEM)
    monkeypatch.syspath_prepend(str(tmp_path))
    data = grey_npz(tmp_path / "data")
    out = tmp_path / "n.safetensors"
    err = cli_error(capsys, "train", *RESNET18, "--mean", 0.5, "--std", 0.5, "--data", data, "--out", out)
    assert "1x1x28x28" in err and "3 values" in err  # RGB stem, grey kept 1-channel
    err = cli_error(capsys, "train", "--factory", "greynets:resnet18_grey", "--data", data, "--out", out)
    assert "1x1x28x28" in err  # 1-channel stem, grey copied to 3 channels by the default normalisation
    rgb = image_folder(tmp_path / "rgb", 64, 3)
    err = cli_error(capsys, "train", "--factory", "greynets:resnet18_grey", "--mean", 0.5, "--std", 0.5,
                    "--data", rgb, "--out", out)
    assert "1x3x64x64" in err and "1-channel stem" in err


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_users_own_weights_file(tmp_path, capsys, arch):
    """The user's own state dict (torch.save(model.state_dict())) at 64 px: evaluated, mined and
    used as train --init; a .pth holding a pickled module is refused unless --allow-pickle."""
    import torchvision

    data = image_folder(tmp_path / "data", 64, 3)
    torch.manual_seed(0)
    net = getattr(torchvision.models, arch)(num_classes=2).eval()
    torch.save(net.state_dict(), tmp_path / "own.pth")
    use = ["--factory", f"torchvision.models:{arch}", "--num-classes", 2,
           "--mean", 0.485, 0.456, 0.406, "--std", 0.229, 0.224, 0.225]
    cli("corrupt", "--data", data, "--out", tmp_path / "c", "--corruptions", "fog")
    cli("evaluate", "--model", tmp_path / "own.pth", *use, "--data", data, "--out", tmp_path / "e",
        "--corrupted", tmp_path / "c", "--corruptions", "fog")
    cli("mine", "--model", tmp_path / "own.pth", *use, "--data", data, "--out", tmp_path / "mine",
        "--corrupted", tmp_path / "c", "--corruptions", "fog", "--collect", 4)
    if arch == "resnet18":
        cli("train", "--factory", "torchvision.models:resnet18", "--init", tmp_path / "own.pth", "--data", data,
            "--out", tmp_path / "t.safetensors", "--epochs", 1, "--batch-size", 8, "--lr", 0.01)
    torch.save(net, tmp_path / "pickled.pth")  # a whole module: unpickling it could run code
    err = cli_error(capsys, "evaluate", "--model", tmp_path / "pickled.pth", *use, "--data", data,
                    "--out", tmp_path / "e2")
    assert "--allow-pickle" in err
