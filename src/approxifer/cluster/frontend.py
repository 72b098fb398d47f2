r"""The frontend: batch arriving queries into groups of K, dispatch N worker tasks, answer every query exactly once.

The logic is written once and driven by a `Backend`: Ray actors (`ray_backend.RayBackend`, real time) or the
discrete-event simulator (`simulate.SimBackend`, virtual time). Per query:

1. **Batching.** Queries join the open group in arrival order; a group leaves when it holds K queries, or when its
   oldest query has waited `max_wait` (a partial group of k < K is padded by repeating its queries, and only the
   k real ones are answered).
2. **Dispatch.** A systematic scheme's workers for query slot j (`Scheme.early`) get the query the moment it
   arrives; once the group leaves, the scheme encodes it and every other worker gets its task.
3. **Answers.** As results come in, every query the scheme can answer from the returned set is answered at once
   (`Scheme.answerable`): exact outputs as they arrive for systematic schemes, all K once the decoder has its
   N - S results (the locator's count in Byzantine mode) for coded ones. A task whose worker is restarting fails
   and is sent again every `retry_after` seconds while its round is open; a worker dead for good counts as a
   straggler.
4. **Deadline.** With a deadline, a round still open `deadline` seconds after its dispatch answers what the returned
   set can give (`Scheme.salvageable`: any subset for ApproxIFER) and fails the rest explicitly.
5. **Bounded.** The load is bounded in count and time; at `limit` seconds every open round is closed the same way.
   Tasks of a closed round still run on their workers (their results are recorded as late): Ray's `ray.cancel` of
   queued actor tasks blocked a worker's queue for good in our runs (Ray 2.60; compare ray-project/ray#60850), so
   nothing is cancelled, on Ray or in the simulator.

Every query ends *answered* (a prediction) or *failed* (with a reason); ``lost`` counts those that ended neither
and is zero unless this module has a bug (the run's summary reports it all the same).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from approxifer.cluster.schemes import Scheme
from approxifer.errors import ParameterError

__all__ = ["Backend", "Frontend", "Result", "Run", "Trace", "poisson_arrivals"]

PENDING, ANSWERED, FAILED = 0, 1, 2


def poisson_arrivals(queries: int, rate: float, *, max_seconds: float | None = None, seed: int = 0) -> np.ndarray:
    """Open-loop Poisson arrival times (seconds from the start): i.i.d. Exp(1/rate) gaps, at most `queries` of
    them, none after `max_seconds`."""
    if isinstance(queries, bool) or not isinstance(queries, int | np.integer) or queries < 1:
        raise ParameterError(f"queries must be an integer >= 1, got {queries!r}")
    if not isinstance(rate, int | float) or not math.isfinite(rate) or rate <= 0:
        raise ParameterError(f"rate must be a number > 0 (queries per second), got {rate!r}")
    if max_seconds is not None and not max_seconds > 0:
        raise ParameterError(f"max_seconds must be > 0, got {max_seconds!r}")
    t = np.cumsum(np.random.default_rng([seed, 1]).exponential(1 / rate, int(queries)))
    return t if max_seconds is None else t[t <= max_seconds]


@dataclass
class Result:
    """A worker's reply to task (round, worker): its output, or the error that ended it. Times in seconds on
    the backend's clock: when the worker started and ended the task, its compute and injected delay."""

    round: int
    worker: int
    output: np.ndarray | None = None
    error: str | None = None
    retry: bool = False  # the worker is restarting: the task may be sent again
    t_start: float = math.nan
    t_end: float = math.nan
    compute: float = math.nan
    delay: float = math.nan
    pid: int | None = None  # the worker's process (a new one after a restart)


class Backend(Protocol):
    """Where the workers run: real (Ray) or simulated. Times in seconds."""

    def now(self) -> float: ...

    def submit(self, round_id: int, worker: int, x: np.ndarray | None) -> None: ...

    def wait(self, timeout: float) -> list[Result]:
        """Results that arrived within `timeout` s (returns as soon as there is one, else empty at the timeout)."""
        ...

    def kill(self, worker: int) -> None: ...

    def stage(self, name: str) -> AbstractContextManager:
        """Frontend work (prepare a query, encode a group, submit a task, decode): timed for real, or charged to the
        simulated clock."""
        ...


