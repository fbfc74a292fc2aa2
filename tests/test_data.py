"""Tests for data.py: IDX round trips, dataset layouts, the embedded sample, and every user-facing data error.

    .venv/bin/python -m pytest tests/test_data.py -q
"""
import gzip
import sys
import types
import urllib.error
from pathlib import Path

import pytest
import torch

import data
from helpers import files_under, raises_one_line

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
TRAIN_IMAGES, TRAIN_LABELS = data.SPLIT_FILES["train"]
TEST_IMAGES, TEST_LABELS = data.SPLIT_FILES["test"]


# --- IDX files -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".gz", ""])
def test_idx_round_trip(tmp_path, suffix):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (5,), dtype=torch.uint8, generator=g)
    for name, tensor in (("images", images), ("labels", labels)):
        path = tmp_path / f"{name}{suffix}"
        data.write_idx(path, tensor)
        assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
        back = data.read_idx(path)
        assert back.dtype == torch.uint8 and torch.equal(back, tensor)
    assert files_under(tmp_path) == sorted(Path(f"{n}{suffix}") for n in ("images", "labels"))  # no temp files


def test_write_idx_replaces_existing_file(tmp_path):
    path = tmp_path / "x.gz"
    data.write_idx(path, torch.zeros(3, dtype=torch.uint8))
    data.write_idx(path, torch.arange(7, dtype=torch.uint8))
    assert torch.equal(data.read_idx(path), torch.arange(7, dtype=torch.uint8))
    assert files_under(tmp_path) == [Path("x.gz")]


# --- loading ---------------------------------------------------------------------------------------------------

def test_load_flat_folder(tmp_path):
    data.write_synthetic_idx(tmp_path, n_train=200, n_test=100)
    ds = data.load_dataset("mnist", tmp_path)
    assert ds.name == "mnist"
    assert ds.train.images.shape == (200, 28, 28) and ds.test.images.shape == (100, 28, 28)
    assert ds.train.images.dtype == torch.uint8 and ds.train.labels.dtype == torch.int64
    assert torch.bincount(ds.train.labels).tolist() == [20] * 10
    assert torch.bincount(ds.test.labels).tolist() == [10] * 10


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_load_torchvision_layout(tmp_path, name, folder):
    raw = data.write_synthetic_idx(tmp_path / folder / "raw", n_train=30, n_test=20, gz=False)
    assert not any(p.suffix == ".gz" for p in raw.iterdir())
    ds = data.load_dataset(name, tmp_path)
    assert len(ds.train.labels) == 30 and len(ds.test.labels) == 20


def test_prefers_the_location_with_all_four_files(tmp_path):
    data.write_synthetic_idx(tmp_path / "MNIST" / "raw", n_train=30, n_test=20)
    data.write_idx(tmp_path / TRAIN_IMAGES, torch.zeros(5, 28, 28, dtype=torch.uint8))  # a stray, incomplete set
    assert len(data.load_dataset("mnist", tmp_path).train.images) == 30


def test_synthetic_is_seeded_and_learnable(tmp_path):
    a = data.load_dataset("mnist", data.write_synthetic_idx(tmp_path / "a", seed=3))
    b = data.load_dataset("mnist", data.write_synthetic_idx(tmp_path / "b", seed=3))
    c = data.load_dataset("mnist", data.write_synthetic_idx(tmp_path / "c", seed=4))
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert not torch.equal(a.train.images, c.train.images)
    assert a.train.images.min() == 0 and a.train.images.max() == 255
    # nearest class mean must separate the classes: the set is meant for tests that need a learnable signal
    x_train, x_test = data.to_float(a.train.images).flatten(1), data.to_float(a.test.images).flatten(1)
    means = torch.stack([x_train[a.train.labels == k].mean(0) for k in range(10)])
    accuracy = (torch.cdist(x_test, means).argmin(1) == a.test.labels).float().mean()
    assert accuracy > 0.9


def test_mnist_sample_is_embedded_and_stratified(tmp_path):
    ds = data.load_dataset("mnist-sample", tmp_path / "does-not-exist")
    assert ds.train.images.shape == (4000, 28, 28) and ds.test.images.shape == (1000, 28, 28)
    assert ds.train.images.dtype == torch.uint8 and ds.train.labels.dtype == torch.int64
    assert torch.bincount(ds.train.labels).tolist() == [400] * 10
    assert torch.bincount(ds.test.labels).tolist() == [100] * 10
    assert ds.train.images.min() == 0 and ds.train.images.max() == 255
    assert not (tmp_path / "does-not-exist").exists()


