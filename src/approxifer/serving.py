"""Models as black boxes for the serving experiments: `f(batch) -> scores`, with a fingerprint for caching.

Every model the experiments serve — a trained network from `models/`, or any other classifier — is wrapped as a
`ServedModel`: a name, the dataset whose inputs it takes, a fingerprint that changes whenever the model changes
(the sha256 of its weights), and `predict`, which maps normalised float inputs (n, C, H, W) to class scores
(n, classes).
Coded queries are linear combinations of normalised queries, so `predict` must accept any real-valued input.

Inference runs in float32 by default, so that every number is the same on any CPU; `precision="bf16"` serves under
bf16 autocast (about 3x faster on CPUs with native bf16, but its rounding differs between CPUs, and on CPUs without
it, e.g. AVX2-only ones, oneDNN emulates bf16 several times slower than float32).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from approxifer import models
from approxifer.train import pick_device

__all__ = ["PRECISIONS", "ServedModel", "served", "torch_predictor"]

PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class ServedModel:
    name: str
    dataset: str
    fingerprint: str
    predict: Callable[[torch.Tensor], np.ndarray]  # (n, C, H, W) float32 -> (n, classes) float32
    device: str = "cpu"
    precision: str = "fp32"  # of the inference (what cached outputs depend on besides the weights)

    @property
    def cache_tag(self) -> str:
        """What cached outputs are keyed by: the weights' fingerprint and, if not fp32, the inference precision."""
        return self.fingerprint[:20] + ("" if self.precision == "fp32" else f"-{self.precision}")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of: {', '.join(PRECISIONS)}")
    return precision


def torch_predictor(
    model: nn.Module, device: torch.device, *, precision: str = "fp32", batch: int = 500
) -> Callable[[torch.Tensor], np.ndarray]:
    """Batched inference in channels-last memory, in float32 or under bf16 autocast; float32 scores on the CPU."""
    bf16 = check_precision(precision) == "bf16"
    model = model.to(device).eval().to(memory_format=torch.channels_last)

    @torch.no_grad()
    def predict(x: torch.Tensor) -> np.ndarray:
        out = []
        for i in range(0, len(x), batch):
            xb = x[i : i + batch].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                out.append(model(xb).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)

    return predict


def served(dataset: str, arch: str, device: str = "auto", precision: str = "fp32") -> ServedModel:
    """A trained model from `models/` (sha256-verified) as a black box."""
    dev = pick_device(device)
    predict = torch_predictor(models.load(dataset, arch, device=dev), dev, precision=precision)
    card = models.load_card(dataset, arch)
    return ServedModel(f"{dataset}-{arch}", dataset, card["weights_sha256"], predict, str(dev), precision)
