"""Tests for data.py's torchvision sets (KMNIST, QMNIST, EMNIST, SVHN, CIFAR-10): tiny files written in each
set's own layout, read back; their user errors; and downloads through a stand-in torchvision (no network).

    .venv/bin/python -m pytest tests/test_vision_sets.py -q
"""
import gzip
import os
import pickle
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

import data
from helpers import files_under, raises_one_line
import utils

N_TRAIN, N_TEST = 6, 4
EMNIST_SIZES = {"byclass": 62, "bymerge": 47, "balanced": 47, "letters": 26, "digits": 10, "mnist": 10}


def random_images(n, shape, seed):
    return torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def write_int_idx(path: Path, table: np.ndarray, gz: bool = False) -> None:
    """An IDX file of big-endian int32 (type 0x0C), as QMNIST's labels are stored."""
    payload = struct.pack(f">BBBB{table.ndim}I", 0, 0, 0x0C, table.ndim, *table.shape) + table.astype(">i4").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if gz else payload)


def write_idx_set(folder: Path, name: str, split: str = "balanced", gz: bool = False) -> dict:
    """A tiny IDX set of `name` in `folder`; returns {split: (images as stored, labels as stored)}."""
    n_classes = len(data.class_names(name, split)) or 10
    first = 1 if (name, split) == ("emnist", "letters") else 0
    written = {}
    for i, (which, (image_file, label_file)) in enumerate(data._idx_files(name, split).items()):
        n = (N_TRAIN, N_TEST)[i]
        images = random_images(n, (28, 28), seed=i)
        labels = first + torch.arange(n) % n_classes
        suffix = ".gz" if gz else ""
        data.write_idx(folder / (image_file + suffix), images)
        if name == "qmnist":  # column 0 the class, the others QMNIST's extra information
            table = np.concatenate([labels.numpy()[:, None], np.full((n, 7), 123456)], axis=1)
            write_int_idx(folder / (label_file + suffix), table, gz)
        else:
            data.write_idx(folder / (label_file + suffix), labels.to(torch.uint8))
        written[which] = images, labels
    return written


def write_svhn(folder: Path, labels=(1, 10, 5, 10)) -> dict:
    """train_32x32.mat and test_32x32.mat as SVHN stores them: X [32, 32, 3, N] uint8, y [N, 1] in 1..10."""
    written = {}
    for i, which in enumerate(("train", "test")):
        x = random_images(len(labels), (32, 32, 3), seed=i).permute(1, 2, 3, 0).numpy()
        y = np.array(labels, dtype=np.uint8)[:, None]
        folder.mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(folder / data.SVHN_FILES[which], {"X": x, "y": y})
        written[which] = x, y
    return written


def write_cifar(folder: Path, n: int = 3) -> dict:
    """data_batch_1..5 and test_batch as CIFAR-10 pickles them: b"data" uint8 [N, 3072], b"labels" a list."""
    written = {}
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(f for files in data.CIFAR_FILES.values() for f in files):
        batch = {b"data": random_images(n, (3072,), seed=i).numpy(), b"labels": [(i + k) % 10 for k in range(n)],
                 b"batch_label": b"batch"}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        written[name] = batch
    return written


# --- reading each layout ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name, folder", [("kmnist", "KMNIST"), ("qmnist", "QMNIST")])
def test_grey_sets_in_torchvision_layout(tmp_path, name, folder, gz):
    written = write_idx_set(tmp_path / folder / "raw", name, gz=gz)
    ds = data.load_dataset(name, tmp_path)
    assert ds.name == name and ds.classes == data.class_names(name) and len(ds.classes) == 10
    for which, split in (("train", ds.train), ("test", ds.test)):
        images, labels = written[which]
        assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
        assert torch.equal(split.images, images) and torch.equal(split.labels, labels)  # QMNIST: column 0


def test_kmnist_classes_are_romanised_hiragana():
    assert data.class_names("kmnist") == ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")


def test_qmnist_files_directly_in_directory_and_test10k(tmp_path, monkeypatch):
    written = write_idx_set(tmp_path, "qmnist")
    monkeypatch.setattr(data, "QMNIST_TEST", 3)  # the real file holds 60,000; its first 10,000 are kept
    ds = data.load_dataset("qmnist", tmp_path)
    assert len(ds.train.images) == N_TRAIN
    assert torch.equal(ds.test.images, written["test"][0][:3]) and torch.equal(ds.test.labels, written["test"][1][:3])


