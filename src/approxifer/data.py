"""The three datasets as verified uint8 arrays, and the one path that turns them into model inputs.

`prepare(name)` decodes a dataset once, from the offline mirror (``APPROXIFER_DATA_MIRROR``, default
``../shared/data`` beside the checkout) or else from the official downloads through torchvision, checks the
sha256 of every decoded array against the published checksums and caches the arrays as ``.npy`` files in the
data folder (``APPROXIFER_DATA``, default ``data/`` in the checkout). `load(name, split)` reads that cache and
checks the arrays against the same checksums at every read, so a changed or damaged cache is an error that names
the file, never a silently different test set (the hash runs at about 0.5 GB/s on a busy 2-core CPU: 64 ms for
CIFAR-10's test split, on top of 29 ms to read it from the page cache).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["DATASETS", "DataError", "DatasetInfo", "data_dir", "info", "load", "mirror_dir", "prepare", "to_tensor"]

REPO_ROOT = Path(__file__).resolve().parents[2]


class DataError(RuntimeError):
    """A dataset could not be found, read or verified."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    shape: tuple[int, int, int]  # H, W, C
    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, on [0, 1] pixels
    std: tuple[float, ...]
    counts: dict[str, int]  # images per split
    sha256: dict[str, tuple[str, str]]  # split -> (images, labels) of the decoded uint8 arrays


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        "mnist", (28, 28, 1), tuple(str(d) for d in range(10)), (0.1307,), (0.3081,),
        {"train": 60000, "test": 10000},
        {
            "train": ("741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
                      "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13"),
            "test": ("6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
                     "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5"),
        },
    ),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", (28, 28, 1),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        (0.2860,), (0.3530,),
        {"train": 60000, "test": 10000},
        {
            "train": ("2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
                      "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7"),
            "test": ("c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
                     "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9"),
        },
    ),
    "cifar10": DatasetInfo(
        "cifar10", (32, 32, 3),
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
        {"train": 50000, "test": 10000},
        {
            "train": ("47af8b02cfcfb6cdf3dbbd1969ad7f1b70f4413f6f80f437b020ee4e5bc8304a",
                      "2b7cd2f24487317614016b72ffd53071c3062f592f0eb300c18a770d41ae1253"),
            "test": ("f9b1e2130bab680db56eb06d886f7f1ad0f1183907ceff4659d1735c890f5b04",
                     "cec8a24a1e92aa2ecaa0bbd3dbfa86bf6cd8759fbd209a832824c8cf0afca9d5"),
        },
    ),
}  # fmt: skip

SPLITS = ("train", "test")


