"""The named data sets, read into uint8 tensors in memory: MNIST, Fashion-MNIST and torchvision's other small
sets (KMNIST, QMNIST, EMNIST, SVHN, CIFAR-10), read offline from torchvision's layouts or downloaded with it when
asked; the embedded MNIST sample, a folder of the user's images, and a tiny synthetic MNIST for tests.

Each split is held as one uint8 tensor of images, [N, H, W] for grey sets and [N, C, H, W] for colour ones,
and one int64 tensor of labels [N] in 0..len(classes) - 1; `to_float` turns images into the float32
[N, C, H, W] in [0, 1] the models take.

    from data import load_dataset, to_float
    ds = load_dataset("fashion-mnist", "/usr/share/datasets/fashion-mnist")
    x = to_float(ds.train.images)

Datasets, each read from `directory` (DIR), downloaded into it with torchvision when asked:
  "mnist", "fashion-mnist", "kmnist": the four standard IDX files (optionally .gz) in DIR or in torchvision's
      DIR/MNIST/raw/, DIR/FashionMNIST/raw/, DIR/KMNIST/raw/; grey [N, 28, 28].
  "qmnist": qmnist-{train,test}-images-idx3-ubyte and qmnist-{train,test}-labels-idx2-int (int32 IDX whose
      column 0 is the class) in DIR or DIR/QMNIST/raw/; the test split is "test10k" (QMNIST_TEST).
  "emnist": emnist-<split>-{train,test}-{images-idx3,labels-idx1}-ubyte in DIR or DIR/EMNIST/raw/, for
      emnist_split one of EMNIST_SPLITS; turned upright (the files store each image transposed), and the
      letters' labels 1..26 shifted to 0..25.
  "svhn": train_32x32.mat and test_32x32.mat in DIR (scipy reads them); colour [N, 3, 32, 32], label 10 -> 0.
  "cifar10": data_batch_1..5 and test_batch in DIR/cifar-10-batches-py/ or DIR; colour [N, 3, 32, 32].
  "mnist-sample": 5,000 real MNIST digits shipped in assets/mnist_sample/.
  "folder": the PNG/JPEG files of DIR (images.load_folder).
`class_names` gives a set's class names without reading a file. images.py reads the image files themselves.
"""
import math
import pickle
import string
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from download import download_set
from images import (FOLDER, TEST_FRACTION, DataError, Dataset, Split, convert, file_bytes, idx_shape, load_folder,
                    one_line, read_idx, size_pair, write_idx)

DATASETS = ("mnist", "fashion-mnist", "mnist-sample", "folder", "kmnist", "qmnist", "emnist", "svhn", "cifar10")


SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "kmnist": "KMNIST", "qmnist": "QMNIST",
                      "emnist": "EMNIST"}
SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}  # torchvision leaves them in DIR itself
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
COLOUR_SHAPE = (3, 32, 32)  # SVHN's and CIFAR-10's images, channels first
# QMNIST's test file holds 60,000 digits; its first 10,000 ("test10k") are MNIST's test set rebuilt from NIST.
# We keep those: scores compare with MNIST's and the paper's, and evaluate (Parzen, k-NN) on 60,000 is 6x slower.
QMNIST_TEST = 10_000
SAMPLE_DIR = Path(__file__).resolve().parent / "assets" / "mnist_sample"

DIGITS = tuple(string.digits)
CLASSES = {
    "kmnist": ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),  # hiragana, romanised
    "qmnist": DIGITS,
    "svhn": DIGITS,
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}
# torchvision's EMNIST.classes_split_dict, but letters without its "N/A": the files label the letters 1..26
_EMNIST_MERGED = set("cijklmopsuvwxyz")  # lower case letters that bymerge and balanced fold into upper case
EMNIST_CLASSES = {
    "byclass": tuple(sorted(string.digits + string.ascii_letters)),
    "bymerge": tuple(sorted(set(string.digits + string.ascii_letters) - _EMNIST_MERGED)),
    "balanced": tuple(sorted(set(string.digits + string.ascii_letters) - _EMNIST_MERGED)),
    "letters": tuple(string.ascii_lowercase),
    "digits": DIGITS,
    "mnist": DIGITS,
}
EMNIST_SPLITS = tuple(EMNIST_CLASSES)

