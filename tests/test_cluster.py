"""The serving system on Ray (one local Ray session for the module, shut down after it with no process left)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import ray
import torch

from approxifer import codec, experiments
from approxifer.cluster import schemes
from approxifer.cluster.delays import Stragglers
from approxifer.cluster.frontend import ANSWERED
from approxifer.cluster.ray_backend import Cluster, descendants
from approxifer.errors import ParameterError
from approxifer.serving import ServedModel

W = np.random.default_rng(7).normal(size=(784, 10)).astype(np.float32) / 28


def linear(x: torch.Tensor) -> np.ndarray:
    """A fake model: fixed random logits of the flattened image."""
    return x.reshape(len(x), -1).numpy() @ W


@dataclass(frozen=True)
class LinearModels:
    """A `ModelSource` serving `linear` (pickled by value to the workers, which cannot import this module)."""

    dataset: str = "mnist"

    def load(self, role: str, K: int, device: str = "cpu") -> ServedModel:
        return ServedModel("linear", self.dataset, "fake", linear)

    def check(self, scheme) -> None:
        pass


ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def living(pids: set[int]) -> list[str]:
    """Command lines of the processes `pids` that still live."""
    out = []
    for pid in pids:
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode() or str(pid))
        except OSError:
            continue
    return out


@pytest.fixture(scope="module")
def cluster():
    before = descendants()
    with Cluster(LinearModels(), 5) as c:
        started = descendants() - before
        assert any("raylet" in cmd for cmd in living(started))
        yield c
    for _ in range(60):  # Ray's processes exit within seconds of ray.shutdown()
        left = living(descendants() - before)
        if not left:
            break
        time.sleep(0.5)
    assert not ray.is_initialized() and not left, f"processes left after ray.shutdown(): {left}"


def offline(queries: list[int], returned: list[int], K: int, N: int, seed: int) -> np.ndarray:
    """The engine's answer: encode the queries' images, run the fake model, decode the returned set."""
    from approxifer import data

    x, _ = data.load("mnist", "test")
    order = np.random.default_rng(seed).permutation(len(x))
    Y = linear(codec.encode(data.to_tensor(x[order[queries]], "mnist"), N))
    return experiments.decode_groups(Y[None], np.array([returned]), K, N)[0].argmax(-1)


def test_ray_rounds_equal_the_engines(cluster):
    K, S, Q, seed = 4, 1, 32, 5
    run = cluster.run(schemes.make("approxifer", K, S), queries=Q, rate=100.0, seed=seed, max_wait_ms=10_000)
    tr = run.trace
    groups = np.array([r["queries"] for r in tr.rounds])
    np.testing.assert_array_equal(groups, np.arange(Q).reshape(-1, K))  # experiments.test_groups' groups
    for r in tr.rounds:
        assert len(r["returned"]) == K + S - S
        np.testing.assert_array_equal(tr.prediction[r["queries"]], offline(r["queries"], r["returned"], K, K + S, seed))
    s = run.summary()
    assert (s["sent"], s["answered"], s["lost"], s["restarts"]) == (Q, Q, 0, 0)
    assert s["p50_ms"] <= s["p99_ms"] <= s["p999_ms"] and 0 <= s["accuracy"] <= 1


def test_a_killed_worker_loses_nothing(cluster):
    K, S, Q, seed = 4, 1, 40, 1
    run = cluster.run(schemes.make("approxifer", K, S), queries=Q, rate=80.0, seed=seed, kill_worker=2)
    s = run.summary()
    assert (s["sent"], s["answered"], s["failed"], s["lost"], s["restarts"]) == (Q, Q, 0, 0, 1)
    killed = Q // K // 2
    task = run.trace.tasks[killed, 2]  # submitted just before its worker was killed
    # ray.kill is asynchronous: the kill fails the task (retried, or recorded as an error), or its result never comes
    # back (the round is decoded without it); rarely the task has already finished and returns normally
    caught = task["attempts"] > 1 or task.get("error") == "ActorUnavailableError" or "end" not in task
    assert caught or task.get("error") is None
    if caught:
        assert 2 not in run.trace.rounds[killed]["returned"]  # a straggler: the round decoded without it
    for r in run.trace.rounds:
        np.testing.assert_array_equal(run.trace.prediction[r["queries"]], offline(
            [r["queries"][j % len(r["queries"])] for j in range(K)], r["returned"], K, K + S, seed
        )[: len(r["queries"])])  # fmt: skip


def test_ray_deadline_decodes_from_the_subset_that_returned(cluster):
    K, S, seed = 4, 1, 2
    slow = Stragglers(shift=1.0, mean=0.0, p=0.5, stall=400.0)  # half the tasks take 0.4 s
    run = cluster.run(schemes.make("approxifer", K, S), queries=16, rate=40.0, seed=seed, deadline_ms=100.0,
                      max_wait_ms=10_000, stragglers=slow)  # fmt: skip
    tr = run.trace
    late = [r for r in tr.rounds if r["how"] == "deadline" and r["returned"]]
    assert late and all(len(r["returned"]) < K for r in late)
    for r in late:
        np.testing.assert_array_equal(tr.prediction[r["queries"]], offline(r["queries"], r["returned"], K, K + S, seed))
    assert run.summary()["lost"] == 0 and (tr.status == ANSWERED).sum() >= 4 * len(late)


def test_a_scheme_larger_than_the_pool_is_refused(cluster):
    with pytest.raises(ParameterError, match="needs N=7 workers; this cluster has 5"):
        cluster.run(schemes.make("approxifer", 4, 3), queries=4, rate=10.0)
    with pytest.raises(ParameterError, match="kill-worker 5 is not a worker"):
        cluster.run(schemes.make("approxifer", 4, 1), queries=4, rate=10.0, kill_worker=5)
