r"""The injected straggler model: how long a worker waits, beyond its real compute time, before it answers.

Each task (round $r$, worker $w$) draws its delay from its own generator, seeded by ``(seed, r, w)``, so a run's
delays depend on nothing else (not on timing, restarts or the order of execution) and the simulator can draw the
very same ones:

$$ D = \text{shift} + \operatorname{Exp}(\text{mean}) + B \cdot \text{stall} \cdot \operatorname{median}, \qquad
   B \sim \operatorname{Bernoulli}(p), \quad \operatorname{median} = \text{shift} + \text{mean} \ln 2, $$

a shifted exponential (the classic model of straggling service times) plus, with probability $p$, a rare long stall
of `stall` times the median delay. Optionally `hog` processes burn a CPU each beside the workers for the whole run
(real background load, not a modelled one).

A spec string gives the fields as ``key=value`` pairs in milliseconds, e.g. ``"shift=2,mean=3,p=0.02,stall=20"``
(`Stragglers.parse`); omitted keys keep their defaults.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from approxifer.errors import ParameterError

__all__ = ["Stragglers"]


@dataclass(frozen=True)
class Stragglers:
    shift: float = 2.0  # ms, the least injected delay
    mean: float = 3.0  # ms, mean of the exponential part
    p: float = 0.02  # probability that a task stalls
    stall: float = 50.0  # a stall's length, in multiples of the median delay
    hog: int = 0  # CPU-hog processes beside the workers (real background load)

    def __post_init__(self) -> None:
        for name in ("shift", "mean", "stall"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ParameterError(f"straggler {name} must be a finite number >= 0 (ms), got {v!r}")
        if not (isinstance(self.p, int | float) and 0 <= self.p <= 1):
            raise ParameterError(f"straggler p must be a probability in [0, 1], got {self.p!r}")
        if isinstance(self.hog, bool) or not isinstance(self.hog, int) or self.hog < 0:
            raise ParameterError(f"straggler hog must be an integer >= 0 (CPU-hog processes), got {self.hog!r}")

    @classmethod
    def parse(cls, spec: str | None) -> Stragglers:
        """``"shift=2,mean=3,p=0.02,stall=20,hog=0"`` (any subset, ms) -> `Stragglers`; None or "" -> defaults.
        ``"none"`` injects nothing (shift = mean = p = 0)."""
        if not spec:
            return cls()
        if spec.strip() == "none":
            return cls(shift=0.0, mean=0.0, p=0.0)
        known = {f.name: f.type for f in fields(cls)}
        values: dict[str, float | int] = {}
        for item in spec.split(","):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or key not in known:
                raise ParameterError(
                    f"bad straggler spec item {item!r}: use key=value pairs with keys {', '.join(known)} "
                    f"(e.g. 'shift=2,mean=3,p=0.02,stall=20'), or 'none'"
                )
            try:
                values[key] = int(value) if key == "hog" else float(value)
            except ValueError:
                raise ParameterError(f"straggler {key} must be a number, got {value.strip()!r}") from None
        return cls(**values)

    def spec(self) -> str:
        """The spec string that `parse` reads back into these values."""
        return ",".join(f"{k}={v:g}" for k, v in asdict(self).items())

    @property
    def median_ms(self) -> float:
        """Median of the shifted exponential, shift + mean ln 2 (ms)."""
        return self.shift + self.mean * math.log(2)

    def delay(self, seed: int, round_id: int, worker: int) -> float:
        """The injected delay of task (round, worker), in seconds."""
        rng = np.random.default_rng([seed, round_id, worker])
        d = self.shift + (rng.exponential(self.mean) if self.mean else 0.0)
        if rng.random() < self.p:
            d += self.stall * self.median_ms
        return d / 1e3

    def describe(self) -> str:
        """One line for a page: the distribution in words."""
        parts = [f"{self.shift:g} ms + Exp(mean {self.mean:g} ms)"]
        if self.p:
            parts.append(
                f"with probability {self.p:g} a stall of {self.stall:g} × the median ({self.median_ms:.1f} ms)"
            )
        if self.hog:
            parts.append(f"{self.hog} CPU hog{'s' * (self.hog > 1)} beside the workers")
        return "; ".join(parts)
