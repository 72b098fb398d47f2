"""The offline datasets: shapes, dtypes, labels, checksums, and the errors for a bad or missing source."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
import torch

from approxifer import data


@pytest.mark.parametrize("name", list(data.DATASETS))
@pytest.mark.parametrize("split", ["train", "test"])
def test_load_shapes_dtypes_labels_and_checksums(name, split):
    x, y = data.load(name, split)
    d = data.info(name)
    assert x.shape == (d.counts[split], *d.shape) and x.dtype == np.uint8
    assert y.shape == (d.counts[split],) and y.dtype == np.int64
    assert y.min() == 0 and y.max() == len(d.classes) - 1
    assert (data.sha256(x), data.sha256(y.astype(np.uint8))) == d.sha256[split]


def test_class_counts_of_the_test_sets():
    assert np.bincount(data.load("mnist", "test")[1]).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]
    assert set(np.bincount(data.load("cifar10", "test")[1])) == {1000}


def test_to_tensor_normalises_to_nchw():
    x, _ = data.load("cifar10", "test")
    t = data.to_tensor(x[:500], "cifar10")
    assert t.shape == (500, 3, 32, 32) and t.dtype == torch.float32
    assert torch.allclose(t.mean(dim=(0, 2, 3)), torch.zeros(3), atol=0.1)
    assert torch.allclose(t.std(dim=(0, 2, 3)), torch.ones(3), atol=0.1)
    with pytest.raises(ValueError, match="expected uint8 images of shape"):
        data.to_tensor(x[:2].astype(np.float32), "cifar10")
    with pytest.raises(ValueError, match="expected uint8 images of shape"):
        data.to_tensor(x[:2], "mnist")


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="unknown dataset 'svhn'; known: mnist, fashion-mnist, cifar10"):
        data.load("svhn", "test")
    with pytest.raises(ValueError, match="unknown split 'val'"):
        data.load("mnist", "val")


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """An empty data cache and a mirror folder of our own; torchvision's download fails like a closed network."""
    monkeypatch.setenv("APPROXIFER_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("APPROXIFER_DATA_MIRROR", str(tmp_path / "mirror"))

    def no_network(name, split):
        raise OSError("network is unreachable")

    monkeypatch.setattr(data, "_from_torchvision", no_network)
    return tmp_path


def test_wrong_checksum_is_a_clear_error_and_nothing_is_cached(isolated):
    src = data.REPO_ROOT.parent / "shared" / "data" / "mnist"
    if not src.is_dir():
        pytest.skip("the offline mirror is not beside the checkout")
    dst = isolated / "mirror" / "mnist"
    shutil.copytree(src, dst)
    labels = gzip.decompress((src / "t10k-labels-idx1-ubyte.gz").read_bytes())
    tampered = labels[:8] + bytes([(labels[8] + 1) % 10]) + labels[9:]
    (dst / "t10k-labels-idx1-ubyte.gz").chmod(0o644)
    (dst / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(tampered))
    with pytest.raises(data.DataError, match=r"mnist/test labels from the mirror .* have sha256 .* expected ddeff8"):
        data.load("mnist", "test")
    assert not (isolated / "cache" / "mnist" / "test_y.npy").exists()


def test_missing_source_says_where_it_looked(isolated):
    with pytest.raises(data.DataError) as e:
        data.load("fashion-mnist", "test")
    msg = str(e.value)
    assert "cannot find fashion-mnist/test" in msg and str(isolated / "mirror" / "fashion-mnist") in msg
    assert "torchvision download: OSError: network is unreachable" in msg and "APPROXIFER_DATA_MIRROR" in msg


def test_truncated_source_is_rejected(isolated):
    src = data.REPO_ROOT.parent / "shared" / "data" / "cifar10"
    if not src.is_dir():
        pytest.skip("the offline mirror is not beside the checkout")
    dst = isolated / "mirror" / "cifar10"
    dst.mkdir(parents=True)
    for f in ["test-00.webp", "test-01.webp", "test-labels.txt"]:
        shutil.copy(src / f, dst / f)
    with pytest.raises(data.DataError, match=r"got images \(2000, 32, 32, 3\).*the source is incomplete"):
        data.load("cifar10", "test")


@pytest.fixture
def copied(tmp_path, monkeypatch):
    """A data folder holding a copy of the verified MNIST test split, loaded once (so a later change is caught at
    the next read, not only in a fresh process)."""
    data.load("mnist", "test")
    (tmp_path / "mnist").mkdir()
    for f in ("test_x.npy", "test_y.npy"):
        shutil.copy(data.data_dir() / "mnist" / f, tmp_path / "mnist" / f)
    monkeypatch.setenv("APPROXIFER_DATA", str(tmp_path))
    data.load("mnist", "test")
    return tmp_path / "mnist"


def _edit(path, change):
    a = np.load(path)
    change(a)
    np.save(path, a)


TAMPERED = {
    "a flipped pixel": ("test_x.npy", lambda folder: _edit(folder / "test_x.npy", lambda x: x.flat.__setitem__(
        1000, x.flat[1000] ^ 1)), r"the cached images .*test_x\.npy have sha256 .*: the file was changed"),
    "permuted labels": ("test_y.npy", lambda folder: _edit(folder / "test_y.npy", lambda y: y.__setitem__(
        slice(None), np.roll(y, 1))), r"the cached labels .*test_y\.npy have sha256"),
    "a label of 255": ("test_y.npy", lambda folder: _edit(folder / "test_y.npy", lambda y: y.__setitem__(0, 255)),
                       r"the cached labels .*test_y\.npy hold 0\.\.255, outside 0\.\.9"),
    "a truncated file": ("test_x.npy", lambda folder: (folder / "test_x.npy").write_bytes(
        (folder / "test_x.npy").read_bytes()[:5000]), r"cannot read the cached array .*test_x\.npy \(ValueError"),
    "not an array": ("test_y.npy", lambda folder: (folder / "test_y.npy").write_bytes(b"\x80\x04junk"),
                     r"cannot read the cached array .*test_y\.npy"),
    "an empty file": ("test_y.npy", lambda folder: (folder / "test_y.npy").write_bytes(b""),
                      r"cannot read the cached array .*test_y\.npy \(EOFError"),
    "other labels' dtype": ("test_y.npy", lambda folder: np.save(folder / "test_y.npy", np.zeros(10000, np.uint8)),
                            r"the cached labels .*test_y\.npy are uint8 \(10000,\), expected int64"),
}  # fmt: skip


@pytest.mark.parametrize("how", list(TAMPERED))
def test_a_changed_or_damaged_cache_is_a_data_error_naming_the_file(copied, how):
    _, tamper, match = TAMPERED[how]
    tamper(copied)
    with pytest.raises(data.DataError, match=match):
        data.load("mnist", "test")


def test_prepare_decodes_a_damaged_cache_again(copied):
    if data.mirror_dir() is None:
        pytest.skip("no offline mirror")
    TAMPERED["a flipped pixel"][1](copied)
    data.prepare("mnist", ("test",))
    x, y = data.load("mnist", "test")
    assert (data.sha256(x), data.sha256(y.astype(np.uint8))) == data.info("mnist").sha256["test"]
