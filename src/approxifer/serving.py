"""Models as black boxes for the serving experiments: `f(batch) -> scores`, with a fingerprint for caching.

Every model the experiments serve — a trained network from `models/`, or any other classifier — is wrapped as a
`ServedModel`: a name, the dataset whose inputs it takes, a fingerprint that changes whenever the model changes
(the sha256 of its weights), and `predict`, which maps normalised float inputs (n, C, H, W) to class scores
(n, classes).
Coded queries are linear combinations of normalised queries, so `predict` must accept any real-valued input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from approxifer import data, models
from approxifer.train import pick_device

__all__ = ["ServedModel", "served", "torch_predictor"]


@dataclass(frozen=True)
class ServedModel:
    name: str
    dataset: str
    fingerprint: str
    predict: Callable[[torch.Tensor], np.ndarray]  # (n, C, H, W) float32 -> (n, classes) float32
    device: str = "cpu"


def torch_predictor(
    model: nn.Module, device: torch.device, *, batch: int = 500
) -> Callable[[torch.Tensor], np.ndarray]:
    """Batched inference: bf16 autocast and channels-last on CPU and CUDA; float32 scores back on the CPU."""
    model = model.to(device).eval().to(memory_format=torch.channels_last)

    @torch.no_grad()
    def predict(x: torch.Tensor) -> np.ndarray:
        out = []
        for i in range(0, len(x), batch):
            xb = x[i : i + batch].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                out.append(model(xb).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)

    return predict


def served(dataset: str, arch: str, device: str = "auto") -> ServedModel:
    """A trained model from `models/` (sha256-verified) as a black box."""
    dev = pick_device(device)
    model = models.load(dataset, arch, device=dev)
    data.info(dataset)
    card = models.load_card(dataset, arch)
    return ServedModel(f"{dataset}-{arch}", dataset, card["weights_sha256"], torch_predictor(model, dev), str(dev))