OFFLINE_OPTIONS = (
    "--dataset mnist-sample (embedded, works offline), or `apt-get install dataset-fashion-mnist` then "
    "--dataset fashion-mnist --directory /usr/share/datasets/fashion-mnist --download False"
)


def load_dataset(name: str, directory, download: bool = False, seed: int = 0,
                 test_fraction: float = TEST_FRACTION, image_size: int = 0, channels: int = 0,
                 emnist_split: str = "balanced") -> Dataset:
    """Load `name` (one of DATASETS) from `directory`, downloading it first if asked and not present.

    seed, test_fraction: which images of a folder without train/ and test/ are held out (load_folder).
    image_size, channels: --image_size and --channels, the size and channels every image is converted to once;
    0 is the set's own (for a folder, images.folder_shape's choice).
    emnist_split: which of EMNIST_SPLITS --dataset emnist reads."""
    class_names(name, emnist_split)  # refuses an unknown name or split before any file is read
    if name == FOLDER:
        return load_folder(directory, seed, test_fraction, image_size, channels)
    return reshaped(_load_named(name, directory, download, emnist_split), image_size, channels)


def reshaped(ds: Dataset, image_size: int = 0, channels: int = 0) -> Dataset:
    """ds with its images converted to --image_size (N, or (H, W)) and `channels` (0: keep its own)."""
    own_channels, height, width = ds.shape
    shape = (channels or own_channels, *(size_pair(image_size) if image_size else (height, width)))
    if shape == ds.shape:
        return ds
    return Dataset(ds.name, Split(convert(ds.train.images, shape), ds.train.labels),
                   Split(convert(ds.test.images, shape), ds.test.labels), ds.classes)


def class_names(name: str, emnist_split: str = "balanced") -> tuple:
    """The class names of a named set, label i being names[i], without reading a file: () for the digit sets
    "mnist", "fashion-mnist" and "mnist-sample" (10 classes, as their Dataset.classes) and for "folder"
    (its subfolders decide); DataError for an unknown name, or an unknown emnist_split with "emnist"."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if name != "emnist":
        return CLASSES.get(name, ())
    if emnist_split not in EMNIST_CLASSES:
        raise DataError(f"unknown EMNIST split {emnist_split!r}; choose one of {', '.join(EMNIST_SPLITS)}")
    return EMNIST_CLASSES[emnist_split]


def _load_named(name: str, directory, download: bool, emnist_split: str = "balanced") -> Dataset:
    """A named data set (not a folder) in its own size and channels."""
    if name == "mnist-sample":
        folder = _locate([SAMPLE_DIR])
        if folder is None:
            raise DataError(f"the embedded MNIST sample is missing from {SAMPLE_DIR}; "
                            "restore assets/mnist_sample/ from the repository")
        return _read_idx_set(name, folder)

    files = _find(name, directory, download, emnist_split)
    if name == "svhn":
        return _read_svhn(files)
    if name == "cifar10":
        return _read_cifar(files)
    return _read_idx_set(name, files, emnist_split)


def _find(name: str, directory, download: bool, emnist_split: str) -> dict:
    """{file name: path} of a named set's files in `directory`, downloaded first if asked and not there."""
    if directory is None:
        raise DataError(f"{name} needs a data folder: pass --directory, or use --dataset mnist-sample")
    directory = Path(directory).expanduser()
    candidates, names, gz = _layout(name, directory, emnist_split)
    files = _locate(candidates, names, gz)
    if files is None and download:
        download_set(name, directory, _download_folder(name), emnist_split, f"; offline options: {OFFLINE_OPTIONS}")
        files = _locate(candidates, names, gz)
    if files is None:
        looked_for = ", ".join(f + ("[.gz]" if gz else "") for f in names)
        searched = " and ".join(str(c) for c in candidates)
        what = f"emnist (split {emnist_split})" if name == "emnist" else name
        raise DataError(f"{what} not found: looked for {looked_for} in {searched}; "
                        f"pass --download True to fetch it, or use {OFFLINE_OPTIONS}")
    return files


