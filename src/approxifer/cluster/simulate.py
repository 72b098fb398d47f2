r"""A discrete-event simulator of the serving system: the same `Frontend`, on a virtual clock.

`SimBackend` replaces the Ray actors by N first-come-first-served servers. A task submitted at time $t$ reaches its
worker at $t + a$, starts when the worker is free ($g$ after its previous task when it had to queue), runs for
$c + D$ and is back at the frontend $b$ after it ended, where

* $c$ (compute), $a$ (inbound), $g$ (gap between queued tasks) and $b$ (outbound) are drawn from the distributions
  measured in a Ray run (`ServiceModel.from_trace`), and
* $D$ is the injected delay of `delays.Stragglers`, drawn from the same seeded generator as on the real workers.

The frontend's own work (encode per round, submit per task, decode per answer) advances the virtual clock by a cost
drawn from what the Ray run measured, or, to extrapolate to other K and N, from timings of the scheme's real encode
and decode on real inputs (`measure_stages`). As on Ray, the tasks of a closed round still run.
Killing a worker is not simulated.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from approxifer import data
from approxifer.cluster.delays import Stragglers
from approxifer.cluster.frontend import Frontend, Result, Run, Trace, poisson_arrivals
from approxifer.cluster.schemes import Scheme
from approxifer.errors import ParameterError
from approxifer.serving import ServedModel

__all__ = ["ServiceModel", "SimBackend", "measure_compute", "measure_stages", "simulate"]


@dataclass
class ServiceModel:
    """Empirical distributions (seconds) that drive the simulator."""

    compute: np.ndarray  # a worker's compute per task
    inbound: np.ndarray  # submit -> start, for tasks that found their worker idle
    gap: np.ndarray  # previous end -> start, for tasks that had to queue
    outbound: np.ndarray  # end -> received by the frontend
    stages: dict[str, np.ndarray] = field(default_factory=dict)  # frontend: prepare, encode, submit, decode

    @classmethod
    def from_trace(cls, trace: Trace) -> ServiceModel:
        """The distributions measured in a run (tasks that ran to completion)."""
        rows = [t for t in trace.tasks.values() if t.get("error") is None and math.isfinite(t.get("end", math.nan))]
        if not rows:
            raise ParameterError("this trace has no completed task to measure service times from")
        by_worker: dict[int, list[dict]] = {}
        for t in rows:
            by_worker.setdefault(t["worker"], []).append(t)
        inbound, gap = [], []
        for tasks in by_worker.values():
            tasks.sort(key=lambda t: t["start"])
            prev_end = -math.inf
            for t in tasks:
                (
                    gap.append(t["start"] - prev_end)
                    if prev_end > t["submit"]
                    else inbound.append(t["start"] - t["submit"])
                )
                prev_end = t["end"]
        arr = lambda v: np.maximum(np.asarray(v, float), 0.0)  # noqa: E731
        return cls(
            compute=arr([t["compute"] for t in rows]),
            inbound=arr(inbound),
            gap=arr(gap or [0.0]),
            outbound=arr([t["recv"] - t["end"] for t in rows]),
            stages={k: arr(v) for k, v in trace.stages.items() if len(v)},
        )

    def with_stages(self, stages: dict[str, np.ndarray]) -> ServiceModel:
        """The same worker distributions with other frontend costs (e.g. `measure_stages` of another K, N)."""
        return ServiceModel(self.compute, self.inbound, self.gap, self.outbound, {**self.stages, **stages})

    def with_compute(self, compute: np.ndarray) -> ServiceModel:
        """The same distributions with another compute time per task (e.g. `measure_compute`: a core per worker)."""
        return ServiceModel(np.asarray(compute, float), self.inbound, self.gap, self.outbound, self.stages)


class SimBackend:
    """`frontend.Backend` on a virtual clock: N FCFS servers with service times drawn from `service`."""

    def __init__(self, N: int, service: ServiceModel, stragglers: Stragglers, seed: int) -> None:
        self.service, self.stragglers, self.seed = service, stragglers, seed
        self.rng = np.random.default_rng([seed, 3])
        self.t = 0.0
        self.queue: list[deque] = [deque() for _ in range(N)]
        self.busy = [False] * N
        self.events: list[tuple[float, int, str, tuple]] = []
        self.seq = 0
        self.busy_time = 0.0  # virtual seconds the frontend spent on its own work

    def _draw(self, samples: np.ndarray) -> float:
        return float(samples[self.rng.integers(len(samples))]) if len(samples) else 0.0

    def _push(self, t: float, kind: str, payload: tuple) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, payload))

    def now(self) -> float:
        return self.t

    def submit(self, round_id: int, worker: int, x: np.ndarray | None) -> None:
        self._push(self.t + self._draw(self.service.inbound), "arrive", (round_id, worker))

    def _start(self, worker: int, t: float) -> None:
        if self.queue[worker]:
            round_id = self.queue[worker].popleft()
            compute = self._draw(self.service.compute)
            delay = self.stragglers.delay(self.seed, round_id, worker)
            self.busy[worker] = True
            self._push(t + compute + delay, "end", (round_id, worker, t, compute, delay))
            return
        self.busy[worker] = False

    def wait(self, timeout: float) -> list[Result]:
        horizon = self.t + timeout
        while self.events and self.events[0][0] <= horizon:
            t, _, kind, p = heapq.heappop(self.events)  # worker events keep their own times
            if kind == "arrive":
                round_id, worker = p
                self.queue[worker].append(round_id)
                if not self.busy[worker]:
                    self._start(worker, t)
            elif kind == "end":
                round_id, worker, start, compute, delay = p
                self._push(
                    t + self._draw(self.service.outbound), "result", (round_id, worker, start, t, compute, delay)
                )
                self.busy[worker] = False
                if self.queue[worker]:
                    self.busy[worker] = True  # reserved until the gap has passed
                    self._push(t + self._draw(self.service.gap), "next", (worker,))
            elif kind == "next":
                self._start(p[0], t)
            else:  # a result: the frontend sees it now, or when it is done with its own work
                self.t = max(self.t, t)
                round_id, worker, start, end, compute, delay = p
                return [Result(round_id, worker, t_start=start, t_end=end, compute=compute, delay=delay)]
        self.t = max(self.t, horizon)
        return []

    def kill(self, worker: int) -> None:
        raise ParameterError("the simulator does not kill workers; measure faults on Ray")

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        yield
        cost = self._draw(self.service.stages.get(name, np.zeros(0)))
        self.t += cost
        self.busy_time += cost


def simulate(
    scheme: Scheme,
    service: ServiceModel,
    *,
    queries: int,
    rate: float,
    stragglers: Stragglers | None = None,
    seed: int = 0,
    deadline_ms: float | None = None,
    max_wait_ms: float | None = None,
    max_seconds: float | None = None,
    drain_s: float = 30.0,
) -> Run:
    """A simulated run with the arrivals, batching, deadline and straggler draws of `Cluster.run` for the same
    arguments (no outputs: `summary()` has latencies and counts, no accuracy)."""
    stragglers = stragglers or Stragglers()
    arrivals = poisson_arrivals(queries, rate, max_seconds=max_seconds or 3 * queries / rate, seed=seed)
    backend = SimBackend(scheme.N, service, stragglers, seed)
    fe = Frontend(
        scheme,
        backend,
        deadline=None if deadline_ms is None else deadline_ms / 1e3,
        max_wait=(2 * scheme.K / rate) if max_wait_ms is None else max_wait_ms / 1e3,
        limit=float(arrivals[-1]) + drain_s,
    )
    trace = fe.run(arrivals)
    config = {"rate": rate, "deadline_ms": deadline_ms, "seed": seed, "straggler": stragglers.spec(), "simulated": True,
              "frontend_busy": backend.busy_time / max(backend.t, 1e-12)}  # fmt: skip
    return Run(trace, None, config)


def measure_compute(model: ServedModel, *, reps: int = 50, seed: int = 0) -> np.ndarray:
    """Seconds the model takes on one query, alone on one thread, `reps` times (after one untimed warm-up): the
    compute time of a worker that has a core to itself."""
    x, _ = data.load(model.dataset, "test")
    ids = np.random.default_rng(seed).choice(len(x), reps + 1, replace=False)
    threads, out = torch.get_num_threads(), []
    torch.set_num_threads(1)
    try:
        for i in ids:
            q = data.to_tensor(x[[i]], model.dataset)
            t = time.perf_counter()
            model.predict(q)
            out.append(time.perf_counter() - t)
    finally:
        torch.set_num_threads(threads)
    return np.array(out[1:])


def measure_stages(scheme: Scheme, dataset: str, *, reps: int = 50, seed: int = 0) -> dict[str, np.ndarray]:
    """Seconds of the frontend's encode (one group of K test images) and decode (the outputs of N - S workers)
    with this scheme's real code, `reps` times each, on this machine: the frontend costs of another (K, N)."""
    x, _ = data.load(dataset, "test")
    rng = np.random.default_rng(seed)
    classes = len(data.info(dataset).classes)
    enc, dec = [], []
    for _ in range(reps):
        ids = rng.choice(len(x), scheme.K, replace=False)
        t = time.perf_counter()
        scheme.encode(data.to_tensor(x[ids], dataset)).numpy()
        enc.append(time.perf_counter() - t)
        returned = sorted(rng.choice(scheme.N, scheme.N - scheme.S, replace=False).tolist())
        Y = rng.normal(size=(len(returned), classes)).astype(np.float32)
        t = time.perf_counter()
        scheme.decode(returned, Y).argmax(-1)
        dec.append(time.perf_counter() - t)
    return {"encode": np.array(enc[1:] or enc), "decode": np.array(dec[1:] or dec)}