def test_to_float_range_and_shape():
    images = torch.tensor([[0, 128], [255, 1]], dtype=torch.uint8).repeat(3, 14, 14)  # [3, 28, 28]
    x = data.to_float(images)
    assert x.shape == (3, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() == 0 and x.max() == 1 and torch.allclose(x[0, 0, 0, 1], torch.tensor(128 / 255))


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="needs `apt-get install dataset-fashion-mnist`")
def test_real_fashion_mnist():
    ds = data.load_dataset("fashion-mnist", FASHION_DIR)
    assert ds.train.images.shape == (60000, 28, 28) and ds.test.images.shape == (10000, 28, 28)
    assert torch.bincount(ds.train.labels).tolist() == [6000] * 10
    assert torch.bincount(ds.test.labels).tolist() == [1000] * 10


# --- user errors -----------------------------------------------------------------------------------------------

def test_unknown_dataset(tmp_path):
    raises_one_line(["cifar", "mnist-sample"], lambda: data.load_dataset("cifar", tmp_path))


def test_no_directory():
    raises_one_line(["--directory", "mnist-sample"], lambda: data.load_dataset("mnist", None))


def test_missing_files(tmp_path):
    raises_one_line([tmp_path, Path("MNIST/raw"), TRAIN_IMAGES, "--download True", "mnist-sample"],
                    lambda: data.load_dataset("mnist", tmp_path))


def test_missing_one_file(tmp_path):
    data.write_synthetic_idx(tmp_path)
    (tmp_path / f"{TEST_LABELS}.gz").unlink()
    raises_one_line([tmp_path, TEST_LABELS], lambda: data.load_dataset("mnist", tmp_path))


def test_truncated_gz(tmp_path):
    path = data.write_synthetic_idx(tmp_path) / f"{TRAIN_IMAGES}.gz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    raises_one_line([path, "truncated"], lambda: data.load_dataset("mnist", tmp_path))


def test_truncated_plain(tmp_path):
    path = data.write_synthetic_idx(tmp_path, gz=False) / TRAIN_IMAGES
    path.write_bytes(path.read_bytes()[:-100])
    raises_one_line([path, "truncated"], lambda: data.load_dataset("mnist", tmp_path))


@pytest.mark.parametrize("gz", [True, False])
def test_corrupt_file(tmp_path, gz):
    path = data.write_synthetic_idx(tmp_path, gz=gz) / (TEST_IMAGES + (".gz" if gz else ""))
    path.write_bytes(torch.randint(1, 256, (5000,), dtype=torch.uint8).numpy().tobytes())  # first byte never 0
    raises_one_line([path], lambda: data.load_dataset("mnist", tmp_path))


def test_corrupt_gzip_stream(tmp_path):
    path = data.write_synthetic_idx(tmp_path) / f"{TRAIN_LABELS}.gz"
    raw = bytearray(path.read_bytes())
    raw[10:-8] = bytes(len(raw) - 18)  # keep the gzip header and trailer, zero the deflate stream
    path.write_bytes(bytes(raw))
    raises_one_line([path], lambda: data.load_dataset("mnist", tmp_path))


def test_bad_magic(tmp_path):
    path = data.write_synthetic_idx(tmp_path) / f"{TRAIN_LABELS}.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[0] = 0x08
    path.write_bytes(gzip.compress(bytes(raw)))
    raises_one_line([path, "magic"], lambda: data.load_dataset("mnist", tmp_path))


def test_wrong_type_code(tmp_path):
    path = data.write_synthetic_idx(tmp_path, gz=False) / TRAIN_LABELS
    raw = bytearray(path.read_bytes())
    raw[2] = 0x0D  # float
    path.write_bytes(bytes(raw))
    raises_one_line([path, "0x0d"], lambda: data.load_dataset("mnist", tmp_path))


def test_wrong_image_dims(tmp_path):
    data.write_synthetic_idx(tmp_path, n_train=20, n_test=10)
    path = tmp_path / f"{TRAIN_IMAGES}.gz"
    data.write_idx(path, torch.zeros(20, 32, 32, dtype=torch.uint8))
    raises_one_line([path, "[20, 32, 32]"], lambda: data.load_dataset("mnist", tmp_path))


def test_labels_file_with_image_dims(tmp_path):
    data.write_synthetic_idx(tmp_path, n_train=20, n_test=10)
    path = tmp_path / f"{TEST_LABELS}.gz"
    data.write_idx(path, torch.zeros(10, 28, 28, dtype=torch.uint8))
    raises_one_line([path], lambda: data.load_dataset("mnist", tmp_path))