@pytest.mark.parametrize("split", sorted(EMNIST_SIZES))
def test_emnist_classes_per_split_match_torchvision(split):
    emnist = pytest.importorskip("torchvision.datasets").EMNIST
    names = data.class_names("emnist", split)
    assert len(names) == EMNIST_SIZES[split]
    theirs = emnist.classes_split_dict[split]
    assert list(names) == (theirs[1:] if split == "letters" else theirs)  # letters: without their unused "N/A"


def test_emnist_is_turned_upright_and_its_letters_start_at_0(tmp_path):
    raw = tmp_path / "EMNIST" / "raw"
    write_idx_set(raw, "emnist", "letters")
    image_file, label_file = data._idx_files("emnist", "letters")["train"]
    stored = torch.zeros(2, 28, 28, dtype=torch.uint8)
    stored[0, 3, 20] = 255  # row 3, column 20 as the file stores it
    data.write_idx(raw / image_file, stored)
    data.write_idx(raw / label_file, torch.tensor([1, 26], dtype=torch.uint8))  # "a" and "z"
    ds = data.load_dataset("emnist", tmp_path, emnist_split="letters")
    assert ds.train.images[0, 20, 3] == 255 and int(ds.train.images.sum()) == 255  # at row 20, column 3
    assert ds.train.labels.tolist() == [0, 25] and ds.classes[0] == "a" and ds.classes[25] == "z"
    assert int(ds.test.labels.min()) >= 0 and int(ds.test.labels.max()) <= 25


@pytest.mark.parametrize("split", sorted(EMNIST_SIZES))
def test_emnist_every_split_reads_its_own_files(tmp_path, split):
    written = write_idx_set(tmp_path, "emnist", split, gz=True)
    ds = data.load_dataset("emnist", tmp_path, emnist_split=split)
    assert len(ds.classes) == EMNIST_SIZES[split]
    assert torch.equal(ds.train.images, written["train"][0].transpose(1, 2))
    shift = 1 if split == "letters" else 0
    assert torch.equal(ds.test.labels, written["test"][1] - shift)


def test_svhn(tmp_path):
    written = write_svhn(tmp_path)
    ds = data.load_dataset("svhn", tmp_path)
    assert ds.classes == tuple("0123456789")
    for which, split in (("train", ds.train), ("test", ds.test)):
        x, _ = written[which]
        assert split.images.shape == (4, 3, 32, 32) and split.images.dtype == torch.uint8
        assert split.images[2, 1, 5, 7] == x[5, 7, 1, 2]  # X[row, column, channel, image]
        assert split.labels.dtype == torch.int64 and split.labels.tolist() == [1, 0, 5, 0]  # 10 is the digit 0


@pytest.mark.parametrize("inside", [data.CIFAR_FOLDER, "."])
def test_cifar10(tmp_path, inside):
    written = write_cifar(tmp_path / inside)
    ds = data.load_dataset("cifar10", tmp_path)
    assert ds.classes[0] == "airplane" and ds.classes[9] == "truck" and len(ds.classes) == 10
    assert ds.train.images.shape == (15, 3, 32, 32) and ds.test.images.shape == (3, 3, 32, 32)
    assert ds.train.images.dtype == torch.uint8 and ds.train.labels.dtype == torch.int64
    row = written["data_batch_2"][b"data"][1]  # red plane, then green, then blue, each row by row
    assert ds.train.images[4, 1, 2, 3] == row[1024 + 2 * 32 + 3]
    assert ds.train.labels[3:6].tolist() == written["data_batch_2"][b"labels"]
    assert ds.test.labels.tolist() == written["test_batch"][b"labels"]


def test_class_names_need_no_files():
    for name in ("mnist", "fashion-mnist", "mnist-sample", "folder"):
        assert data.class_names(name) == ()  # the caller takes () as 10 digits (or the folder's own subfolders)
    assert len(data.class_names("cifar10")) == len(data.class_names("svhn")) == len(data.class_names("qmnist")) == 10
    assert data.class_names("mnist-sample") == data.load_dataset("mnist-sample", None).classes


# --- user errors -----------------------------------------------------------------------------------------------

