r"""Serving schemes: how a group of K queries becomes N worker tasks, and returned results become K answers.

A scheme is pure arithmetic (no timing, no Ray): the frontend asks it which model each worker runs (`roles`), what
each worker is sent (`encode`), which queries it can answer from the workers returned so far (`answerable`, and at
a deadline `salvageable`), and the answers themselves (`decode`). Every scheme answers a query at the first moment
it can, so a systematic scheme (uncoded, replication, ParM) returns exact outputs as they come in.

* ``uncoded``: N = K workers, worker j runs query j; query j waits for worker j (no straggler tolerance).
* ``replication``: N = K + S workers, worker w runs query w mod K (as `experiments.replication_correct`): the first
  S queries have a second copy; a query is answered by whichever of its copies returns first.
* ``parm``: ParM with one parity (Kosaian et al. 2019): N = K + 1, workers 0..K-1 run the base model on query j,
  worker K runs the parity model on $\sum_j X_j$; one missing base output is reconstructed
  (`baselines.reconstruct`).
* ``systematic``: systematic Berrut (`codes.systematic`, the codes chapter): N = K + S workers, worker j < K runs
  query j itself and answers it exactly as it returns, the S parity workers run Berrut blends; a query whose worker
  has not returned is decoded from the first N - S results, or at a deadline from any that returned.
* ``approxifer``: N = K + S Berrut-coded queries (`codec.encode`), decoded (`codec.decode`) from the first N - S
  results, or at a deadline from any that returned. Byzantine mode (E > 0): N = `locator.min_returned`(K, E) + S,
  and the decoder waits for that count and drops E located suspects (`locator.robust_decode`).

Another linear code joins in a few lines: `CodedScheme` takes any pair of encode/decode functions with the codec's
signatures, and `linear_code` builds them from an encoder matrix (N, K) and a decoder matrix (K, R) of the returned
set; `register` adds it under a name that ``serve-bench --scheme`` accepts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from approxifer import codec, codes, locator
from approxifer.codes import Code
from approxifer.errors import ParameterError

__all__ = ["SCHEMES", "CodedScheme", "ParM", "Replication", "Scheme", "Systematic", "Uncoded", "linear_code", "make",
           "register"]  # fmt: skip

Encoder = Callable[..., torch.Tensor]  # encode(X (K, ...), N, axis=0) -> (N, ...)
Decoder = Callable[..., np.ndarray]  # decode(Y (R, C), returned, K, N, axis=0) -> (K, C)


@dataclass(frozen=True)
class Scheme:
    """K queries on N workers, tolerating S stragglers (E adversaries in Byzantine mode)."""

    name: str
    K: int
    N: int
    S: int
    E: int = 0

    @property
    def roles(self) -> tuple[str, ...]:
        """The model each worker runs: ``"base"`` (the served model) or ``"parity"`` (ParM's parity model)."""
        return ("base",) * self.N

    def encode(self, X: torch.Tensor) -> torch.Tensor:
        """What each worker is sent: (K, *payload) -> (N, *payload)."""
        raise NotImplementedError

    def early(self, j: int) -> tuple[int, ...]:
        """The systematic workers of query slot j: they run query j itself, so they get it as soon as it arrives,
        before the group is complete (none for a coded scheme)."""
        return ()

    def answerable(self, returned: Sequence[int]) -> np.ndarray:
        """(K,) bool: the queries answered once the workers `returned` (in arrival order) are in."""
        raise NotImplementedError

    def salvageable(self, returned: Sequence[int]) -> np.ndarray:
        """(K,) bool: the queries that can still be answered at a deadline from `returned` (default: answerable)."""
        return self.answerable(returned)

    def decode(self, returned: Sequence[int], Y: np.ndarray) -> np.ndarray:
        """Scores (K, C) from the outputs `Y` (R, C) of the workers `returned`; rows of queries that are not
        salvageable from them are undefined (the frontend answers those with a failure)."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {"scheme": self.name, "K": self.K, "N": self.N, "S": self.S, "E": self.E}


def _mask(K: int, idx) -> np.ndarray:
    m = np.zeros(K, bool)
    m[list(idx)] = True
    return m


@dataclass(frozen=True)
class Uncoded(Scheme):
    def encode(self, X: torch.Tensor) -> torch.Tensor:
        return X

    def early(self, j: int) -> tuple[int, ...]:
        return (j,)

    def answerable(self, returned: Sequence[int]) -> np.ndarray:
        return _mask(self.K, returned)

    def decode(self, returned: Sequence[int], Y: np.ndarray) -> np.ndarray:
        out = np.zeros((self.K, Y.shape[1]), Y.dtype)
        out[list(returned)] = Y
        return out


@dataclass(frozen=True)
class Replication(Scheme):
    def encode(self, X: torch.Tensor) -> torch.Tensor:
        return X.index_select(0, torch.arange(self.N) % self.K)

    def early(self, j: int) -> tuple[int, ...]:
        return tuple(range(j, self.N, self.K))

    def answerable(self, returned: Sequence[int]) -> np.ndarray:
        return _mask(self.K, [w % self.K for w in returned])

    def decode(self, returned: Sequence[int], Y: np.ndarray) -> np.ndarray:
        out = np.zeros((self.K, Y.shape[1]), Y.dtype)
        for w, y in reversed(list(zip(returned, Y, strict=True))):  # the first copy to return wins
            out[w % self.K] = y
        return out


@dataclass(frozen=True)
class ParM(Scheme):
    @property
    def roles(self) -> tuple[str, ...]:
        return ("base",) * self.K + ("parity",)

    def encode(self, X: torch.Tensor) -> torch.Tensor:
        return torch.cat([X, X.sum(0, keepdim=True)])

    def early(self, j: int) -> tuple[int, ...]:
        return (j,)

    def answerable(self, returned: Sequence[int]) -> np.ndarray:
        base = _mask(self.K + 1, returned)
        if base[self.K] and base[: self.K].sum() == self.K - 1:  # one base output missing: reconstructed
            return np.ones(self.K, bool)
        return base[: self.K]

    def decode(self, returned: Sequence[int], Y: np.ndarray) -> np.ndarray:
        from approxifer.baselines import reconstruct

        got = dict(zip(returned, Y, strict=True))
        base = np.stack([got.get(j, np.zeros(Y.shape[1], Y.dtype)) for j in range(self.K)])
        missing = [j for j in range(self.K) if j not in got]
        if self.K in got and len(missing) == 1:
            return reconstruct(got[self.K][None], base[None], np.array(missing))[0]
        return base


@dataclass(frozen=True)
class Systematic(Scheme):
    """A systematic interpolation code (`codes.Code`): each query's own worker answers it exactly; the others are
    decoded, over all returned nodes, once N - S results are in (from any at a deadline)."""

    code: Code | None = field(default=None, repr=False)

    def encode(self, X: torch.Tensor) -> torch.Tensor:
        return self.code.encode(X)

    def early(self, j: int) -> tuple[int, ...]:
        return tuple(np.flatnonzero(self.code.systematic == j).tolist())

    def answerable(self, returned: Sequence[int]) -> np.ndarray:
        own = _mask(self.K, [int(self.code.systematic[w]) for w in returned if self.code.systematic[w] >= 0])
        return own | (len(returned) >= self.N - self.S)

    def salvageable(self, returned: Sequence[int]) -> np.ndarray:
        return np.full(self.K, len(returned) > 0)

    def decode(self, returned: Sequence[int], Y: np.ndarray) -> np.ndarray:
        return self.code.decode(Y, list(returned)).astype(Y.dtype)


@dataclass(frozen=True)
class CodedScheme(Scheme):
    """A non-systematic code: every answer is decoded, from N - S results (or E located adversaries dropped)."""

    encoder: Encoder = field(default=codec.encode, repr=False)
    decoder: Decoder = field(default=codec.decode, repr=False)
    method: str = "paper"  # the error locator of Byzantine mode (locator.METHODS)

    @property
    def need(self) -> int:
        """Results the decoder waits for: N - S, at least the locator's count in Byzantine mode."""
        return self.N - self.S

    def encode(self, X: torch.Tensor) -> torch.Tensor:
        return self.encoder(X, self.N, axis=0)

    def answerable(self, returned: Sequence[int]) -> np.ndarray:
        return np.full(self.K, len(returned) >= self.need)

    def salvageable(self, returned: Sequence[int]) -> np.ndarray:
        """Any subset decodes (E = 0); in Byzantine mode only a subset large enough to locate the E adversaries."""
        least = locator.min_returned(self.K, self.E, self.method) if self.E else 1
        return np.full(self.K, len(returned) >= least)

    def decode(self, returned: Sequence[int], Y: np.ndarray) -> np.ndarray:
        if self.E:
            return locator.robust_decode(Y, list(returned), self.K, self.N, self.E, method=self.method)[0]
        return self.decoder(Y, list(returned), self.K, self.N, axis=0)


def linear_code(encoder_matrix: Callable[[int, int], np.ndarray], decoder_matrix: Callable[..., np.ndarray]):
    """(encode, decode) functions for `CodedScheme` from a code's matrices: `encoder_matrix(K, N)` of shape (N, K)
    and `decoder_matrix(K, N, returned)` of shape (K, len(returned)), columns in the order of `returned`."""

    def encode(X: torch.Tensor, N: int, axis: int = 0) -> torch.Tensor:
        E = torch.tensor(encoder_matrix(X.shape[0], N), dtype=X.dtype)
        return torch.tensordot(E, X, dims=1)

    def decode(Y: np.ndarray, returned: list[int], K: int, N: int, axis: int = 0) -> np.ndarray:
        return decoder_matrix(K, N, returned).astype(Y.dtype) @ Y

    return encode, decode


def _check(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ParameterError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _uncoded(K: int, S: int, E: int, N: int | None) -> Scheme:
    return Uncoded("uncoded", K, K, 0)


def _replication(K: int, S: int, E: int, N: int | None) -> Scheme:
    N = K + S if N is None else N
    if N <= K:
        raise ParameterError(f"replication adds replica workers: need N > K, got N={N}, K={K} (S=0 is uncoded)")
    return Replication("replication", K, N, N - K)


def _parm(K: int, S: int, E: int, N: int | None) -> Scheme:
    if K < 2 or S != 1 or N not in (None, K + 1):
        raise ParameterError(
            f"ParM with one parity model serves K >= 2 queries on N = K + 1 workers with S = 1; got K={K}, S={S}"
        )
    return ParM("parm", K, K + 1, 1)


def _systematic(K: int, S: int, E: int, N: int | None) -> Scheme:
    N = K + S if N is None else N
    if N <= K:
        raise ParameterError(f"the systematic code adds parity workers: need N > K, got N={N}, K={K}")
    return Systematic("systematic", K, N, N - K, code=codes.systematic(K, N))


def _approxifer(K: int, S: int, E: int, N: int | None) -> Scheme:
    least = locator.min_returned(K, E) if E else K
    N = least + S if N is None else N
    if N < K:
        raise ParameterError(f"N={N} workers cannot carry K={K} coded queries: need N >= K")
    if E and N - S < least:
        raise ParameterError(
            f"locating E={E} adversaries among K={K} queries needs {least} results (2K + 2E - 1), but N - S = {N - S}"
        )
    return CodedScheme("approxifer", K, N, S, E)


#: name -> factory(K, S, E, N) -> Scheme (N: None for the scheme's own count)
SCHEMES: dict[str, Callable[[int, int, int, int | None], Scheme]] = {
    "uncoded": _uncoded,
    "replication": _replication,
    "parm": _parm,
    "approxifer": _approxifer,
    "systematic": _systematic,
}


def register(name: str, factory: Callable[[int, int, int, int | None], Scheme]) -> None:
    """Add a scheme under `name`: `factory(K, S, E, N)` returns it (e.g. a `CodedScheme` of `linear_code`)."""
    SCHEMES[name] = factory


def make(name: str, K: int, S: int = 1, E: int = 0, N: int | None = None) -> Scheme:
    """The scheme `name` for K queries, S stragglers, E adversaries (coded schemes only) and N workers (None: the
    scheme's own count, e.g. K + S), validated. The uncoded scheme ignores S (it tolerates none)."""
    if name not in SCHEMES:
        raise ParameterError(f"unknown scheme {name!r}; known: {', '.join(SCHEMES)}")
    K, S, E = _check("K", K, 1), _check("S", S, 0), _check("E", E, 0)
    N = None if N is None else _check("N", N, 1)
    if E and name in ("uncoded", "replication", "parm", "systematic"):
        raise ParameterError(f"Byzantine mode (E = {E}) needs a coded scheme with an error locator, not {name}")
    if N is not None and S >= N:
        raise ParameterError(f"S={S} stragglers of N={N} workers leave none to decode: need S < N")
    scheme = SCHEMES[name](K, S, E, N)
    if scheme.S >= scheme.N:
        raise ParameterError(f"S={scheme.S} stragglers of N={scheme.N} workers leave none to decode: need S < N")
    return scheme
