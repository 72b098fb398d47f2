"""``approxifer serve-bench``: one serving run on Ray, summarised (the last line is JSON with ``--json``).

    approxifer serve-bench --dataset mnist --arch mlp --scheme approxifer --K 4 --S 1 --queries 200 --rate 40 \\
        --kill-worker 2 --json
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from approxifer import data, models, serving
from approxifer.cluster import schemes
from approxifer.cluster.delays import Stragglers
from approxifer.errors import ParameterError

__all__ = ["main", "parse"]


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="approxifer serve-bench", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True, help=f"one of {', '.join(data.DATASETS)}")
    p.add_argument("--arch", required=True, help=f"a trained architecture: {', '.join(models.ARCHS)}")
    p.add_argument("--scheme", required=True, help=f"one of {', '.join(schemes.SCHEMES)}")
    p.add_argument("--K", type=int, required=True, help="queries per group")
    p.add_argument("--S", type=int, default=1, help="stragglers tolerated (default 1; ignored by uncoded)")
    p.add_argument("--N", type=int, default=None, help="workers (default: the scheme's own count, e.g. K + S)")
    p.add_argument("--E", type=int, default=0, help="Byzantine mode: adversarial workers to locate (approxifer)")
    p.add_argument("--sigma", type=float, default=10.0, help="the adversaries' Gaussian noise (default 10)")
    p.add_argument("--queries", type=int, required=True, help="queries to send")
    p.add_argument("--rate", type=float, required=True, help="Poisson arrival rate, queries per second")
    p.add_argument("--deadline", type=float, default=None, help="ms after dispatch: decode from what returned")
    p.add_argument("--kill-worker", type=int, default=None, help="kill this worker mid-run (Ray restarts it)")
    p.add_argument("--straggler", default=None, help=f"injected delays, ms (default {Stragglers().spec()}; none)")
    p.add_argument("--max-wait", type=float, default=None, help="ms a partial group may wait (default 2K/rate)")
    p.add_argument("--max-seconds", type=float, default=None, help="stop sending after this (default 3Q/rate)")
    p.add_argument("--precision", default="fp32", help=f"inference precision: {', '.join(serving.PRECISIONS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--address", default=None, help="join this Ray cluster (default: start Ray on this machine)")
    p.add_argument("--json", action="store_true", help="end with one line of JSON")
    return p.parse_args(argv)


def check(a: argparse.Namespace):
    """Validate everything that can be checked before Ray starts; return (scheme, stragglers, model source)."""
    from approxifer.cluster.ray_backend import TrainedModels

    if a.dataset not in data.DATASETS:
        raise ParameterError(f"unknown dataset {a.dataset!r}; known: {', '.join(data.DATASETS)}")
    if a.arch not in models.ARCHS:
        raise ParameterError(f"unknown architecture {a.arch!r}; known: {', '.join(models.ARCHS)}")
    scheme = schemes.make(a.scheme, a.K, a.S, a.E, a.N)
    if a.queries < 1:
        raise ParameterError(f"queries must be >= 1, got {a.queries}")
    if not (math.isfinite(a.rate) and a.rate > 0):
        raise ParameterError(f"rate must be > 0 queries per second, got {a.rate:g}")
    if a.deadline is not None and not a.deadline > 0:
        raise ParameterError(f"deadline must be > 0 ms, got {a.deadline:g}")
    if a.kill_worker is not None and not 0 <= a.kill_worker < scheme.N:
        raise ParameterError(f"kill-worker {a.kill_worker} is not a worker of {scheme.name}: 0..{scheme.N - 1}")
    if a.max_wait is not None and not a.max_wait >= 0:
        raise ParameterError(f"max-wait must be >= 0 ms, got {a.max_wait:g}")
    if a.precision not in serving.PRECISIONS:
        raise ParameterError(f"unknown precision {a.precision!r}; known: {', '.join(serving.PRECISIONS)}")
    source = TrainedModels(a.dataset, a.arch, a.precision)
    source.check(scheme)
    return scheme, Stragglers.parse(a.straggler), source


def _json(summary: dict) -> str:
    return json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in summary.items()})


def main(argv: list[str] | None = None) -> dict:
    a = parse(sys.argv[1:] if argv is None else argv)
    try:
        scheme, stragglers, source = check(a)
    except ParameterError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    from tqdm import tqdm

    from approxifer.cluster.ray_backend import Cluster

    bar = tqdm(total=a.queries, desc=f"{scheme.name} K={scheme.K} N={scheme.N}", unit="query",
               disable=not sys.stderr.isatty(), file=sys.stderr)  # fmt: skip

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    with Cluster(source, scheme.N, address=a.address) as cluster:
        run = cluster.run(
            scheme, queries=a.queries, rate=a.rate, deadline_ms=a.deadline, kill_worker=a.kill_worker,
            stragglers=stragglers, seed=a.seed, max_wait_ms=a.max_wait, max_seconds=a.max_seconds,
            sigma=a.sigma, progress=progress,
        )  # fmt: skip
    bar.close()
    s = run.summary()
    if a.json:
        print(_json(s))
    else:
        print(
            f"{s['scheme']} K={s['K']} N={s['N']} S={s['S']}: sent {s['sent']}, answered {s['answered']}, "
            f"failed {s['failed']}, lost {s['lost']}; latency p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms, "
            f"p99.9 {s['p999_ms']:.1f} ms, mean {s['mean_ms']:.1f} ms; {s['throughput_qps']:.1f} queries/s; "
            f"accuracy {s['accuracy']:.3f}"
        )
    return s