def test_image_label_count_mismatch(tmp_path):
    data.write_synthetic_idx(tmp_path, n_train=20, n_test=10)
    data.write_idx(tmp_path / f"{TEST_LABELS}.gz", torch.zeros(9, dtype=torch.uint8))
    raises_one_line([tmp_path / f"{TEST_IMAGES}.gz", tmp_path / f"{TEST_LABELS}.gz", "10 images", "9 labels"],
                    lambda: data.load_dataset("mnist", tmp_path))


def test_labels_out_of_range(tmp_path):
    data.write_synthetic_idx(tmp_path, n_train=20, n_test=10)
    path = tmp_path / f"{TRAIN_LABELS}.gz"
    data.write_idx(path, torch.full((20,), 10, dtype=torch.uint8))
    raises_one_line([path, "label 10"], lambda: data.load_dataset("mnist", tmp_path))


# --- download --------------------------------------------------------------------------------------------------

def fake_torchvision(monkeypatch, on_download):
    """Install a stand-in torchvision whose MNIST/FashionMNIST(root, train, download) calls on_download(raw)."""
    def make(class_name):
        def init(self, root, train=True, download=False):
            raw = Path(root) / class_name / "raw"
            raw.mkdir(parents=True, exist_ok=True)
            on_download(raw)
        return type(class_name, (), {"__init__": init})

    module = types.ModuleType("torchvision")
    module.datasets = types.SimpleNamespace(MNIST=make("MNIST"), FashionMNIST=make("FashionMNIST"))
    monkeypatch.setitem(sys.modules, "torchvision", module)


@pytest.mark.parametrize("error", [
    urllib.error.HTTPError("https://example.invalid/x.gz", 403, "Forbidden", None, None),
    urllib.error.URLError("[Errno -2] Name or service not known"),
    RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://a, got:\n<urlopen error>\n"),
    TimeoutError("timed out"),
])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_failed_download_leaves_nothing_behind(tmp_path, monkeypatch, name, error):
    def partial_then_fail(raw):
        (raw / f"{TRAIN_IMAGES}.gz").write_bytes(b"\x1f\x8b\x08\x00partial")
        data.write_synthetic_idx(raw, n_train=10, n_test=10, gz=False)  # even a complete-looking set must not leak
        raise error

    fake_torchvision(monkeypatch, partial_then_fail)
    raises_one_line(["download", "failed", type(error).__name__, "--dataset mnist-sample",
                     "--dataset fashion-mnist --directory /usr/share/datasets/fashion-mnist --download False",
                     "apt-get install dataset-fashion-mnist"],
                    lambda: data.load_dataset(name, tmp_path, download=True))
    assert files_under(tmp_path) == []
    raises_one_line(["not found", "--download True"], lambda: data.load_dataset(name, tmp_path))


def test_download_moves_files_into_torchvision_layout(tmp_path, monkeypatch):
    fake_torchvision(monkeypatch, lambda raw: data.write_synthetic_idx(raw, n_train=30, n_test=20))
    ds = data.load_dataset("fashion-mnist", tmp_path, download=True)
    assert len(ds.train.images) == 30 and len(ds.test.images) == 20
    assert [p.name for p in tmp_path.iterdir()] == ["FashionMNIST"]  # temporary folder gone
    assert len(files_under(tmp_path / "FashionMNIST" / "raw")) == 4


def test_download_skipped_when_files_present(tmp_path, monkeypatch):
    def must_not_download(raw):
        raise AssertionError("downloaded although the files were present")

    fake_torchvision(monkeypatch, must_not_download)
    data.write_synthetic_idx(tmp_path, n_train=30, n_test=20)
    assert len(data.load_dataset("mnist", tmp_path, download=True).train.images) == 30


def test_failed_download_with_real_torchvision(tmp_path, monkeypatch):
    """The real MNIST class, its mirror loop and its RuntimeError, with the network replaced by a 403."""
    mnist = pytest.importorskip("torchvision.datasets.mnist")
    urls = []

    def forbidden(url, download_root, filename=None, md5=None, **kwargs):
        urls.append(url)
        Path(download_root, filename).write_bytes(b"partial")
        raise urllib.error.HTTPError(url, 403, "Forbidden", None, None)

    monkeypatch.setattr(mnist, "download_and_extract_archive", forbidden)
    raises_one_line(["downloading mnist", "403", "mnist-sample", "fashion-mnist"],
                    lambda: data.load_dataset("mnist", tmp_path, download=True))
    assert len(urls) == len(mnist.MNIST.mirrors)
    assert files_under(tmp_path) == []
