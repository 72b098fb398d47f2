"""Serving for real: ApproxIFER and its baselines as a distributed prediction-serving system on Ray.

* `schemes`: uncoded, replication, ParM and ApproxIFER (and any linear code) as pure arithmetic on a group of K.
* `delays`: the injected straggler model (shifted exponential, rare long stalls, optional CPU hogs).
* `frontend`: batching, dispatch, decoding as soon as possible or at a deadline; every query answered exactly once.
* `ray_backend`: worker actors, the Ray backend of the frontend, and `Cluster`, a session with a pool of workers.
* `simulate`: a discrete-event simulator that drives the same frontend with measured service times.
* `bench`: the ``approxifer serve-bench`` command.

Only `ray_backend` (and `bench`, which uses it) imports Ray; the rest runs without it.
"""

from approxifer.cluster.delays import Stragglers
from approxifer.cluster.frontend import Frontend, Run, poisson_arrivals
from approxifer.cluster.schemes import SCHEMES, make, register

__all__ = ["SCHEMES", "Frontend", "Run", "Stragglers", "make", "poisson_arrivals", "register"]
