"""Codec speed: the loop implementation of the paper's formulas vs the package, and the codec's share of a round.

K = 8 queries of 3x32x32 (CIFAR-10 images), N = 9 workers, S = 1 straggler, 10-class outputs. All figures are
measured in this one run (median of repeats) and printed with their ratios. Run: `make bench`.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from loop_codec import loop_decode, loop_encode, scalar_decode, scalar_encode

from approxifer import codec, models

K, N, GROUPS = 8, 9, 256


def timeit(fn, repeat: int = 7, number: int = 1) -> float:
    """Median seconds per call over `repeat` runs of `number` calls."""
    fn()
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(number):
            fn()
        runs.append((time.perf_counter() - t) / number)
    return statistics.median(runs)


def main() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(GROUPS, K, 3, 32, 32))
    Y = rng.normal(size=(GROUPS, N - 1, 10))
    returned = sorted(rng.choice(N, N - 1, replace=False).tolist())
    rng.shuffle(returned)

    loop = timeit(lambda: (loop_encode(X[0], N), loop_decode(Y[0], returned, K, N)), number=5)
    scalar = timeit(lambda: (scalar_encode(X[0], N), scalar_decode(Y[0], returned, K, N)), repeat=1)
    assert np.allclose(scalar_encode(X[0], N), loop_encode(X[0], N), atol=1e-10)
    one = timeit(lambda: (codec.encode(X[0], N), codec.decode(Y[0], returned, K, N)), number=50)
    batched = timeit(lambda: (codec.encode(X, N, axis=1), codec.decode(Y, returned, K, N, axis=1))) / GROUPS
    Xt, Yt = torch.from_numpy(X).float(), torch.from_numpy(Y).float()
    batched32 = timeit(lambda: (codec.encode(Xt, N, axis=1), codec.decode(Yt, returned, K, N, axis=1))) / GROUPS
    assert np.allclose(codec.encode(X[0], N), loop_encode(X[0], N), atol=1e-10)

    model = models.build("resnet18", "cifar10").eval().to(memory_format=torch.channels_last)
    coded = codec.encode(Xt[0], N).contiguous(memory_format=torch.channels_last)

    def forward():
        with torch.no_grad():  # float32, as served by default
            model(coded)

    fwd = timeit(forward, repeat=5)

    print(f"codec, one group (K={K}, N={N}, 3x32x32 queries, 10-class outputs, S=1), encode + decode:")
    print(f"  (a) loop implementation of the paper's formulas (float64): {loop * 1e6:10.1f} us / group")
    print(f"      the same with a Python loop per pixel too (no numpy):   {scalar * 1e6:10.1f} us / group")
    print(f"  (b) package, one group per call (numpy float64):          {one * 1e6:10.1f} us / group")
    print(f"      package, {GROUPS} groups per call (numpy float64):       {batched * 1e6:10.1f} us / group")
    print(f"      package, {GROUPS} groups per call (torch float32):       {batched32 * 1e6:10.1f} us / group")
    print(f"  ratio (a)/(b) one group per call:  {loop / one:8.1f}x   (per-pixel loop / (b): {scalar / one:.0f}x)")
    print(
        f"  ratio (a)/(b) {GROUPS} groups per call: {loop / batched:8.1f}x (float64), {loop / batched32:.1f}x (float32)"
    )
    print(f"  (c) ResNet-18 (CIFAR) forward on the {N} coded queries, CPU float32 channels-last, "
          f"{torch.get_num_threads()} threads: {fwd * 1e3:.1f} ms / group")  # fmt: skip
    print(f"      codec share of a round: {one / (one + fwd):.3%} (one group per call), "
          f"{batched32 / (batched32 + fwd):.3%} (batched, float32)")  # fmt: skip


if __name__ == "__main__":
    main()
