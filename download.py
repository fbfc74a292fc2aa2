"""Fetching a named data set with torchvision (`--download True`) into the layout data.py reads, so that a failed
or interrupted download leaves nothing half-written: torchvision fills a temporary folder inside DIR, and only
its finished files are moved into place.

    from download import download_set
    download_set("cifar10", Path("data"), "cifar-10-batches-py")   # data/cifar-10-batches-py/data_batch_1 ...
"""
import os
import socket
import tempfile
from pathlib import Path

from images import DataError, one_line

DOWNLOAD_TIMEOUT_S = 60  # per socket operation; without one a stalled mirror hangs the run forever

# torchvision's class for each set, and the keyword arguments of the calls that fetch both splits
TORCHVISION_CALLS = {
    "mnist": ("MNIST", [{"train": True}]),  # one call fetches the train and test files
    "fashion-mnist": ("FashionMNIST", [{"train": True}]),
    "kmnist": ("KMNIST", [{"train": True}]),
    "qmnist": ("QMNIST", [{"train": True}, {"train": False}]),  # each call fetches its own split only
    "emnist": ("EMNIST", [{"train": True}]),  # one zip holds every split; split= is added
    "svhn": ("SVHN", [{"split": "train"}, {"split": "test"}]),
    "cifar10": ("CIFAR10", [{"train": True}]),  # one archive holds every batch
}
ARCHIVES = (".zip", ".tar.gz")  # what torchvision downloaded and unpacked: not moved, dropped with the folder


def download_set(name: str, directory: Path, folder: str, emnist_split: str = "balanced", hint: str = ""):
    """Fetch data set `name` with torchvision into a temporary folder in `directory`, then move the files it left
    in `folder` (relative: the same under the temporary root and under `directory`) into place. DataError, one
    line ending in `hint`, if it fails.

    Files only appear in their final place once complete, so a failed or interrupted download never leaves
    a partial file for the next run to trip over.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=directory, prefix=".download-") as tmp:
            fetch(name, tmp, emnist_split)
            source, target = Path(tmp) / folder, directory / folder
            target.mkdir(parents=True, exist_ok=True)
            for file in sorted(source.iterdir()):
                if file.is_file() and not file.name.endswith(ARCHIVES):
                    os.replace(file, target / file.name)
    except Exception as e:  # network, HTTP, checksum, disk: torchvision raises many kinds
        raise DataError(f"downloading {name} into {directory} failed ({one_line(e)}){hint}") from None


def fetch(name: str, root: str, emnist_split: str) -> None:
    """Let torchvision download `name` into `root` in its own layout, each socket operation timing out."""
    import torchvision  # lazy: slow to import and only needed here

    class_name, calls = TORCHVISION_CALLS[name]
    dataset_class = getattr(torchvision.datasets, class_name)
    extra = {"split": emnist_split} if name == "emnist" else {}
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        for kwargs in calls:
            dataset_class(root, download=True, **kwargs, **extra)
    finally:
        socket.setdefaulttimeout(previous_timeout)