@dataclass
class Round:
    id: int
    queries: list[int]  # the k <= K real queries of the group
    t_dispatch: float
    returned: list[int] = field(default_factory=list)  # workers, in arrival order
    outputs: list[np.ndarray] = field(default_factory=list)
    failed: set[int] = field(default_factory=set)
    answered: np.ndarray | None = None  # (K,) bool
    sent: set[int] = field(default_factory=set)  # workers with a task
    inputs: dict[int, np.ndarray | None] = field(default_factory=dict)  # what each was sent (kept for retries)
    sealed: bool = False  # every worker has its task (t_dispatch: when)


@dataclass
class Trace:
    """Everything a run did, times in seconds from its start: per query, per round, per task, per frontend stage."""

    scheme: Scheme
    arrival: np.ndarray  # (Q,)
    dispatch: np.ndarray
    answer: np.ndarray
    status: np.ndarray  # PENDING (lost), ANSWERED, FAILED
    prediction: np.ndarray  # -1 unless answered with outputs
    reason: list[str]  # how each query ended: ready, deadline, limit, failed workers
    rounds: list[dict] = field(default_factory=list)
    tasks: dict[tuple[int, int], dict] = field(default_factory=dict)
    stages: dict[str, list[float]] = field(default_factory=dict)

    @property
    def latency(self) -> np.ndarray:
        """Seconds from arrival to answer of the answered queries."""
        ok = self.status == ANSWERED
        return self.answer[ok] - self.arrival[ok]

    def summary(self, labels: np.ndarray | None = None) -> dict:
        """sent, answered, failed, lost, latency percentiles (ms, over answered queries), throughput (answered per
        second from the first arrival to the last answer), accuracy (correct / sent: a failure is not correct)."""
        sent = len(self.status)
        answered, failed = int((self.status == ANSWERED).sum()), int((self.status == FAILED).sum())
        lat = 1e3 * self.latency
        p50, p99, p999 = np.percentile(lat, [50, 99, 99.9]) if len(lat) else (math.nan,) * 3
        span = np.nanmax(self.answer) - self.arrival.min() if answered else math.nan
        acc = math.nan
        if labels is not None and (self.prediction >= 0).any():
            acc = float(((self.prediction == labels) & (self.status == ANSWERED)).sum() / sent)
        return {
            "sent": sent,
            "answered": answered,
            "failed": failed,
            "lost": sent - answered - failed,
            "p50_ms": float(p50),
            "p99_ms": float(p99),
            "p999_ms": float(p999),
            "mean_ms": float(lat.mean()) if len(lat) else math.nan,
            "throughput_qps": answered / span if answered else 0.0,
            "accuracy": acc,
            **self.scheme.describe(),
        }


@dataclass
class Run:
    """A finished run: its trace, the labels of its queries, and how it was configured."""

    trace: Trace
    labels: np.ndarray | None
    config: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return self.trace.summary(self.labels) | self.config


