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
import os
import socket
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from images import (FOLDER, TEST_FRACTION, DataError, Dataset, Split, convert, load_folder, one_line, read_idx,
                    size_pair, write_idx)

DATASETS = ("mnist", "fashion-mnist", "mnist-sample", "folder")


SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
SAMPLE_DIR = Path(__file__).resolve().parent / "assets" / "mnist_sample"
DOWNLOAD_TIMEOUT_S = 60  # per socket operation; without one a stalled mirror hangs the run forever

OFFLINE_OPTIONS = (
    "--dataset mnist-sample (embedded, works offline), or `apt-get install dataset-fashion-mnist` then "
    "--dataset fashion-mnist --directory /usr/share/datasets/fashion-mnist --download False"
)


def load_dataset(name: str, directory, download: bool = False, seed: int = 0,
                 test_fraction: float = TEST_FRACTION, image_size: int = 0, channels: int = 0) -> Dataset:
    """Load `name` (one of DATASETS) from `directory`, downloading it first if asked and not present.

    seed, test_fraction: which images of a folder without train/ and test/ are held out (load_folder).
    image_size, channels: --image_size and --channels, the size and channels every image is converted to once;
    0 is the set's own (for a folder, images.folder_shape's choice)."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if name == FOLDER:
        return load_folder(directory, seed, test_fraction, image_size, channels)
    return reshaped(_load_named(name, directory, download), image_size, channels)


def reshaped(ds: Dataset, image_size: int = 0, channels: int = 0) -> Dataset:
    """ds with its images converted to --image_size (N, or (H, W)) and `channels` (0: keep its own)."""
    own_channels, height, width = ds.shape
    shape = (channels or own_channels, *(size_pair(image_size) if image_size else (height, width)))
    if shape == ds.shape:
        return ds
    return Dataset(ds.name, Split(convert(ds.train.images, shape), ds.train.labels),
                   Split(convert(ds.test.images, shape), ds.test.labels), ds.classes)


def _load_named(name: str, directory, download: bool) -> Dataset:
    """A named data set (not a folder) in its own size and channels."""
    if name == "mnist-sample":
        folder = _locate([SAMPLE_DIR])
        if folder is None:
            raise DataError(f"the embedded MNIST sample is missing from {SAMPLE_DIR}; "
                            "restore assets/mnist_sample/ from the repository")
        return _read_dataset(name, folder)

    if directory is None:
        raise DataError(f"{name} needs a data folder: pass --directory, or use --dataset mnist-sample")
    directory = Path(directory).expanduser()
    candidates = [directory, directory / TORCHVISION_FOLDER[name] / "raw"]
    folder = _locate(candidates)
    if folder is None and download:
        _download(name, directory)
        folder = _locate(candidates)
    if folder is None:
        looked_for = ", ".join(f"{f}[.gz]" for pair in SPLIT_FILES.values() for f in pair)
        searched = " and ".join(str(c) for c in candidates)
        raise DataError(f"{name} not found: looked for {looked_for} in {searched}; "
                        f"pass --download True to fetch it, or use {OFFLINE_OPTIONS}")
    return _read_dataset(name, folder)


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


def _locate(folders):
    """The first folder holding all four IDX files (plain or .gz) as {base name: path}, else None."""
    for folder in folders:
        found = {}
        for base in (f for pair in SPLIT_FILES.values() for f in pair):
            # plain first: torchvision leaves both, and the plain file skips decompression
            found[base] = next((p for p in (folder / base, folder / f"{base}.gz") if p.is_file()), None)
        if all(found.values()):
            return found
    return None


def _read_dataset(name: str, files) -> Dataset:
    splits = {}
    for split, (image_file, label_file) in SPLIT_FILES.items():
        images, labels = read_idx(files[image_file]), read_idx(files[label_file])
        if images.dim() != 3 or tuple(images.shape[1:]) != (28, 28):
            raise DataError(f"{files[image_file]} holds images of shape {list(images.shape)}, "
                            "expected [N, 28, 28]; is it an images file?")
        if labels.dim() != 1:
            raise DataError(f"{files[label_file]} holds shape {list(labels.shape)}, expected labels [N]; "
                            "is it a labels file?")
        if len(images) != len(labels):
            raise DataError(f"{files[image_file]} holds {len(images)} images but {files[label_file]} holds "
                            f"{len(labels)} labels; the two files must come from the same download")
        if len(images) == 0:  # a header saying 0 images is valid IDX, but there is nothing to train or test on
            raise DataError(f"{files[image_file]} holds no images; delete it and download it again")
        if len(labels) and int(labels.max()) > 9:
            raise DataError(f"{files[label_file]} holds label {int(labels.max())}, expected classes 0..9")
        splits[split] = Split(images, labels.to(torch.int64))
    return Dataset(name, splits["train"], splits["test"])


def _download(name: str, directory: Path) -> None:
    """Fetch the raw files with torchvision into a temporary folder, then move them to <directory>/<Name>/raw/.

    Files only appear in their final place once complete, so a failed or interrupted download never leaves
    a partial file for the next run to trip over.
    """
    folder = TORCHVISION_FOLDER[name]
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=directory, prefix=".download-") as tmp:
            import torchvision  # lazy: slow to import and only needed here

            dataset_class = getattr(torchvision.datasets, folder)
            previous_timeout = socket.getdefaulttimeout()
            socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
            try:
                dataset_class(tmp, train=True, download=True)  # fetches train and test files
            finally:
                socket.setdefaulttimeout(previous_timeout)
            raw = directory / folder / "raw"
            raw.mkdir(parents=True, exist_ok=True)
            for file in sorted((Path(tmp) / folder / "raw").iterdir()):
                os.replace(file, raw / file.name)
    except Exception as e:  # network, HTTP, checksum, disk: torchvision raises many kinds
        raise DataError(f"downloading {name} into {directory} failed ({one_line(e)}); offline options: "
                        f"{OFFLINE_OPTIONS}") from None


