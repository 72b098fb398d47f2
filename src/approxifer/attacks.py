"""What Byzantine workers send: a suite of attacks on the worker outputs of a round.

Every attack maps honest outputs `Y` (G, N, C) and an adversary mask (G, N) to corrupted outputs; honest rows are
left untouched. Adversaries are placed uniformly at random (`random_adversaries`) or at chosen positions
(`placed_adversaries`). The Gaussian attack is the paper's; sign flip is one of the authors' scripts; the rest
probe where the locator breaks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["ATTACKS", "attack", "placed_adversaries", "random_adversaries"]


def random_adversaries(G: int, N: int, E: int, rng: np.random.Generator) -> np.ndarray:
    """A (G, N) boolean mask with E adversaries per round, uniformly at random."""
    mask = np.zeros((G, N), bool)
    if E:
        np.put_along_axis(mask, np.argsort(rng.random((G, N)), axis=1)[:, :E], True, axis=1)
    return mask


def placed_adversaries(G: int, N: int, positions: list[int]) -> np.ndarray:
    """The same adversarial workers `positions` in every round."""
    mask = np.zeros((G, N), bool)
    mask[:, positions] = True
    return mask


def _gaussian(Y, mask, rng, sigma: float = 1.0):
    return Y + mask[..., None] * rng.normal(0.0, sigma, Y.shape)


def _sign_flip(Y, mask, rng):
    return np.where(mask[..., None], -Y, Y)


def _constant(Y, mask, rng, value: float = 0.0):
    return np.where(mask[..., None], value, Y)


def _label_swap(Y, mask, rng):
    """Exchange the two largest scores: the prediction changes, the scale does not."""
    order = np.argsort(Y, axis=-1)
    top, second = order[..., -1:], order[..., -2:-1]
    swapped = Y.copy()
    np.put_along_axis(swapped, top, np.take_along_axis(Y, second, -1), -1)
    np.put_along_axis(swapped, second, np.take_along_axis(Y, top, -1), -1)
    return np.where(mask[..., None], swapped, Y)


def _collude(Y, mask, rng, shift: int = 1):
    """All adversaries send one consistent wrong function: the honest scores with classes rotated by `shift`."""
    return np.where(mask[..., None], np.roll(Y, shift, axis=-1), Y)


def _small(Y, mask, rng, scale: float = 1.0):
    """Noise at the scale of the Berrut approximation error: `scale` times the typical honest score spread."""
    spread = np.median(np.abs(np.diff(Y, axis=1)), axis=(1, 2), keepdims=True)
    return Y + mask[..., None] * rng.normal(0.0, 1.0, Y.shape) * scale * spread


ATTACKS: dict[str, Callable[..., np.ndarray]] = {
    "gaussian": _gaussian,
    "sign_flip": _sign_flip,
    "constant": _constant,
    "zero": lambda Y, mask, rng: _constant(Y, mask, rng, 0.0),
    "label_swap": _label_swap,
    "collude": _collude,
    "small": _small,
}


def attack(name: str, Y: np.ndarray, mask: np.ndarray, rng: np.random.Generator, **kw) -> np.ndarray:
    """Corrupt the rows of `Y` (G, N, C) where `mask` (G, N) is True with attack `name` (keyword options)."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; known: {', '.join(ATTACKS)}")
    if mask.shape != Y.shape[:2]:
        raise ValueError(f"mask has shape {mask.shape}, expected {Y.shape[:2]} (rounds, workers)")
    return ATTACKS[name](np.asarray(Y, dtype=np.float64), mask, rng, **kw)
