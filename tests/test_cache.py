"""Caches: the worker-output cache on disk survives concurrent writers and damaged entries; the matrix caches in
memory are bounded by bytes."""

from __future__ import annotations

import multiprocessing
import re
import warnings

import numpy as np
import pytest
import torch

from approxifer import baselines, cache, codec, experiments, locator, models
from approxifer.serving import ServedModel, served


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("APPROXIFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("APPROXIFER_MODELS", str(tmp_path / "models"))
    torch.manual_seed(0)
    models.save(models.build("mlp", "mnist"), "mnist", "mlp", {"note": "random weights for tests"}, half=False)
    return tmp_path


def _serve_at_once(barrier, K: int, N: int) -> None:
    """In a spawned process: compute worker outputs, every cache write in step with the other process (both write
    the entry at the same time, then both put it in place)."""
    savez = np.savez

    def in_step(*args, **kwargs):
        barrier.wait(timeout=120)
        savez(*args, **kwargs)
        barrier.wait(timeout=120)

    np.savez = in_step
    experiments.worker_outputs(served("mnist", "mlp", "cpu"), K, N, n_test=40, progress=False)


def test_two_processes_writing_the_same_entry_at_once(env):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_serve_at_once, args=(barrier, 4, 5)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    entries = sorted((env / "cache").rglob("*"))
    assert [e.suffix for e in entries if e.is_file()] == [".npz", ".npz"]  # base and coded; no temporary left
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # both entries are whole
        wo = experiments.worker_outputs(served("mnist", "mlp", "cpu"), 4, 5, n_test=40, progress=False)
    fresh = experiments.worker_outputs(served("mnist", "mlp", "cpu"), 4, 5, n_test=40, progress=False, seed=0)
    assert np.array_equal(wo.coded, fresh.coded)


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_byte(path):
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # inside the stored array: the zip's CRC-32 no longer matches
    path.write_bytes(bytes(blob))


def _rewrite(**arrays):
    def damage(path):
        with np.load(path) as z:
            entry = dict(z)
        for k, v in arrays.items():
            if v is None:
                del entry[k]
            else:
                entry[k] = v(entry[k])
        np.savez(path, **entry)

    return damage


def _nan(a):
    a = a.astype(np.float64)
    a.flat[3] = np.nan
    return a


DAMAGE = {
    "truncated": _truncate,
    "a flipped byte": _flip_a_byte,
    "not a zip": lambda path: path.write_bytes(b"not a zip file"),
    "an empty file": lambda path: path.write_bytes(b""),
    "a missing array": _rewrite(coded=None),
    "a wrong shape": _rewrite(coded=lambda a: a[:-1]),
    "NaN": _rewrite(coded=_nan),
    "bad timings": _rewrite(timings=lambda a: np.array("[1, 2]")),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_worker_output_entry_is_named_and_recomputed(env, damage):
    model = served("mnist", "mlp", "cpu")
    first = experiments.worker_outputs(model, 4, 6, n_test=24, progress=False)
    (path,) = (env / "cache" / "coded").iterdir()
    DAMAGE[damage](path)
    with pytest.warns(cache.CacheWarning, match=re.escape(str(path)) + r" is unusable .*; recomputing it"):
        again = experiments.worker_outputs(model, 4, 6, n_test=24, progress=False)
    assert np.array_equal(again.coded, first.coded) and again.timings.keys() == first.timings.keys()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rewritten whole
        assert np.array_equal(experiments.worker_outputs(model, 4, 6, n_test=24, progress=False).coded, first.coded)


@pytest.mark.parametrize(
    "damage",
    [_truncate, _rewrite(done=lambda d: np.ones_like(d)), _rewrite(out=lambda a: a[:, :3])],
    ids=["truncated", "NaN marked done", "a wrong shape"],
)
def test_a_damaged_base_output_entry_is_recomputed(env, damage):
    model = served("mnist", "mlp", "cpu")
    idx = np.arange(30)
    first = experiments.base_outputs(model, idx, progress=False)
    (path,) = (env / "cache" / "base").iterdir()
    damage(path)
    with pytest.warns(cache.CacheWarning, match=re.escape(str(path))):
        assert np.array_equal(experiments.base_outputs(model, idx, progress=False), first)


def test_a_damaged_parity_output_entry_is_recomputed(env):
    parity = ServedModel("mnist-sum-parityK2", "mnist", "0" * 64, lambda x: x.flatten(1)[:, 300:310].numpy())
    first = baselines.parity_outputs(parity, 2, n_test=20)
    (path,) = (env / "cache" / "parity").iterdir()
    _truncate(path)
    with pytest.warns(cache.CacheWarning, match=re.escape(str(path))):
        assert np.array_equal(baselines.parity_outputs(parity, 2, n_test=20), first)


def test_a_writer_that_fails_midway_leaves_the_entry_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "entry.npz"
    cache.save_npz(path, a=np.arange(3))

    def disk_full(file, **arrays):
        file.write(b"PK\x03\x04 half an entry")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError, match="No space left"):
        cache.save_npz(path, a=np.arange(4))
    assert list(tmp_path.iterdir()) == [path]
    assert cache.load_npz(path, {"a": (3,)})["a"].tolist() == [0, 1, 2]


def test_byte_lru_evicts_the_least_recently_used_beyond_its_budget():
    lru = cache.ByteLRU(max_bytes=3 * 800)
    made = []

    def make(k):
        made.append(k)
        return np.zeros(100)  # 800 bytes

    for k in "abc":
        lru.get(k, lambda k=k: make(k))
    lru.get("a", lambda: make("a"))  # a hit: a becomes the most recent
    lru.get("d", lambda: make("d"))  # over budget: b, the least recently used, goes
    assert made == ["a", "b", "c", "d"] and "b" not in lru and all(k in lru for k in "acd")
    assert lru.nbytes == 2400 and len(lru) == 3
    big = lru.get("big", lambda: np.zeros(1000))  # larger than the whole budget: returned, not kept
    assert big.shape == (1000,) and "big" not in lru and len(lru) == 3


def test_the_decoder_matrix_caches_are_bounded_by_bytes():
    """K = 200: one decoder matrix is 200 x 399 float64 = 0.6 MiB; 300 returned sets would hold 180 MiB each way."""
    K, N = 200, 400
    ordered, sorted_ = codec._decoder_matrix_ordered.cache, codec._decoder_matrix_sorted.cache
    rng = np.random.default_rng(0)
    first = None
    for _ in range(300):
        returned = rng.permutation(N)[: N - 1]
        first = codec.decoder_matrix(K, N, returned) if first is None else first
        codec.decoder_matrix(K, N, returned)
    for lru in (ordered, sorted_):
        assert lru.nbytes <= cache.MAX_BYTES and len(lru) < 300
    assert first.shape == (K, N - 1)


def test_the_locator_elimination_cache_is_bounded_by_bytes():
    """K = 100, E = 1: an entry holds the (R, (R-d-1)·d) = (201, 100·100) float64 elimination matrix, 16 MiB."""
    lru = locator._elimination.cache
    K, E = 100, 1
    R = locator.min_returned(K, E)
    for extra in range(6):  # six node sets: 96 MiB with a count bound
        z = codec.worker_points(R + extra)[:R]
        locator._elimination(tuple(z.tolist()), K + E - 1, "chebyshev")
    assert 0 < lru.nbytes <= cache.MAX_BYTES and len(lru) < 6
