"""Model architectures by name, and the project's trained weights (safetensors + a JSON model card).

`build(arch, dataset)` makes an untrained network for a dataset's input shape; `load(dataset, arch)` returns the
trained one in eval mode after checking the sha256 that its model card records. Weights are never unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision.models.mobilenetv2 import MobileNetV2
from torchvision.models.resnet import BasicBlock, ResNet
from torchvision.models.vgg import VGG, cfgs, make_layers

from approxifer.data import REPO_ROOT, info

__all__ = [
    "ARCHS",
    "ModelError",
    "build",
    "card_path",
    "load",
    "load_card",
    "models_dir",
    "read_card",
    "save",
    "seed_variant",
    "weights_path",
]


class ModelError(RuntimeError):
    """Trained weights are missing, or do not match their model card."""


def _cifar_resnet(layers: list[int]) -> Callable[[int, int], nn.Module]:
    """torchvision's ResNet with the CIFAR stem of He et al.: a 3x3 stride-1 convolution and no max-pool."""

    def make(in_channels: int, num_classes: int) -> nn.Module:
        net = ResNet(BasicBlock, layers, num_classes=num_classes)
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        return net

    return make


def _cifar_vgg16(in_channels: int, num_classes: int, size: int) -> nn.Module:
    """torchvision's VGG-16 with batch norm, CIFAR variant: the five max-pools take 32x32 to 512x1x1, so no 7x7
    pooling and one linear classifier; 28x28 inputs are padded to 32x32 by the first conv."""
    net = VGG(make_layers(cfgs["D"], batch_norm=True), num_classes=num_classes)
    net.features[0] = nn.Conv2d(in_channels, 64, kernel_size=3, padding=1 + (32 - size) // 2)
    net.avgpool = nn.Identity()
    net.classifier = nn.Linear(512, num_classes)
    return net


def _cifar_mobilenetv2(in_channels: int, num_classes: int) -> nn.Module:
    """torchvision's MobileNetV2, CIFAR variant: stride 1 in the stem and in the first 24-channel block (total
    stride 8 instead of 32, so a 32x32 input ends at 4x4)."""
    # (expansion t, channels c, repeats n, stride s) of torchvision's default, with s = 1 in the 24-channel stage
    setting = [[1, 16, 1, 1], [6, 24, 2, 1], [6, 32, 3, 2], [6, 64, 4, 2]]
    setting += [[6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]
    net = MobileNetV2(num_classes=num_classes, inverted_residual_setting=setting)
    net.features[0][0] = nn.Conv2d(in_channels, 32, kernel_size=3, stride=1, padding=1, bias=False)
    return net


def _lenet5(in_channels: int, num_classes: int, size: int) -> nn.Module:
    """LeCun et al. (1998) with ReLU and max-pooling; 28x28 inputs are padded to 32x32 by the first conv."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2 if size == 28 else 0), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes),
    )  # fmt: skip


def _mlp(in_features: int, num_classes: int) -> nn.Module:
    """Two hidden layers of 512 and 256 ReLU units."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(in_features, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
        nn.Linear(256, num_classes),
    )  # fmt: skip


ARCHS: dict[str, Callable[[int, int, int], nn.Module]] = {
    "resnet18": lambda c, s, k: _cifar_resnet([2, 2, 2, 2])(c, k),
    "resnet34": lambda c, s, k: _cifar_resnet([3, 4, 6, 3])(c, k),
    "vgg16": lambda c, s, k: _cifar_vgg16(c, k, s),
    "mobilenetv2": lambda c, s, k: _cifar_mobilenetv2(c, k),
    "lenet5": lambda c, s, k: _lenet5(c, k, s),
    "mlp": lambda c, s, k: _mlp(c * s * s, k),
}


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")


def build(arch: str, dataset: str) -> nn.Module:
    """An untrained `arch` for `dataset`'s input shape (C channels, H x W) and number of classes."""
    _check_arch(arch)
    d = info(dataset)
    return ARCHS[arch](d.shape[2], d.shape[0], len(d.classes))


# ---------------------------------------------------------------- trained weights


def seed_variant(seed: int) -> str:
    """The file suffix of a model trained with another seed than the recipe's default 0: ``-seed<k>``.

    Seed 0 is the shipped model (``models/<dataset>-<arch>.*``); seed k is ``models/<dataset>-<arch>-seed<k>.*``,
    trained with the same recipe, to measure how much a result depends on which trained model was drawn."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return f"-seed{seed}" if seed else ""


def models_dir() -> Path:
    """Where trained weights live: ``$APPROXIFER_MODELS``, else ``models/`` in the checkout."""
    return Path(os.environ.get("APPROXIFER_MODELS", REPO_ROOT / "models"))


def weights_path(dataset: str, arch: str, variant: str = "") -> Path:
    """``models/<dataset>-<arch><variant>.safetensors``; a variant names a derived model (e.g. ``-parityK8``)."""
    return models_dir() / f"{dataset}-{arch}{variant}.safetensors"


def card_path(dataset: str, arch: str, variant: str = "") -> Path:
    return models_dir() / f"{dataset}-{arch}{variant}.json"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _train_command(dataset: str, arch: str) -> str:
    return f"make train MODELS={dataset}:{arch}` or `approxifer train {dataset} {arch}"


def load_card(dataset: str, arch: str, *, variant: str = "", command: str | None = None) -> dict:
    """The model card of a trained model (accuracy, recipe, seed, wall time, sha256, command...).

    `variant` and `command` name a derived model (file suffix) and the command that trains it, for the errors.
    """
    info(dataset)
    _check_arch(arch)
    path, weights = card_path(dataset, arch, variant), weights_path(dataset, arch, variant)
    if not path.exists() or not weights.exists():
        raise ModelError(
            f"no trained {arch}{variant} for {dataset} in {models_dir()} (looked for {path.name} and "
            f"{weights.name}); create it with `{command or _train_command(dataset, arch)}`"
        )
    return read_card(path, dataset=dataset, arch=arch)


def read_card(path: Path, **names: str) -> dict:
    """The model card at `path`: a JSON object with the `weights_sha256` of its weights, whose fields named in `names`
    (e.g. ``dataset``, ``arch``), where it has them, agree with the file name. Else `ModelError` naming the file."""
    restore = f"restore it (git checkout {path.name}) or retrain the model"
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ModelError(f"cannot read the model card {path}: {e}; {restore}") from None
    if not isinstance(card, dict):
        raise ModelError(f"the model card {path} holds a JSON {type(card).__name__}, not an object; {restore}")
    sha = card.get("weights_sha256")
    if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        raise ModelError(f"the model card {path} has no weights_sha256 (64 hex digits), got {sha!r}; {restore}")
    for field, want in names.items():
        if field in card and card[field] != want:
            raise ModelError(
                f"the model card {path} is for {field} {card[field]!r}, but its file name says {want!r}; {restore}"
            )
    return card


def load(
    dataset: str, arch: str, device: str | torch.device = "cpu", *, variant: str = "", command: str | None = None
) -> nn.Module:
    """The trained model in eval mode (float32), after checking its weights' sha256 against the model card."""
    card = load_card(dataset, arch, variant=variant, command=command)
    path = weights_path(dataset, arch, variant)
    got = file_sha256(path)
    if got != card["weights_sha256"]:
        raise ModelError(
            f"{path.name} has sha256 {got} but its model card records {card['weights_sha256']}: the weights "
            f"were changed or damaged; restore them (git checkout {path.name}) or retrain with "
            f"`{command or _train_command(dataset, arch)}`"
        )
    model = build(arch, dataset)
    model.load_state_dict(load_file(path))  # copies and casts the stored fp16/fp32 tensors into the fp32 model
    return model.to(device).eval()


def save(model: nn.Module, dataset: str, arch: str, card: dict, *, half: bool, variant: str = "") -> dict:
    """Write the weights (fp16 if `half`) and the model card with their sha256; return the card."""
    _check_arch(arch)
    path = weights_path(dataset, arch, variant)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.half() if half and v.is_floating_point() else v).contiguous().cpu() for k, v in model.state_dict().items()
    }
    save_file(state, path)
    card = {**card, "weights_dtype": "float16" if half else "float32", "weights_sha256": file_sha256(path)}
    card_path(dataset, arch, variant).write_text(json.dumps(card, indent=2) + "\n")
    return card
