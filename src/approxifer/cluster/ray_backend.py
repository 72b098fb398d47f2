"""The real system on Ray: worker actors holding the model, the frontend's backend, and a session (`Cluster`).

* **Workers** are Ray actors (one CPU each, or a share of the GPUs when the cluster has some) that load their model
  once (`ModelSource.load`) and answer ``infer(round, x, spec)``: the model's scores on one coded query, then the
  injected delay of `delays.Stragglers` (a sleep: the worker is busy, its queue waits). Adversarial workers (Byzantine
  mode) corrupt their output with the Gaussian attack of `attacks`. Actors restart after a crash or a kill
  (``max_restarts``); the tasks a killed worker held fail, count as stragglers, and the frontend sends them again
  (every `Frontend.retry_after` seconds until the actor is back) for as long as their round is open: nothing is
  lost.
* **RayBackend** submits tasks and waits on them with ``ray.wait``; a closed round's tasks still run (their results
  are recorded as late; see `frontend` for why nothing is cancelled).
* **Cluster** starts Ray (locally, or joins ``address``), starts a pool of workers and runs `Frontend` rounds on it;
  it shuts everything down when closed (use it as a context manager).

Everything stays on the machine's loopback when Ray runs locally; every run ends by itself (`Frontend` limit).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import signal
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from approxifer import attacks, data, models
from approxifer.cluster.delays import Stragglers
from approxifer.cluster.frontend import Frontend, Result, Run, poisson_arrivals
from approxifer.cluster.schemes import Scheme
from approxifer.errors import ParameterError
from approxifer.serving import ServedModel

# Ray's import, in a notebook without ipywidgets, logs that rich output is unavailable and trips tqdm's IProgress
# warning: neither says anything about a run, so they are kept off the page.
logging.getLogger("ray.widgets.util").setLevel(logging.WARNING)
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="IProgress not found")
    import ray

__all__ = ["Cluster", "ModelSource", "TaskSpec", "TrainedModels", "hardware"]


# ---------------------------------------------------------------- models


class ModelSource(Protocol):
    """Where workers get their models: `load(role, K, device)` in the actor (role ``base`` or ``parity``, the
    parity model of K queries); `check(scheme)` in the driver, before any worker loads anything."""

    dataset: str

    def load(self, role: str, K: int, device: str) -> ServedModel: ...

    def check(self, scheme: Scheme) -> None: ...


@dataclass(frozen=True)
class TrainedModels:
    """The project's trained model `arch` for `dataset` (`serving.served`) and its ParM parity models
    (`baselines.served_parity`), served on the worker's device at `precision`."""

    dataset: str
    arch: str
    precision: str = "fp32"

    def load(self, role: str, K: int, device: str = "cpu") -> ServedModel:
        if role == "parity":
            from approxifer.baselines import served_parity

            return served_parity(self.dataset, self.arch, K, device, self.precision)
        from approxifer.serving import served

        return served(self.dataset, self.arch, device, self.precision)

    def check(self, scheme: Scheme) -> None:
        """One `ParameterError` naming the command that trains what is missing."""
        try:
            models.load_card(self.dataset, self.arch)
            if "parity" in scheme.roles:
                from approxifer.baselines import load_parity_card

                load_parity_card(self.dataset, self.arch, scheme.K)
        except (models.ModelError, ValueError) as e:
            raise ParameterError(str(e)) from None


# ---------------------------------------------------------------- workers


@dataclass(frozen=True)
class TaskSpec:
    """What a worker needs besides the input (sent with every task, so a restarted actor needs no set-up)."""

    role: str  # base | parity
    K: int
    seed: int
    stragglers: Stragglers
    adversary: bool = False
    sigma: float = 10.0  # the Gaussian attack's standard deviation (adversaries only)