def test_unknown_names():
    raises_one_line(["'cifar100'", "cifar10", "emnist"], lambda: data.class_names("cifar100"))
    raises_one_line(["'capitals'", "balanced", "letters"], lambda: data.class_names("emnist", "capitals"))
    raises_one_line(["'capitals'"], lambda: data.load_dataset("emnist", None, emnist_split="capitals"))


@pytest.mark.parametrize("name, looked_for, where", [
    ("kmnist", "train-images-idx3-ubyte[.gz]", "KMNIST/raw"),
    ("qmnist", "qmnist-test-labels-idx2-int[.gz]", "QMNIST/raw"),
    ("emnist", "emnist-digits-train-images-idx3-ubyte[.gz]", "EMNIST/raw"),
    ("svhn", "test_32x32.mat", ""),
    ("cifar10", "data_batch_5", data.CIFAR_FOLDER),
])
def test_missing_files(tmp_path, name, looked_for, where):
    write_idx_set(tmp_path / "EMNIST" / "raw", "emnist", "balanced")  # another split's files do not do
    message = raises_one_line([f"{name}", "not found", looked_for, tmp_path / where, "--download True"],
                              lambda: data.load_dataset(name, tmp_path, emnist_split="digits"))
    assert name != "emnist" or "split digits" in message


def test_one_missing_file(tmp_path):
    write_cifar(tmp_path / data.CIFAR_FOLDER)
    (tmp_path / data.CIFAR_FOLDER / "test_batch").unlink()
    raises_one_line(["test_batch", tmp_path / data.CIFAR_FOLDER], lambda: data.load_dataset("cifar10", tmp_path))


def qmnist_labels(tmp_path):
    write_idx_set(tmp_path, "qmnist")
    return tmp_path / data._idx_files("qmnist")["train"][1]


@pytest.mark.parametrize("spoil, expect", [
    (lambda raw: raw[:-5], "truncated"),
    (lambda raw: raw[:10], "bad IDX header"),
    (lambda raw: b"\x00\x00\x08" + raw[3:], "not an IDX file of 32-bit integers"),
    (lambda raw: b"", "empty"),
    (lambda raw: gzip.compress(raw)[:30], "not valid gzip"),
])
def test_corrupt_qmnist_labels(tmp_path, spoil, expect):
    path = qmnist_labels(tmp_path)
    path.write_bytes(spoil(path.read_bytes()))
    raises_one_line([path, expect], lambda: data.load_dataset("qmnist", tmp_path))


def test_qmnist_labels_of_the_wrong_shape(tmp_path):
    path = qmnist_labels(tmp_path)
    write_int_idx(path, np.zeros(N_TRAIN, dtype=np.int32))
    raises_one_line([path, "[6]", "[N, 8]"], lambda: data.load_dataset("qmnist", tmp_path))


def test_labels_out_of_range(tmp_path):
    write_idx_set(tmp_path, "emnist", "letters")
    path = tmp_path / data._idx_files("emnist", "letters")["test"][1]
    data.write_idx(path, torch.tensor([1, 2, 0, 3], dtype=torch.uint8))  # 0 is no letter
    raises_one_line([path, "label 0", "1..26"], lambda: data.load_dataset("emnist", tmp_path, emnist_split="letters"))
    write_svhn(tmp_path, labels=(1, 2, 11, 3))
    raises_one_line([tmp_path / "train_32x32.mat", "label 11", "1..10"], lambda: data.load_dataset("svhn", tmp_path))


