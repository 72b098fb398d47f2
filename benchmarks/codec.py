"""Codec speed: the loop implementation of the paper's formulas vs the package, and the codec's share of a round.

K = 8 queries of 3x32x32 (CIFAR-10 images), N = 9 workers, S = 1 straggler, 10-class outputs. All figures are
measured in this one run (median of repeats) and printed with their ratios. Run: `make bench`.

The copy floor: batched encode and decode of 512 groups with a 3x32x32 payload (decode from the 8 workers of one
straggler), for numpy and torch in float32 and float64, beside a matrix product alone, the input check
`isfinite(X).all()` and a copy of the input (read once, write once: the least any codec call must do).
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from loop_codec import loop_decode, loop_encode, scalar_decode, scalar_encode

from approxifer import codec, models

K, N, GROUPS = 8, 9, 256
FLOOR_GROUPS = 512  # groups per call in the copy-floor table


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


def interleaved(fns: dict, repeat: int = 15) -> dict:
    """Median seconds per call of each of `fns`, timed in turns (one call of each per round), so that a change in
    the machine's load during the run affects them alike and their ratios stay fair."""
    for fn in fns.values():
        fn()
    runs = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            runs[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in runs.items()}


def floor_calls(X: np.ndarray | torch.Tensor, Y: np.ndarray | torch.Tensor, returned: list[int]) -> dict:
    """The calls of one row of the copy-floor table, on X (groups, K, 3, 32, 32) and Y (groups, R, 3, 32, 32)."""
    if isinstance(X, torch.Tensor):
        matmul, finite, copy = torch.matmul, lambda a: bool(torch.isfinite(a).all()), torch.clone
        w = torch.tensor(codec.encoder_matrix(K, N), dtype=X.dtype)
    else:
        matmul, finite, copy = np.matmul, lambda a: bool(np.isfinite(a).all()), np.copy
        w = codec.encoder_matrix(K, N).astype(X.dtype)
    x3 = X.reshape(len(X), K, -1)
    return {
        "encode": lambda: codec.encode(X, N, axis=1),
        "matmul": lambda: matmul(w, x3),
        "isfinite": lambda: finite(X),
        "copy X": lambda: copy(X),
        "decode": lambda: codec.decode(Y, returned, K, N, axis=1),
        "copy Y": lambda: copy(Y),
    }


def copy_floor() -> None:
    """Print, per library and dtype, encode and decode next to the matmul alone, the input check and a copy."""
    rng = np.random.default_rng(1)
    returned = [int(i) for i in rng.permutation(N)[: N - 1]]
    X64 = rng.normal(size=(FLOOR_GROUPS, K, 3, 32, 32))
    Y64 = rng.normal(size=(FLOOR_GROUPS, N - 1, 3, 32, 32))
    print(f"\ncodec at the copy floor: {FLOOR_GROUPS} groups per call, K={K}, N={N}, 3x32x32 payload, decode from "
          f"{N - 1} workers; {torch.get_num_threads()} torch threads; ms per call (median of turns)")  # fmt: skip
    head = ("library", "encode", "matmul", "isfinite", "copy X", "enc/copy", "decode", "copy Y", "dec/copy")
    print("  " + " ".join(f"{h:>9}" for h in head))
    for lib in ("numpy", "torch"):
        for dtype in ("float32", "float64"):
            X, Y = X64.astype(dtype), Y64.astype(dtype)
            if lib == "torch":
                X, Y = torch.from_numpy(X), torch.from_numpy(Y)
            t = {k: v * 1e3 for k, v in interleaved(floor_calls(X, Y, returned)).items()}
            row = [f"{lib} {dtype[-2:]}", *(f"{t[k]:9.1f}" for k in ("encode", "matmul", "isfinite", "copy X"))]
            row += [f"{t['encode'] / t['copy X']:8.2f}x", f"{t['decode']:9.1f}", f"{t['copy Y']:9.1f}"]
            row += [f"{t['decode'] / t['copy Y']:8.2f}x"]
            print("  " + " ".join(f"{c:>9}" for c in row))
    print("  target: encode and decode within 1.5x of a copy of their input (read once, write once)")


if __name__ == "__main__":
    main()
    copy_floor()
