"""Models as black boxes for the serving experiments: `f(batch) -> scores`, with a fingerprint for caching.

Every model the experiments serve — a trained network from `models/`, or any other classifier — is wrapped as a
`ServedModel`: a name, the dataset whose inputs it takes, a fingerprint that changes whenever the model changes
(the sha256 of its weights), and `predict`, which maps normalised float inputs (n, C, H, W) to class scores
(n, classes).
Coded queries are linear combinations of normalised queries, so `predict` must accept any real-valued input.

Inference runs in float32 by default, whose numbers do not depend on the CPU's bf16 support; `precision="bf16"`
serves under bf16 autocast (about 3x faster on CPUs with bf16 kernels, but its rounding differs between CPUs, and on
CPUs without them, e.g. AVX2-only ones, oneDNN emulates bf16 several times slower than float32); `"auto"` is bf16
where the device has bf16 kernels (`inference.native_bf16`), else fp32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from approxifer import inference, models

__all__ = ["PRECISIONS", "ServedModel", "resolve_precision", "served", "torch_predictor"]

PRECISIONS = ("fp32", "bf16", "auto")


@dataclass(frozen=True)
class ServedModel:
    name: str
    dataset: str
    fingerprint: str
    predict: Callable[[torch.Tensor], np.ndarray]  # (n, C, H, W) float32 -> (n, classes) float32
    device: str = "cpu"
    precision: str = "fp32"  # of the inference, fp32 or bf16 (what cached outputs depend on besides the weights)

    @property
    def cache_tag(self) -> str:
        """What cached outputs are keyed by: the weights' fingerprint and the inference precision."""
        return f"{self.fingerprint[:20]}-{self.precision}"


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of: {', '.join(PRECISIONS)}")
    return precision


def resolve_precision(precision: str, device: torch.device) -> str:
    """fp32 or bf16: `precision` itself, or for "auto" bf16 where `device` has bf16 kernels, else fp32."""
    if check_precision(precision) == "auto":
        return "bf16" if inference.native_bf16(device) else "fp32"
    return precision


def torch_predictor(
    model: nn.Module, device: torch.device, *, precision: str = "fp32", batch: int = 500
) -> Callable[[torch.Tensor], np.ndarray]:
    """`inference.predict` on `model` (moved to `device`, channels-last), in float32 or under bf16 autocast, as
    numpy."""
    bf16 = resolve_precision(precision, device) == "bf16"
    model = model.to(device).eval().to(memory_format=torch.channels_last)

    def predict(x: torch.Tensor) -> np.ndarray:
        return inference.predict(model, x, device, bf16=bf16, batch=batch).numpy()

    return predict


def served(dataset: str, arch: str, device: str = "auto", precision: str = "fp32", *, seed: int = 0) -> ServedModel:
    """A trained model from `models/` (sha256-verified) as a black box; `seed` k > 0 picks the same recipe trained
    with seed k (``models/<dataset>-<arch>-seed<k>.*``, `models.seed_variant`)."""
    dev = inference.pick_device(device)
    precision = resolve_precision(precision, dev)
    variant = models.seed_variant(seed)
    command = f"approxifer train {dataset} {arch} --seed {seed}" if seed else None
    predict = torch_predictor(models.load(dataset, arch, device=dev, variant=variant, command=command), dev,
                              precision=precision)  # fmt: skip
    card = models.load_card(dataset, arch, variant=variant, command=command)
    return ServedModel(f"{dataset}-{arch}{variant}", dataset, card["weights_sha256"], predict, str(dev), precision)