def to_float(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W] (grey) or [N, C, H, W] -> float32 [N, C, H, W] in [0, 1]."""
    assert images_uint8.dtype == torch.uint8 and images_uint8.dim() in (3, 4), (images_uint8.dtype, images_uint8.shape)
    images = images_uint8.unsqueeze(1) if images_uint8.dim() == 3 else images_uint8
    return images.to(torch.float32).div_(255)


def translate(images, shifts, pad):
    """images [N, C, H, W] each moved by its own shift (shifts: long [N, 2], rows then columns, each in
    [-pad, pad]), the pixels moved in being zero. No data-dependent shapes: a CUDA graph can replay it."""
    n, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad)).permute(0, 2, 3, 1)  # [N, H + 2 pad, W + 2 pad, C]
    rows = torch.arange(h, device=images.device) + pad - shifts[:, :1]  # [N, H]
    cols = torch.arange(w, device=images.device) + pad - shifts[:, 1:]  # [N, W]
    which = torch.arange(n, device=images.device)[:, None, None]
    return padded[which, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def write_synthetic_idx(directory, n_train: int = 200, n_test: int = 100, seed: int = 0, gz: bool = True) -> Path:
    """Write a tiny learnable fake MNIST (the four standard IDX files) into `directory` and return it.

    Each of the 10 classes is a fixed template of three blurred strokes; every image is its class template
    shifted by up to 2 pixels, scaled in contrast and overlaid with noise. Labels are balanced.
    """
    g = torch.Generator().manual_seed(seed)
    templates = _stroke_templates(g)  # [10, 28, 28] in [0, 1]
    directory = Path(directory)
    suffix = ".gz" if gz else ""
    for split, n in (("train", n_train), ("test", n_test)):
        labels = (torch.arange(n) % 10)[torch.randperm(n, generator=g)]
        images = _jitter(templates[labels], g)
        image_file, label_file = SPLIT_FILES[split]
        write_idx(directory / (image_file + suffix), images)
        write_idx(directory / (label_file + suffix), labels.to(torch.uint8))
    return directory


def _stroke_templates(g: torch.Generator, strokes: int = 3, width: float = 1.2) -> torch.Tensor:
    """10 templates [10, 28, 28] in [0, 1], each the union of `strokes` Gaussian-blurred line segments."""
    ends = 5 + 18 * torch.rand(10, strokes, 2, 2, generator=g)  # [class, stroke, end, (y, x)] inside the centre
    yx = torch.stack(torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij"), -1).view(1, 1, 784, 2)
    a, b = ends[:, :, None, 0], ends[:, :, None, 1]  # [10, strokes, 1, 2]
    t = ((yx - a) * (b - a)).sum(-1) / ((b - a) ** 2).sum(-1).clamp_min(1e-6)
    closest = a + t.clamp(0, 1)[..., None] * (b - a)  # nearest point of each segment to each pixel
    dist2 = ((yx - closest) ** 2).sum(-1)  # [10, strokes, 784]
    ink = torch.exp(-dist2 / (2 * width**2)).amax(1)  # [10, 784]
    return (ink / ink.amax(1, keepdim=True)).view(10, 28, 28)


def _jitter(templates: torch.Tensor, g: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Per-image random shift, contrast and noise: float [N, 28, 28] in [0, 1] -> uint8 [N, 28, 28]."""
    n = templates.shape[0]
    padded = torch.nn.functional.pad(templates, (max_shift,) * 4)  # [N, 32, 32]
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n, 1), generator=g)
    rows = (dy + torch.arange(28))[:, :, None]  # [N, 28, 1]
    cols = (dx + torch.arange(28))[:, None, :]  # [N, 1, 28]
    shifted = padded[torch.arange(n)[:, None, None], rows, cols]  # [N, 28, 28]
    contrast = 0.8 + 0.4 * torch.rand(n, 1, 1, generator=g)
    noisy = shifted * contrast + 0.08 * torch.randn(n, 28, 28, generator=g)
    return (noisy.clamp(0, 1) * 255).round().to(torch.uint8)


def _layout(name: str, directory: Path, emnist_split: str):
    """Where a named set's files may be: (folders to look in, in order; the file names a folder must hold all of;
    whether a .gz copy of a file counts)."""
    if name == "svhn":
        return [directory], list(SVHN_FILES.values()), False
    if name == "cifar10":
        return [directory / CIFAR_FOLDER, directory], [f for files in CIFAR_FILES.values() for f in files], False
    names = [f for pair in _idx_files(name, emnist_split).values() for f in pair]
    return [directory, directory / TORCHVISION_FOLDER[name] / "raw"], names, True