class Frontend:
    """One run of `scheme` on `backend`: queries arrive at `arrivals` (seconds, sorted); `inputs(ids)` gives the
    normalised inputs of query ids (None in simulation: no outputs, only timing)."""

    def __init__(
        self,
        scheme: Scheme,
        backend: Backend,
        *,
        inputs: Callable[[list[int]], torch.Tensor] | None = None,
        deadline: float | None = None,
        max_wait: float = 0.05,
        limit: float = 60.0,
        kill: tuple[int, int] | None = None,
        retry_after: float = 0.1,
        on_answer: Callable[[int, int], None] | None = None,
    ) -> None:
        if deadline is not None and not deadline > 0:
            raise ParameterError(f"deadline must be > 0 (seconds after dispatch), got {deadline!r}")
        if not max_wait >= 0:
            raise ParameterError(f"max_wait must be >= 0 seconds, got {max_wait!r}")
        if kill is not None and not 0 <= kill[0] < scheme.N:
            raise ParameterError(f"kill-worker {kill[0]} is not a worker of this run: workers are 0..{scheme.N - 1}")
        self.scheme, self.backend, self.inputs = scheme, backend, inputs
        self.deadline, self.max_wait, self.limit, self.kill = deadline, max_wait, limit, kill
        self.retry_after = retry_after  # seconds before a task of a restarting worker is sent again
        self.on_answer = on_answer  # progress: called with (answered + failed, sent)

    # ------------------------------------------------------------ the loop

    def run(self, arrivals: np.ndarray) -> Trace:
        Q = len(arrivals)
        self.trace = tr = Trace(
            self.scheme, np.asarray(arrivals, float), np.full(Q, math.nan), np.full(Q, math.nan),
            np.zeros(Q, np.int8), np.full(Q, -1), [""] * Q,
        )  # fmt: skip
        self.open: dict[int, Round] = {}
        self.filling: Round | None = None  # the group that queries join, not sealed yet
        self.retries: list[tuple[float, int, int]] = []  # (when, round, worker): tasks to send again
        self.done, self.t0, i = 0, self.backend.now(), 0
        while True:
            now = self.backend.now() - self.t0
            while i < Q and tr.arrival[i] <= now:
                self._admit(i)
                i += 1
            if self.filling is not None and now >= self._due():
                self._seal(self.filling)
            for item in [item for item in self.retries if item[0] <= now]:
                self.retries.remove(item)
                if (r := self.open.get(item[1])) is not None:
                    self._submit(r, item[2], r.inputs[item[2]])
            now = self.backend.now() - self.t0
            if self.deadline is not None:
                for r in [r for r in self.open.values() if r.sealed and now >= r.t_dispatch + self.deadline]:
                    self._close(r, "deadline")
            if now >= self.limit:
                for r in list(self.open.values()):
                    self._close(r, "limit")
                for q in range(i, Q):
                    self._end(q, FAILED, -1, "limit")  # not admitted in time
                break
            if i == Q and not self.open:
                break
            deadlines = [r.t_dispatch + self.deadline for r in self.open.values() if r.sealed] if self.deadline else []
            retries = [t for t, _, _ in self.retries]
            wake = min(tr.arrival[i] if i < Q else math.inf, self._due(), *deadlines, *retries, self.limit)
            for res in self.backend.wait(max(0.0, wake - now)):
                self.receive(res)
        return tr

    # ------------------------------------------------------------ steps

    def _stage(self, name: str) -> AbstractContextManager:
        return self.backend.stage(name)

    def _due(self) -> float:
        """When the filling group must leave even if it is not full."""
        return math.inf if self.filling is None else self.trace.arrival[self.filling.queries[0]] + self.max_wait

    def _submit(self, r: Round, w: int, x: np.ndarray | None) -> None:
        attempts = self.trace.tasks.get((r.id, w), {}).get("attempts", 0) + 1
        self.trace.tasks[r.id, w] = {"round": r.id, "worker": w, "submit": self.backend.now() - self.t0,
                                     "attempts": attempts}  # fmt: skip
        with self._stage("submit"):
            self.backend.submit(r.id, w, x)
        r.sent.add(w)
        r.inputs[w] = x

    def _admit(self, q: int) -> None:
        """Query q joins the filling group; the scheme's systematic workers for its slot get it at once."""
        if self.filling is None:
            self.filling = Round(len(self.trace.rounds), [], math.nan, answered=np.zeros(self.scheme.K, bool))
            self.open[self.filling.id] = self.filling
            self.trace.rounds.append({"round": self.filling.id})
        r = self.filling
        r.queries.append(q)
        if early := self.scheme.early(len(r.queries) - 1):
            with self._stage("prepare"):
                x = None if self.inputs is None else self.inputs([q])[0].numpy()
            self.trace.dispatch[q] = self.backend.now() - self.t0
            for w in early:
                self._submit(r, w, x)
        if len(r.queries) == self.scheme.K:
            self._seal(r)

    def _seal(self, r: Round) -> None:
        """The group is complete (or waited `max_wait`): encode it and send every worker that has no task yet."""
        s, k = self.scheme, len(r.queries)
        self.filling = None
        todo, coded = [w for w in range(s.N) if w not in r.sent], None
        if todo:
            with self._stage("encode"):  # a partial group is padded by repeating its queries
                X = None if self.inputs is None else self.inputs([r.queries[j % k] for j in range(s.K)])
                coded = None if X is None else s.encode(X).numpy()
        r.sealed, r.t_dispatch = True, self.backend.now() - self.t0
        for w in todo:
            self._submit(r, w, None if coded is None else coded[w])
        undispatched = [q for q in r.queries if math.isnan(self.trace.dispatch[q])]
        self.trace.dispatch[undispatched] = r.t_dispatch
        self.trace.rounds[r.id] |= {"queries": list(r.queries), "dispatch": r.t_dispatch}
        if self.kill is not None and r.id == self.kill[1]:
            self.backend.kill(self.kill[0])
        if r.answered[:k].all():  # systematic answers all came back before the group was sealed
            self._close(r, "ready")

    def receive(self, res: Result) -> None:
        """Record a result; answer what it makes answerable (a result of a closed round is only recorded)."""
        task = self.trace.tasks[res.round, res.worker]
        task.update(
            recv=self.backend.now() - self.t0, start=res.t_start - self.t0, end=res.t_end - self.t0,
            compute=res.compute, delay=res.delay, error=res.error, pid=res.pid,
        )  # fmt: skip
        r = self.open.get(res.round)
        task["late"] = r is None
        if r is None:
            return
        if res.error is not None and res.retry:
            self.retries.append((task["recv"] + self.retry_after, r.id, res.worker))
            return
        if res.error is not None:
            r.failed.add(res.worker)
        else:
            r.returned.append(res.worker)
            r.outputs.append(res.output)
        k = len(r.queries)
        new = self.scheme.answerable(r.returned) & ~r.answered
        if new[:k].any():
            self._answer(r, new, "ready")
        if not r.sealed:
            return
        if r.answered[:k].all():
            self._close(r, "ready")
        elif r.failed:
            alive = [w for w in range(self.scheme.N) if w not in r.failed]
            if not self.scheme.answerable(alive)[:k][~r.answered[:k]].all():
                self._close(r, "failed workers")  # can never complete: answer what it can now

    def _answer(self, r: Round, which: np.ndarray, how: str) -> None:
        k = len(r.queries)
        which = which.copy()
        which[k:] = False
        with self._stage("decode"):
            pred = None
            if self.inputs is not None and which.any():
                pred = self.scheme.decode(r.returned, np.stack(r.outputs)).argmax(-1)
        for j in np.flatnonzero(which):
            self._end(r.queries[j], ANSWERED, -1 if pred is None else int(pred[j]), how)
        r.answered |= which

    def _close(self, r: Round, how: str) -> None:
        """End a round: answer what the returned set can still give, fail the rest."""
        k = len(r.queries)
        salvage = self.scheme.salvageable(r.returned) & ~r.answered if r.returned else np.zeros_like(r.answered)
        if salvage[:k].any():
            self._answer(r, salvage, how)
        for j in np.flatnonzero(~r.answered[:k]):
            self._end(r.queries[j], FAILED, -1, how)
        self.trace.rounds[r.id] |= {"returned": list(r.returned), "failed": sorted(r.failed), "how": how,
                                    "closed": self.backend.now() - self.t0}  # fmt: skip
        del self.open[r.id]
        r.inputs.clear()

    def _end(self, q: int, status: int, prediction: int, how: str) -> None:
        tr = self.trace
        if tr.status[q] != PENDING:
            raise RuntimeError(f"query {q} answered twice")  # the exactly-once invariant
        tr.status[q], tr.prediction[q], tr.reason[q] = status, prediction, how
        tr.answer[q] = self.backend.now() - self.t0
        self.done += 1
        if self.on_answer is not None:
            self.on_answer(self.done, len(tr.status))