@pytest.mark.parametrize("spoil", [lambda raw: raw[: len(raw) // 2], lambda raw: b"MATLAB 5.0 not really" * 10])
def test_corrupt_svhn(tmp_path, spoil):
    write_svhn(tmp_path)
    path = tmp_path / "test_32x32.mat"
    path.write_bytes(spoil(path.read_bytes()))
    raises_one_line([path, "delete it and download it again"], lambda: data.load_dataset("svhn", tmp_path))


def test_svhn_of_the_wrong_kind(tmp_path):
    write_svhn(tmp_path)
    path = tmp_path / "train_32x32.mat"
    scipy.io.savemat(path, {"X": np.zeros((32, 32, 3, 2), dtype=np.float64), "y": np.ones((2, 1))})
    raises_one_line([path, "float64", "uint8 [32, 32, 3, N]"], lambda: data.load_dataset("svhn", tmp_path))
    scipy.io.savemat(path, {"images": np.zeros(3)})
    raises_one_line([path, "KeyError"], lambda: data.load_dataset("svhn", tmp_path))


def test_svhn_without_scipy(tmp_path, monkeypatch):
    write_svhn(tmp_path)
    monkeypatch.setitem(sys.modules, "scipy.io", None)  # `import scipy.io` now raises ImportError
    raises_one_line(["pip install scipy"], lambda: data.load_dataset("svhn", tmp_path))


@pytest.mark.parametrize("spoil", [lambda raw: raw[:-20], lambda raw: b"not a pickle at all",
                                   lambda raw: pickle.dumps({b"labels": [0]})])
def test_corrupt_cifar(tmp_path, spoil):
    write_cifar(tmp_path)
    path = tmp_path / "data_batch_3"
    path.write_bytes(spoil(path.read_bytes()))
    raises_one_line([path, "not a readable CIFAR-10 batch"], lambda: data.load_dataset("cifar10", tmp_path))


class _RunsCode:
    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_cifar_pickle_cannot_run_code(tmp_path):
    write_cifar(tmp_path)
    payload = _RunsCode()
    payload.target = str(tmp_path / "made-by-the-pickle")
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": payload, b"labels": [0]}))
    raises_one_line([tmp_path / "test_batch", "refusing"], lambda: data.load_dataset("cifar10", tmp_path))
    assert not (tmp_path / "made-by-the-pickle").exists()


def test_cifar_of_the_wrong_kind(tmp_path):
    write_cifar(tmp_path)
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 1024), dtype=np.uint8), b"labels": [0, 1]}))
    raises_one_line([path, "[2, 1024]", "uint8 [N, 3072]"], lambda: data.load_dataset("cifar10", tmp_path))
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": [0]}))
    raises_one_line([path, "2 images", "1 labels"], lambda: data.load_dataset("cifar10", tmp_path))
    path.write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), dtype=np.uint8), b"labels": [10]}))
    raises_one_line([path, "label 10", "0..9"], lambda: data.load_dataset("cifar10", tmp_path))


# --- download --------------------------------------------------------------------------------------------------

WRITERS = {  # what each stand-in torchvision class leaves under its root, as the real one does
    "KMNIST": lambda root, kw: write_idx_set(root / "KMNIST" / "raw", "kmnist", gz=True),
    "QMNIST": lambda root, kw: write_idx_set(root / "QMNIST" / "raw", "qmnist"),
    "EMNIST": lambda root, kw: [write_idx_set(root / "EMNIST" / "raw", "emnist", s) for s in EMNIST_SIZES]
    and (root / "EMNIST" / "raw" / "gzip.zip").write_bytes(b"the archive"),
    "SVHN": lambda root, kw: write_svhn(root),
    "CIFAR10": lambda root, kw: write_cifar(root / data.CIFAR_FOLDER)
    and (root / "cifar-10-python.tar.gz").write_bytes(b"the archive"),
}


def fake_torchvision(monkeypatch, on_download):
    """A stand-in torchvision whose dataset classes call on_download(class name, Path(root), keyword arguments)."""
    calls = []

    def make(class_name):
        def init(self, root, download=False, **kwargs):
            assert download
            calls.append((class_name, kwargs))
            on_download(class_name, Path(root), kwargs)
        return type(class_name, (), {"__init__": init})

    module = types.ModuleType("torchvision")
    module.datasets = types.SimpleNamespace(**{name: make(name) for name in WRITERS})
    monkeypatch.setitem(sys.modules, "torchvision", module)
    return calls


@pytest.mark.parametrize("name, expect_files, expect_calls", [
    ("kmnist", [f"KMNIST/raw/{f}.gz" for f in sorted(f for p in data.SPLIT_FILES.values() for f in p)],
     [("KMNIST", {"train": True})]),
    ("qmnist", [f"QMNIST/raw/qmnist-{s}-{k}" for s in ("test", "train") for k in ("images-idx3-ubyte",
                                                                                  "labels-idx2-int")],
     [("QMNIST", {"train": True}), ("QMNIST", {"train": False})]),
    ("svhn", ["test_32x32.mat", "train_32x32.mat"], [("SVHN", {"split": "train"}), ("SVHN", {"split": "test"})]),
    ("cifar10", sorted(f"{data.CIFAR_FOLDER}/{f}" for files in data.CIFAR_FILES.values() for f in files),
     [("CIFAR10", {"train": True})]),
])
def test_download_moves_files_into_the_layout(tmp_path, monkeypatch, name, expect_files, expect_calls):
    calls = fake_torchvision(monkeypatch, lambda class_name, root, kw: WRITERS[class_name](root, kw))
    ds = data.load_dataset(name, tmp_path, download=True)
    assert len(ds.train.images) > 0 and len(ds.test.images) > 0
    assert calls[: len(expect_calls)] == expect_calls
    assert files_under(tmp_path) == [Path(f) for f in expect_files]  # archives dropped, temporary folder gone
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    fake_torchvision(monkeypatch, lambda *a: pytest.fail("downloaded although the files were present"))
    assert torch.equal(data.load_dataset(name, tmp_path, download=True).test.labels, ds.test.labels)