def _idx_files(name: str, emnist_split: str = "balanced") -> dict:
    """{split: (images file, labels file)} of an IDX set, the names without .gz."""
    if name == "qmnist":
        return {s: (f"qmnist-{s}-images-idx3-ubyte", f"qmnist-{s}-labels-idx2-int") for s in ("train", "test")}
    if name == "emnist":
        return {s: (f"emnist-{emnist_split}-{s}-images-idx3-ubyte", f"emnist-{emnist_split}-{s}-labels-idx1-ubyte")
                for s in ("train", "test")}
    return SPLIT_FILES


def _locate(folders, names=tuple(f for pair in SPLIT_FILES.values() for f in pair), gz: bool = True):
    """The first folder holding every one of `names` (or, if gz, its .gz) as {name: path}, else None."""
    for folder in folders:
        # plain first: torchvision leaves both, and the plain file skips decompression
        found = {name: next((p for p in (folder / name, folder / f"{name}.gz")[:1 + gz] if p.is_file()), None)
                 for name in names}
        if all(found.values()):
            return found
    return None


def _read_idx_set(name: str, files, emnist_split: str = "balanced") -> Dataset:
    """An IDX set from {file name: path}: QMNIST's class column and test10k; EMNIST upright, letters from 0."""
    classes = class_names(name, emnist_split)
    first = 1 if name == "emnist" and emnist_split == "letters" else 0  # the letters are 1..26 in the files
    splits = {}
    for split, (image_file, label_file) in _idx_files(name, emnist_split).items():
        images_path, labels_path = files[image_file], files[label_file]
        labels = _qmnist_labels(labels_path) if name == "qmnist" else read_idx(labels_path)
        splits[split] = _checked(read_idx(images_path), labels, images_path, labels_path, (28, 28),
                                 len(classes) or 10, first)
    train, test = splits["train"], splits["test"]
    if name == "emnist":  # stored column by column: each image is transposed (pytorch/vision#8783)
        train, test = (Split(s.images.transpose(1, 2).contiguous(), s.labels) for s in (train, test))
    if name == "qmnist":
        test = Split(test.images[:QMNIST_TEST], test.labels[:QMNIST_TEST])
    return Dataset(name, train, test, classes)


def _checked(images, labels, images_path, labels_path, shape, n_classes: int, first: int = 0) -> Split:
    """A Split of images [N, *shape] and labels [N] in first..first + n_classes - 1 (stored from 0), or DataError
    naming the file at fault."""
    if images.dim() != 1 + len(shape) or tuple(images.shape[1:]) != tuple(shape):
        raise DataError(f"{images_path} holds images of shape {list(images.shape)}, "
                        f"expected [N, {', '.join(map(str, shape))}]; is it an images file?")
    if labels.dim() != 1:
        raise DataError(f"{labels_path} holds shape {list(labels.shape)}, expected labels [N]; "
                        "is it a labels file?")
    if len(images) != len(labels):
        raise DataError(f"{images_path} holds {len(images)} images but {labels_path} holds "
                        f"{len(labels)} labels; the two files must come from the same download")
    if len(images) == 0:  # a header saying 0 images is valid IDX, but there is nothing to train or test on
        raise DataError(f"{images_path} holds no images; delete it and download it again")
    last = first + n_classes - 1
    bad = labels[(labels < first) | (labels > last)]
    if len(bad):
        raise DataError(f"{labels_path} holds label {int(bad[0])}, expected classes {first}..{last}")
    return Split(images, labels.to(torch.int64) - first)


def _qmnist_labels(path) -> torch.Tensor:
    """The classes [N] of a QMNIST labels file: column 0 of its int32 IDX table [N, 8]."""
    table = _read_int_idx(path)
    if table.dim() != 2 or table.shape[1] != 8:
        raise DataError(f"{path} holds shape {list(table.shape)}, expected QMNIST labels [N, 8]; "
                        "is it a labels file?")
    return table[:, 0]