class Worker:
    """A Ray actor holding models; `infer` runs one coded query, then waits the injected delay."""

    def __init__(self, index: int, source: ModelSource, device: str = "cpu") -> None:
        torch.set_num_threads(1)
        self.index, self.source, self.device = index, source, device
        self.models: dict[tuple[str, int], ServedModel] = {}

    def _model(self, role: str, K: int) -> ServedModel:
        key = (role, K if role == "parity" else 0)
        if key not in self.models:
            self.models[key] = self.source.load(role, K, self.device)
        return self.models[key]

    def prepare(self, role: str, K: int, shape: tuple[int, ...]) -> int:
        """Load the model and run it once (untimed warm-up); return the process id."""
        self._model(role, K).predict(torch.zeros((1, *shape)))
        return os.getpid()

    def pid(self) -> int:
        return os.getpid()

    def infer(self, round_id: int, x: np.ndarray, spec: TaskSpec) -> dict:
        t_start = time.time()
        y = self._model(spec.role, spec.K).predict(torch.from_numpy(x)[None])[0]
        compute = time.time() - t_start
        if spec.adversary:
            rng = np.random.default_rng([spec.seed, round_id, self.index, 1])
            y = attacks.attack("gaussian", y[None, None], np.ones((1, 1), bool), rng, sigma=spec.sigma)[0, 0]
        delay = spec.stragglers.delay(spec.seed, round_id, self.index)
        if delay > 0:
            time.sleep(delay)
        return {"y": np.asarray(y, np.float32), "t_start": t_start, "t_end": time.time(), "compute": compute,
                "delay": delay, "pid": os.getpid()}  # fmt: skip


class Hog:
    """Background load: burns one CPU until `seconds` have passed (or the actor is killed)."""

    def spin(self, seconds: float) -> int:
        end, n = time.time() + seconds, 0
        while time.time() < end:
            n += sum(i * i for i in range(1000))
        return n


# ---------------------------------------------------------------- backend


class RayBackend:
    """`frontend.Backend` on Ray actors (wall-clock seconds)."""

    def __init__(self, actors: list, specs: list[TaskSpec]) -> None:
        self.actors, self.specs = actors, specs
        self.refs: dict = {}  # ObjectRef -> (round, worker)
        self.stages: dict[str, list[float]] = defaultdict(list)

    def now(self) -> float:
        return time.time()

    def submit(self, round_id: int, worker: int, x: np.ndarray | None) -> None:
        ref = self.actors[worker].infer.remote(round_id, x, self.specs[worker])
        self.refs[ref] = (round_id, worker)

    def wait(self, timeout: float) -> list[Result]:
        if not self.refs:
            time.sleep(timeout)
            return []
        ready, rest = ray.wait(list(self.refs), num_returns=1, timeout=timeout)
        if ready and rest:
            ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        return [self._result(ref) for ref in ready]

    def _result(self, ref) -> Result:
        round_id, worker = self.refs.pop(ref)
        try:
            d = ray.get(ref)
        except ray.exceptions.ActorUnavailableError as e:  # killed or restarting: send it again later
            return Result(round_id, worker, error=type(e).__name__, retry=True)
        except ray.exceptions.RayError as e:  # the actor is dead for good
            return Result(round_id, worker, error=type(e).__name__)
        return Result(
            round_id, worker, d["y"], t_start=d["t_start"], t_end=d["t_end"], compute=d["compute"], delay=d["delay"],
            pid=d["pid"],
        )  # fmt: skip

    def kill(self, worker: int) -> None:
        ray.kill(self.actors[worker], no_restart=False)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        yield
        self.stages[name].append(time.perf_counter() - t)

    def drain(self, timeout: float) -> list[Result]:
        """The results still on their way (late stragglers), waited for up to `timeout` s; the rest are forgotten."""
        end, out = time.time() + timeout, []
        while self.refs and time.time() < end:
            out += self.wait(end - time.time())
        self.refs.clear()
        return out


# ---------------------------------------------------------------- runs