def test_download_emnist_keeps_every_split_and_drops_the_zip(tmp_path, monkeypatch):
    calls = fake_torchvision(monkeypatch, lambda class_name, root, kw: WRITERS[class_name](root, kw))
    ds = data.load_dataset("emnist", tmp_path, download=True, emnist_split="letters")
    assert calls == [("EMNIST", {"train": True, "split": "letters"})]
    assert len(ds.classes) == 26
    assert len(files_under(tmp_path)) == 4 * len(EMNIST_SIZES)
    assert not (tmp_path / "EMNIST" / "raw" / "gzip.zip").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("name", ["kmnist", "qmnist", "emnist", "svhn", "cifar10"])
def test_failed_download_leaves_nothing_behind(tmp_path, monkeypatch, name):
    def partial_then_fail(class_name, root, kw):
        WRITERS[class_name](root, kw)  # even a complete-looking set must not leak
        raise RuntimeError("Error downloading the archive:\nconnection reset\n")

    fake_torchvision(monkeypatch, partial_then_fail)
    raises_one_line([f"downloading {name} into {tmp_path} failed", "RuntimeError", "connection reset"],
                    lambda: data.load_dataset(name, tmp_path, download=True))
    assert files_under(tmp_path) == []
    raises_one_line(["not found", "--download True"], lambda: data.load_dataset(name, tmp_path))


# --- through the command line --------------------------------------------------------------------------------

TINY = ["--latent_dim", "2", "--epochs", "1", "--batch_size", "4", "--threads", "1"]


def test_emnist_letters_sizes_the_networks_to_26_classes_and_its_split_is_kept(tmp_path, cli):
    write_idx_set(tmp_path / "EMNIST" / "raw", "emnist", "letters")
    weights = tmp_path / "w"
    code, out, err = cli(["--dataset", "emnist", "--emnist_split", "letters", "--directory", tmp_path, "--weights",
                          weights, "--mode", "semi_supervised", "--labels", "-1", *TINY])
    assert code == 0, err
    model = utils.load_models(weights)
    assert model.model_cfg.n_classes == 26 and model.train_cfg.emnist_split == "letters"
    code, out, err = cli(["evaluate", "--weights", weights, "--threads", "1", "--baselines", "False"])
    assert code == 0, err  # reads the letters split again, from the checkpoint
    code, out, err = cli(["--weights", weights, "--resume", "--emnist_split", "digits", "--epochs", "2"])
    assert code == 2 and "--emnist_split digits (checkpoint: letters)" in err


def test_cifar10_trains_in_colour_or_converted_by_the_flags(tmp_path, cli):
    write_cifar(tmp_path / data.CIFAR_FOLDER)
    code, out, err = cli(["--dataset", "cifar10", "--directory", tmp_path, "--weights", tmp_path / "rgb", *TINY])
    assert code == 0, err
    assert "cifar10 (15 train / 3 test images, RGB 32x32)" in out
    code, out, err = cli(["--dataset", "cifar10", "--directory", tmp_path, "--weights", tmp_path / "grey",
                          "--channels", "1", "--image_size", "16", *TINY])
    assert code == 0, err
    assert tuple(utils.load_models(tmp_path / "grey").model_cfg.image_shape) == (1, 16, 16)


def test_emnist_split_is_refused_for_another_set(tmp_path, cli):
    code, out, err = cli(["--dataset", "mnist-sample", "--emnist_split", "letters", "--weights", tmp_path / "w"])
    assert code == 2 and "--emnist_split chooses which EMNIST" in err and not (tmp_path / "w").exists()
