r"""Caches: arrays kept in memory under a byte budget, and crash-safe entries on disk.

* In memory, `ByteLRU` and the decorator `byte_cached`: the codec's and the locator's matrices depend only on small
  keys ($K$, $N$, the returned set) and are computed once. A least-recently-used cache bounded by entry *count*
  grows with the matrices' size ($K = 200$: 125 MiB per 200 returned sets); these are bounded by the *bytes* they
  hold, ``MAX_BYTES`` each, and drop the least recently used entries beyond it.
* On disk, `save_npz` and `load_npz`: worker outputs cached as ``.npz`` files. Each writer writes a temporary file
  of its own in the entry's folder and renames it over the entry (`os.replace`, atomic), so two processes that
  compute the same key at once never share a file and a reader never sees half an entry. A reader checks the entry
  (the zip and its CRC-32s, the arrays' names and shapes, NaN or Inf where there may be none); one that fails is
  reported with its path (`CacheWarning`) and the caller recomputes it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import tempfile
import threading
import warnings
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

__all__ = ["MAX_BYTES", "ByteLRU", "CacheWarning", "byte_cached", "load_npz", "nbytes", "save_npz"]

#: Default budget of one in-memory cache.
MAX_BYTES = 64 << 20

T = TypeVar("T")


# ---------------------------------------------------------------- in memory


def nbytes(value: object) -> int:
    """Bytes held by an array, a tensor, or a tuple/list of them (other objects: their `sys.getsizeof`)."""
    if isinstance(value, tuple | list):
        return sum(map(nbytes, value))
    size = getattr(value, "nbytes", None)  # numpy arrays and torch tensors
    return int(size) if isinstance(size, int) else sys.getsizeof(value)


class ByteLRU:
    """A least-recently-used cache whose values together hold at most `max_bytes` (see `nbytes`).

    ``get(key, make)`` returns the value cached under `key`, else ``make()``'s, which it keeps when it fits, dropping
    the least recently used entries until the total is within budget. A value larger than the whole budget is
    returned without being kept. Thread-safe; `make` runs outside the lock.
    """

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def get(self, key: Hashable, make: Callable[[], T]) -> T:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key][0]
        value = make()
        size = nbytes(value)
        with self._lock:
            if key in self._entries:  # another thread made it meanwhile: hand out one object
                return self._entries[key][0]
            if size <= self.max_bytes:
                self._entries[key] = (value, size)
                self.nbytes += size
                while self.nbytes > self.max_bytes:
                    self.nbytes -= self._entries.popitem(last=False)[1][1]
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.nbytes = 0


def byte_cached(max_bytes: int = MAX_BYTES) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator: cache a function's results in a `ByteLRU` keyed by its arguments (``.cache``, ``.cache_clear()``).

    Unhashable arguments skip the cache, so the function's own validation reports them.
    """

    def wrap(fn: Callable[..., T]) -> Callable[..., T]:
        store = ByteLRU(max_bytes)

        @functools.wraps(fn)
        def cached(*args: object, **kwargs: object) -> T:
            key = (args, tuple(sorted(kwargs.items())))
            try:
                hash(key)
            except TypeError:
                return fn(*args, **kwargs)
            return store.get(key, lambda: fn(*args, **kwargs))

        cached.cache = store  # type: ignore[attr-defined]
        cached.cache_clear = store.clear  # type: ignore[attr-defined]
        return cached

    return wrap


# ---------------------------------------------------------------- on disk


class CacheWarning(UserWarning):
    """A cache entry on disk was unreadable or inconsistent; it is recomputed."""


def save_npz(path: Path, **arrays: object) -> None:
    """Write `arrays` to the ``.npz`` entry `path` atomically: into a temporary file of this writer's own in the same
    folder, then `os.replace` over `path`. A crash leaves at most a hidden ``.tmp`` file, never half an entry."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


_UNREADABLE = (OSError, EOFError, ValueError, TypeError, KeyError, zipfile.BadZipFile, zlib.error)


def load_npz(
    path: Path,
    shapes: dict[str, tuple[int, ...]],
    *,
    finite: Collection[str] = (),
    check: Callable[[dict[str, np.ndarray]], object] | None = None,
) -> dict[str, np.ndarray] | None:
    """The arrays of the ``.npz`` entry `path`, read in full and checked; None when there is no usable entry.

    Args:
        shapes: the arrays the entry must hold, and their shapes.
        finite: names of arrays that may hold no NaN or Inf.
        check: further consistency test on the arrays; it raises ValueError (or TypeError, KeyError) with the reason.

    An entry that cannot be read (not a zip, truncated, a bad CRC-32, pickled data) or fails a check gets a
    `CacheWarning` naming `path` and the reason, and None is returned so that the caller recomputes and rewrites it.
    """
    path = Path(path)
    try:
        with np.load(path) as z:  # allow_pickle=False: arrays only
            arrays = {name: z[name] for name in shapes}  # reads every byte, so zipfile checks the CRC-32s
        for name, shape in shapes.items():
            if arrays[name].shape != shape:
                raise ValueError(f"{name} has shape {arrays[name].shape}, expected {shape}")
        for name in finite:
            if not np.isfinite(arrays[name]).all():
                raise ValueError(f"{name} holds NaN or Inf")
        if check is not None:
            check(arrays)
    except FileNotFoundError:
        return None
    except _UNREADABLE as e:
        warnings.warn(
            f"the cache entry {path} is unusable ({type(e).__name__}: {e}); recomputing it", CacheWarning, stacklevel=2
        )
        return None
    return arrays