def info(name: str) -> DatasetInfo:
    """The dataset's shape, class names, normalisation constants and checksums."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    return split


def data_dir() -> Path:
    """Where decoded arrays are cached: ``$APPROXIFER_DATA``, else ``data/`` in the checkout."""
    return Path(os.environ.get("APPROXIFER_DATA", REPO_ROOT / "data"))


def mirror_dir() -> Path | None:
    """The offline mirror: ``$APPROXIFER_DATA_MIRROR``, else ``../shared/data`` beside the checkout if present."""
    env = os.environ.get("APPROXIFER_DATA_MIRROR")
    if env:
        return Path(env)
    default = REPO_ROOT.parent / "shared" / "data"
    return default if default.is_dir() else None


def sha256(a: np.ndarray) -> str:
    return hashlib.sha256(memoryview(np.ascontiguousarray(a)).cast("B")).hexdigest()


# ---------------------------------------------------------------- decoders


def _read_idx(path: Path, header: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=header)


def _from_idx(folder: Path, split: str, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    x = _read_idx(folder / f"{prefix}-images-idx3-ubyte.gz", 16).reshape(-1, *hw, 1)
    y = _read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", 8)
    return x, y


def _from_webp_sheets(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    sheets = sorted(folder.glob(f"{split}-[0-9][0-9].webp"))
    if not sheets:
        raise FileNotFoundError(folder / f"{split}-00.webp")
    tiles = []
    for sheet in sheets:
        a = np.asarray(Image.open(sheet).convert("RGB"))  # (800, 1280, 3): 25 x 40 tiles of 32 x 32
        tiles.append(a.reshape(25, 32, 40, 32, 3).transpose(0, 2, 1, 3, 4).reshape(1000, 32, 32, 3))
    y = np.loadtxt(folder / f"{split}-labels.txt", dtype=np.uint8, ndmin=1)
    return np.concatenate(tiles), y


def _from_mirror(name: str, split: str, mirror: Path) -> tuple[np.ndarray, np.ndarray]:
    folder = mirror / name
    if name == "cifar10":
        return _from_webp_sheets(folder, split)
    return _from_idx(folder, split, info(name).shape[:2])


def _from_torchvision(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    root = data_dir() / "downloads"
    ds = cls(str(root), train=split == "train", download=True)
    x = np.asarray(ds.data, dtype=np.uint8)
    x = x[..., None] if x.ndim == 3 else x
    return x, np.asarray(ds.targets, dtype=np.uint8)


# ---------------------------------------------------------------- prepare / load


def _paths(name: str, split: str) -> tuple[Path, Path]:
    folder = data_dir() / name
    return folder / f"{split}_x.npy", folder / f"{split}_y.npy"


def _verify(name: str, split: str, x: np.ndarray, y: np.ndarray, source: str) -> None:
    want_x, want_y = info(name).sha256[split]
    n = info(name).counts[split]
    if x.shape != (n, *info(name).shape) or y.shape != (n,):
        raise DataError(
            f"{name}/{split} from {source}: got images {x.shape} and labels {y.shape}, "
            f"expected ({n}, {', '.join(map(str, info(name).shape))}) and ({n},): the source is incomplete"
        )
    for what, arr, want in (("images", x, want_x), ("labels", y, want_y)):
        got = sha256(arr)
        if got != want:
            raise DataError(
                f"{name}/{split} {what} from {source} have sha256 {got}, expected {want}: the source is "
                "corrupt or a different version; replace it with an exact copy (see the data README)"
            )


def prepare(name: str, splits: tuple[str, ...] = SPLITS, *, force: bool = False) -> Path:
    """Decode, verify and cache `name`'s splits as .npy files; return the dataset's cache folder.

    Sources, in order: the offline mirror (if it exists), then torchvision's official downloads.
    Raises `DataError` naming every place looked at when no source works, or when a checksum differs.
    """
    info(name)
    for split in map(_check_split, splits):
        px, py = _paths(name, split)
        if px.exists() and py.exists() and not force:
            try:
                _read_verified(name, split)
                continue
            except DataError:  # a changed or damaged cache: decode it again
                pass
        mirror = mirror_dir()
        tried = []
        arrays = None
        if mirror is not None:
            try:
                arrays, source = _from_mirror(name, split, mirror), f"the mirror {mirror / name}"
            except (FileNotFoundError, OSError, ValueError) as e:
                tried.append(f"mirror {mirror / name}: {e}")
        else:
            tried.append("mirror: APPROXIFER_DATA_MIRROR is not set and ../shared/data does not exist")
        if arrays is None:
            try:
                arrays, source = _from_torchvision(name, split), "torchvision's download"
            except Exception as e:  # network errors come in many types
                tried.append(f"torchvision download: {type(e).__name__}: {e}")
        if arrays is None:
            raise DataError(
                f"cannot find {name}/{split}. Looked in:\n  - " + "\n  - ".join(tried) + "\n"
                "Set APPROXIFER_DATA_MIRROR to a folder holding the offline copies (layout: shared/data/README.md)"
                " or connect to the internet for torchvision's download."
            )
        x, y = arrays
        _verify(name, split, x, y, source)
        px.parent.mkdir(parents=True, exist_ok=True)
        for path, arr in ((px, x), (py, y.astype(np.int64))):
            with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npy", delete=False) as tmp:
                np.save(tmp, arr)
            shutil.move(tmp.name, path)  # atomic: a half-written cache is never read
    return data_dir() / name


def load(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The split as ``(x, y)``: x uint8 of shape (n, H, W, C), y int64 labels in 0..9. Prepares it if needed.

    Raises `DataError` naming the file when a cached array cannot be read or differs from the published checksums.
    """
    info(name)
    _check_split(split)
    px, py = _paths(name, split)
    if not (px.exists() and py.exists()):
        prepare(name, (split,))
    return _read_verified(name, split)


def _read_verified(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The cached arrays of a split, checked: readable, their shapes and dtypes, labels in range, their sha256."""
    d, n = info(name), info(name).counts[split]
    redo = f"`make data` (or `approxifer data {name}`) decodes it again"
    arrays = []
    for path in _paths(name, split):
        try:
            arr = np.load(path)  # allow_pickle=False: arrays only
        except (OSError, ValueError, EOFError) as e:
            raise DataError(f"cannot read the cached array {path} ({type(e).__name__}: {e}); {redo}") from None
        if not isinstance(arr, np.ndarray):  # an .npz archive
            arr.close()
            raise DataError(f"the cached {path} is not one .npy array; {redo}")
        arrays.append(arr)
    (px, py), (x, y) = _paths(name, split), arrays
    if x.shape != (n, *d.shape) or x.dtype != np.uint8:
        raise DataError(f"the cached images {px} are {x.dtype} {x.shape}, expected uint8 {(n, *d.shape)}; {redo}")
    if y.shape != (n,) or y.dtype != np.int64:
        raise DataError(f"the cached labels {py} are {y.dtype} {y.shape}, expected int64 ({n},); {redo}")
    if y.min() < 0 or y.max() >= len(d.classes):
        raise DataError(f"the cached labels {py} hold {y.min()}..{y.max()}, outside 0..{len(d.classes) - 1}; {redo}")
    want_x, want_y = d.sha256[split]
    for what, path, arr, want in (("images", px, x, want_x), ("labels", py, y.astype(np.uint8), want_y)):
        got = sha256(arr)
        if got != want:
            raise DataError(f"the cached {what} {path} have sha256 {got}, expected {want}: the file was changed or "
                            f"damaged; {redo}")  # fmt: skip
    return x, y


def to_tensor(x: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    """uint8 images (n, H, W, C) -> normalised float32 tensor (n, C, H, W), the input every model takes."""
    d = info(name)
    t = torch.as_tensor(x)
    if t.dtype != torch.uint8 or t.ndim != 4 or tuple(t.shape[1:]) != d.shape:
        raise ValueError(f"expected uint8 images of shape (n, {', '.join(map(str, d.shape))}), "
                         f"got {t.dtype} {tuple(t.shape)}")  # fmt: skip
    mean = torch.tensor(d.mean, device=t.device).view(1, -1, 1, 1)
    std = torch.tensor(d.std, device=t.device).view(1, -1, 1, 1)
    return (t.permute(0, 3, 1, 2).float().div_(255) - mean) / std