def _read_int_idx(path) -> torch.Tensor:
    """An IDX file of big-endian int32 (type 0x0C; gzip-compressed or plain) as int64, shaped as its header says.
    images.read_idx reads the unsigned-byte ones."""
    path = Path(path)
    raw = file_bytes(path)
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x0c":
        raise DataError(f"{path} is not an IDX file of 32-bit integers (header {raw[:4].hex() or 'empty'}, "
                        "expected 00000c..); delete it and download it again")
    dims, header = idx_shape(path, raw, itemsize=4)
    return torch.from_numpy(np.frombuffer(raw, dtype=">i4", count=math.prod(dims), offset=header)
                            .astype(np.int64).reshape(dims))


def _read_svhn(files) -> Dataset:
    """SVHN from its two .mat files: X [32, 32, 3, N] -> [N, 3, 32, 32]; y [N, 1] in 1..10, 10 being the digit 0."""
    try:
        import scipy.io  # lazy: only SVHN needs it
    except ImportError:
        raise DataError("reading SVHN's .mat files needs scipy: pip install scipy") from None
    splits = {}
    for split, file in SVHN_FILES.items():
        path = files[file]
        try:
            mat = scipy.io.loadmat(path)
            x, y = np.asarray(mat["X"]), np.asarray(mat["y"])
        except Exception as e:  # not a .mat, truncated, or without X and y: scipy raises many kinds
            raise DataError(f"{path} is not a readable SVHN .mat file ({one_line(e)}); "
                            "delete it and download it again") from None
        if x.dtype != np.uint8 or x.ndim != 4:
            raise DataError(f"{path} holds X of {x.dtype} {list(x.shape)}, expected uint8 [32, 32, 3, N]")
        images = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)))  # [N, C, H, W]
        labels = torch.from_numpy(y.astype(np.int64).reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y)
        checked = _checked(images, labels, path, path, COLOUR_SHAPE, 10, first=1)  # labels 0..9 = file's 1..10
        splits[split] = Split(checked.images, (checked.labels + 1) % 10)  # file's 10 -> 0, as torchvision does
    return Dataset("svhn", splits["train"], splits["test"], CLASSES["svhn"])


def _read_cifar(files) -> Dataset:
    """CIFAR-10 from its pickled batches: data uint8 [N, 3072] -> [N, 3, 32, 32], labels 0..9."""
    splits = {}
    for split, names in CIFAR_FILES.items():
        parts = [_cifar_batch(files[name]) for name in names]
        splits[split] = Split(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))
    return Dataset("cifar10", splits["train"], splits["test"], CLASSES["cifar10"])


def _cifar_batch(path) -> Split:
    """One pickled CIFAR-10 batch (a dict with b"data" and b"labels"), unpickled with nothing but numpy arrays
    allowed in it: a file found in a folder must not run code."""
    try:
        with open(path, "rb") as f:
            batch = _ArraysOnly(f, encoding="bytes").load()
        data, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"])
    except Exception as e:  # truncated, not a pickle, other objects, missing keys: many kinds
        raise DataError(f"{path} is not a readable CIFAR-10 batch ({one_line(e)}); "
                        "delete it and download it again") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != math.prod(COLOUR_SHAPE):
        raise DataError(f"{path} holds data of {data.dtype} {list(data.shape)}, expected uint8 [N, 3072]")
    if labels.dtype.kind not in "iu":
        raise DataError(f"{path} holds labels of {labels.dtype}, expected whole numbers 0..9")
    images = torch.from_numpy(data.reshape(-1, *COLOUR_SHAPE).copy())  # rows are R, then G, then B planes
    return _checked(images, torch.from_numpy(labels.astype(np.int64)), path, path, COLOUR_SHAPE, 10)


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that builds numpy arrays and plain Python values, and refuses every other global."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        """The allowed globals only; pickle.UnpicklingError for anything else."""
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name} (only numpy arrays are expected)")
        return super().find_class(module, name)


def _download_folder(name: str) -> str:
    """Where under DIR torchvision leaves a set's files, and load_dataset reads them."""
    if name == "svhn":
        return "."
    if name == "cifar10":
        return CIFAR_FOLDER
    return f"{TORCHVISION_FOLDER[name]}/raw"