def hardware() -> dict:
    """The machine a run measures: CPU model, cores, load average (1 min) when it ended."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as f:
        cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    return {"cpu": cpu, "cores": os.cpu_count(), "load_1min": round(os.getloadavg()[0], 2)}


def _call_all(actors: list, method: str, args: list[tuple], timeout: float) -> list:
    """Call `method` on every actor and wait for all; an actor that is restarting is asked again until `timeout`."""
    end, out = time.time() + timeout, [None] * len(actors)
    todo = list(range(len(actors)))
    while todo:
        refs = {getattr(actors[i], method).remote(*args[i]): i for i in todo}
        todo = []
        for ref, i in refs.items():
            try:
                out[i] = ray.get(ref, timeout=max(1.0, end - time.time()))
            except ray.exceptions.ActorUnavailableError:
                todo.append(i)
            except ray.exceptions.GetTimeoutError:
                raise RuntimeError(f"worker {i} did not answer {method!r} within {timeout:g} s") from None
        if todo:
            if time.time() > end:
                raise RuntimeError(f"workers {todo} were still restarting after {timeout:g} s")
            time.sleep(0.5)
    return out


def descendants() -> set[int]:
    """Process ids of this process's living descendants (from Linux's /proc; empty elsewhere)."""
    parent = {}
    for d in Path("/proc").glob("[0-9]*"):
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parent[int(d.name)] = int(fields[1])
    found, todo = set(), [os.getpid()]
    while todo:
        kids = [c for c, p in parent.items() if p == todo[-1]]
        todo.pop()
        found.update(kids)
        todo += kids
    return found


def _start_ray(address: str | None, cpus: int | None, attempts: int = 3) -> None:
    """`ray.init`, tried again when the local node misses Ray's fixed 30 s start-up window (a busy machine); the
    processes a failed attempt started are ended before the next one."""
    for attempt in range(attempts):
        before = descendants()
        try:
            ray.init(address=address, num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR")  # fmt: skip
            return
        except Exception as e:
            ray.shutdown()
            for pid in descendants() - before:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            if "timed out during startup" not in str(e) or attempt == attempts - 1:
                raise RuntimeError(f"Ray did not start: {e}") from None


class Cluster:
    """A Ray session with a pool of `workers` actors serving `source`'s models. A context manager.

    Locally (no `address`), Ray starts with as many logical CPUs as workers need: the workers share the machine's
    physical cores. With `address`, it joins a running Ray cluster and needs `workers` free CPUs there.
    """

    def __init__(
        self,
        source: ModelSource,
        workers: int,
        *,
        address: str | None = None,
        max_restarts: int = 3,
        start_timeout: float = 300.0,
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ParameterError(f"workers must be an integer >= 1, got {workers!r}")
        self.source, self.owns = source, not ray.is_initialized()
        if self.owns:
            _start_ray(address, None if address else max(workers + 1, os.cpu_count() or 1))
        try:
            free = ray.available_resources().get("CPU", 0)
            if free < workers:
                raise ParameterError(f"the Ray cluster has {free:g} free CPUs; {workers} workers need one each")
            gpus = ray.cluster_resources().get("GPU", 0)
            opts = {"num_cpus": 1, "max_restarts": max_restarts, "max_task_retries": 0}
            device = "cpu"
            if gpus:
                opts["num_gpus"], device = min(1.0, gpus / workers), "cuda"
            remote = ray.remote(Worker).options(**opts)
            self.actors = [remote.remote(i, source, device) for i in range(workers)]
            self.start_timeout = start_timeout
            _call_all(self.actors, "pid", [()] * workers, start_timeout)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for a in getattr(self, "actors", []):
            ray.kill(a, no_restart=True)
        self.actors = []
        if self.owns and ray.is_initialized():
            ray.shutdown()

    def run(
        self,
        scheme: Scheme,
        *,
        queries: int,
        rate: float,
        deadline_ms: float | None = None,
        kill_worker: int | None = None,
        stragglers: Stragglers | None = None,
        seed: int = 0,
        max_wait_ms: float | None = None,
        max_seconds: float | None = None,
        drain_s: float = 30.0,
        sigma: float = 10.0,
        progress: Callable[[int, int], None] | None = None,
    ) -> Run:
        """Serve `queries` Poisson arrivals at `rate` per second (at most `max_seconds`, default 3 x queries /
        rate) with `scheme` on the first N workers; queries are test images in the seeded order of
        `experiments.test_groups`. `max_wait_ms` (default 2K / rate) bounds the wait for a group; the run ends when
        every query has ended, or `drain_s` after the last arrival, whichever is first."""
        stragglers = stragglers or Stragglers()
        if scheme.N > len(self.actors):
            raise ParameterError(f"{scheme.name} needs N={scheme.N} workers; this cluster has {len(self.actors)}")
        if not isinstance(rate, int | float) or not math.isfinite(rate) or rate <= 0:
            raise ParameterError(f"rate must be a number > 0 (queries per second), got {rate!r}")
        if deadline_ms is not None and not deadline_ms > 0:
            raise ParameterError(f"deadline must be > 0 ms, got {deadline_ms!r}")
        if kill_worker is not None and not 0 <= kill_worker < scheme.N:
            raise ParameterError(f"kill-worker {kill_worker} is not a worker of this run: 0..{scheme.N - 1}")
        self.source.check(scheme)
        arrivals = poisson_arrivals(queries, rate, max_seconds=max_seconds or 3 * queries / rate, seed=seed)
        x, y = data.load(self.source.dataset, "test")
        order = np.random.default_rng(seed).permutation(len(x))  # experiments.test_groups' order
        image = order[np.arange(len(arrivals)) % len(x)]
        rng = np.random.default_rng([seed, 2])
        adversaries = set(rng.choice(scheme.N, scheme.E, replace=False).tolist()) if scheme.E else set()
        specs = [
            TaskSpec(role, scheme.K, seed, stragglers, w in adversaries, sigma) for w, role in enumerate(scheme.roles)
        ]
        actors = self.actors[: scheme.N]
        shape = tuple(data.to_tensor(x[:1], self.source.dataset).shape[1:])
        before = _call_all(actors, "prepare", [(s.role, s.K, shape) for s in specs], self.start_timeout)
        hogs = [ray.remote(Hog).options(num_cpus=0).remote() for _ in range(stragglers.hog)]
        limit = float(arrivals[-1]) + drain_s
        for h in hogs:
            h.spin.remote(limit + 5)
        backend = RayBackend(actors, specs)
        kill = None if kill_worker is None else (kill_worker, len(arrivals) // scheme.K // 2)
        fe = Frontend(
            scheme, backend, inputs=lambda ids: data.to_tensor(x[image[ids]], self.source.dataset),
            deadline=None if deadline_ms is None else deadline_ms / 1e3,
            max_wait=(2 * scheme.K / rate) if max_wait_ms is None else max_wait_ms / 1e3, limit=limit,
            kill=kill, on_answer=progress,
        )  # fmt: skip
        trace = fe.run(arrivals)
        for res in backend.drain(drain_s):
            fe.receive(res)
        for h in hogs:
            ray.kill(h)
        trace.stages = dict(backend.stages)
        after = _call_all(actors, "pid", [()] * len(actors), self.start_timeout)  # waits for restarted workers
        config = {
            "dataset": self.source.dataset, "model": getattr(self.source, "arch", type(self.source).__name__),
            "rate": rate, "deadline_ms": deadline_ms, "kill_worker": kill_worker, "seed": seed,
            "kill_round": None if kill is None else kill[1],
            "straggler": stragglers.spec(), "restarts": sum(a != b for a, b in zip(before, after, strict=True)),
            "adversaries": sorted(adversaries), **hardware(),
        }  # fmt: skip
        return Run(trace, y[image], config)
