"""Image files into uint8 tensors: PNG/JPEG (one file, a folder, a training folder of class subfolders), IDX
files and .npy arrays; and what a data set is (Split, Dataset) and the one error every reader raises (DataError).

    from images import load_folder, read_images
    ds = load_folder("my_images")                     # --dataset folder: class subfolders give labels
    names, x = read_images("photos/", (1, 28, 28))    # encode's --images: uint8 [N, 1, 28, 28]

data.py builds the named data sets (MNIST, torchvision's, the embedded sample) from these readers.
"""
import gzip
import math
import os
import secrets
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

FOLDER = "folder"  # --dataset folder: load_folder's data set name
UNLABELLED = -1  # the label of every image of a flat folder: aae.select_labels' "no label"
# A folder whose images differ in size is resized to this (--image_size), as are MNIST's digits.
FALLBACK_SIZE = 28
# A folder's own size is taken only up to this many inputs (64x64 RGB): the networks are MLPs, and 1000 units on
# 3 x 256 x 256 inputs would be 200 million weights. Larger images need --image_size.
MAX_OWN_INPUTS = 3 * 64 * 64
GREY_MODES = ("1", "L", "LA", "I", "F")  # PIL's modes of grey images (and "I;16..."); every other is colour
LUMA = torch.tensor([0.299, 0.587, 0.114])  # ITU-R 601's weights of R, G, B: PIL's convert("L")
EXIF_ORIENTATION = 0x0112  # the EXIF tag exif_transpose reads; its values 5-8 turn the image a quarter
CONVERT_CHUNK = 5_000  # images converted at a time (floats: 4 bytes a value, then resized)
TEST_FRACTION = 0.1  # held out of a folder without train/ and test/ subfolders (MNIST's 10,000 of 70,000 is 1/7)
IDX_UBYTE = 0x08  # IDX type code for unsigned bytes, the only type MNIST-format files use


class DataError(Exception):
    """A data problem the user caused or can fix; str(e) is one line saying what to do."""


@dataclass
class Split:
    images: torch.Tensor  # uint8 [N, H, W] (grey) or [N, C, H, W]
    labels: torch.Tensor  # int64 [N]


@dataclass
class Dataset:
    name: str
    train: Split
    test: Split
    classes: tuple = ()  # class names (label i is classes[i]); () for the MNIST digit sets and a flat folder

    @property
    def shape(self) -> tuple:
        """(C, H, W) of one image as the networks take it (grey sets hold [N, H, W]: C is 1)."""
        shape = tuple(self.train.images.shape[1:])
        return (1, *shape) if len(shape) == 2 else shape

    @property
    def labelled(self) -> bool:
        """False for a flat folder, whose labels are all UNLABELLED."""
        return not bool((self.train.labels == UNLABELLED).any())


# -- images a user brings (use.encode) -------------------------------------------------------

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_images(path, shape):
    """(file names or None, images) from --images: a folder or one PNG/JPEG (names), an IDX file or a .npy
    array (None). images: uint8 [N, C, H, W], or float32 in [0, 1] from a float array."""
    path = Path(path)
    if path.is_dir():
        return read_folder(path, shape)
    if not path.exists():
        raise DataError(f"--images {path}: no such file or folder")
    if not path.is_file():
        raise DataError(f"--images {path} is not a file or a folder")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return [path.name], read_image(path, shape)[None]
    if path.suffix.lower() == ".npy":
        return None, read_array(path, shape)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise DataError(f"cannot read --images {path}: {e.strerror or e}") from None
    if head[:2] != b"\x1f\x8b" and head[:3] != b"\x00\x00\x08":  # gzip's magic, or IDX's of unsigned bytes
        raise DataError(f"--images {path} is not a folder, a .png/.jpg image, a .npy array or an IDX file "
                        "(gzipped or plain): give one of those")
    return None, shaped(read_idx(path), shape, path)


def image_files(folder, what):
    """The PNG/JPEG files of `folder` (not hidden, not in subfolders), sorted by name; DataError naming it as
    `what` if it cannot be read."""
    try:
        return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                       and not p.name.startswith(".") and p.is_file()), key=lambda p: p.name)
    except OSError as e:
        raise DataError(f"cannot read {what} {folder}: {e.strerror or e}") from None


def read_folder(folder, shape):
    """The PNG/JPEG files of `folder` (not its subfolders), sorted by name, as (names, uint8 [N, C, H, W])."""
    files = image_files(folder, "the --images folder")
    if not files:
        raise DataError(f"--images {folder} holds no images ({', '.join('*' + s for s in IMAGE_SUFFIXES)}; "
                        "subfolders are not read)")
    return [p.name for p in files], torch.stack([read_image(p, shape) for p in files])


def read_image(path, shape):
    """One image file as the model's shape (C, H, W): grey or RGB, resized if need be: uint8 [C, H, W]."""
    channels, height, width = shape
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            pixel_format = image.mode
            if pixel_format.startswith("I;16") or pixel_format == "I":  # 16-bit grey, which convert("L") would clip
                grey = (np.array(image, dtype=np.int64).clip(0, 65535) + 128) // 257
                image = Image.fromarray(grey.astype(np.uint8))
            image = image.convert("L" if channels == 1 else "RGB")
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            pixels = torch.from_numpy(np.array(image, dtype=np.uint8))
    except Exception as e:  # PIL raises many kinds for a file that is not a whole image
        raise unreadable(path, e) from None
    return pixels[None] if channels == 1 else pixels.permute(2, 0, 1)  # [H, W(, C)] -> [C, H, W]


# -- a folder of the user's images to train on (--dataset folder) -------------------------------------


@dataclass
class FolderLayout:
    """What a folder holds, from its file names alone (no image is opened): scan_folder's answer."""
    root: Path
    classes: tuple  # the class subfolders' names, sorted; () for a flat, unlabelled folder
    files: dict  # "train" and "test" (from DIR/train and DIR/test), or "all": [(path, label)] in order
    split_given: bool  # DIR/train and DIR/test exist


def scan_folder(directory) -> FolderLayout:
    """The images of --directory and their labels, as torchvision's ImageFolder finds them (classes in sorted
    name order), but only PNG/JPEG files directly in the folder or in one class subfolder; DataError, one line,
    for a folder that cannot be trained on."""
    if directory is None:
        raise DataError("--dataset folder needs --directory DIR: a folder of PNG/JPEG images, or of class "
                        "subfolders of them")
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise DataError(f"--directory {root}: " + ("not a folder" if root.exists() else "no such folder")
                        + "; give the folder that holds your images")
    if (root / "train").is_dir() and (root / "test").is_dir():
        train_classes, train = _scan_split(root / "train")
        test_classes, test = _scan_split(root / "test", train_classes)
        if bool(train_classes) != bool(test_classes):
            raise DataError(f"{root}/train and {root}/test must both hold class subfolders, or both images alone "
                            f"({root / ('train' if train_classes else 'test')} has class subfolders)")
        return FolderLayout(root, train_classes, {"train": train, "test": test}, True)
    classes, files = _scan_split(root)
    if len(files) < 2:
        raise DataError(f"{root} holds only one image ({files[0][0].name}): give at least two, one to train on "
                        "and one to test on")
    return FolderLayout(root, classes, {"all": files}, False)


def _scan_split(folder, known_classes=None):
    """(class names, [(path, label)]) of one folder: its images, or its class subfolders' images."""
    try:
        entries = sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)
        images = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        subfolders = [p for p in entries if p.is_dir()]
    except OSError as e:
        raise DataError(f"cannot read the folder {folder}: {e.strerror or e}") from None
    kinds = ", ".join("*" + s for s in IMAGE_SUFFIXES)
    if subfolders and images:
        raise DataError(f"{folder} holds both images ({images[0].name} ...) and subfolders ({subfolders[0].name} "
                        "...): put every image in a class subfolder, or move the subfolders out for a flat, "
                        "unlabelled folder")
    if not subfolders:
        if not images:
            raise DataError(f"{folder} holds no images ({kinds}) and no class subfolders of them")
        return (), [(p, UNLABELLED) for p in images]
    classes = tuple(p.name for p in subfolders)
    if known_classes is not None and known_classes:  # the test split: the training split's label numbers
        unknown = [c for c in classes if c not in known_classes]
        if unknown:
            raise DataError(f"{folder / unknown[0]} is a class that {folder.parent / 'train'} does not have: the "
                            "test classes must be among the training classes")
    numbering = known_classes or classes
    files = []
    for sub in subfolders:
        mine = image_files(sub, "the folder")
        if not mine:
            raise DataError(f"the class folder {sub} holds no images ({kinds}; its subfolders are not read): add "
                            "some, or remove it")
        files += [(p, numbering.index(sub.name)) for p in mine]
    return classes, files


def load_folder(directory, seed: int = 0, test_fraction: float = TEST_FRACTION, image_size: int = 0,
                channels: int = 0) -> Dataset:
    """--dataset folder: every image of scan_folder(directory) converted to folder_shape's (C, H, W) (resized,
    aspect not kept) and held as uint8 [N, H, W] (grey, like the MNIST sets) or [N, 3, H, W], labels by class
    subfolder (UNLABELLED for a flat folder). The test split is DIR/test when DIR/train and DIR/test exist;
    otherwise round(N * test_fraction) images (at least one, at most N - 1) drawn by `seed`: the same ones
    every run."""
    layout = scan_folder(directory)
    shape = folder_shape(layout, image_size, channels)

    def split(files):
        images = torch.stack([read_image(path, shape) for path, _ in files])  # [N, C, H, W]
        return Split(images[:, 0] if shape[0] == 1 else images, torch.tensor([label for _, label in files]))

    if layout.split_given:
        train, test = split(layout.files["train"]), split(layout.files["test"])
    else:
        everything = split(layout.files["all"])
        n = len(everything.images)
        n_test = min(max(1, round(n * test_fraction)), n - 1)
        held = torch.zeros(n, dtype=torch.bool)
        held[torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:n_test]] = True
        train = Split(everything.images[~held], everything.labels[~held])  # file order kept in each split
        test = Split(everything.images[held], everything.labels[held])
    return Dataset(FOLDER, train, test, layout.classes)


def folder_shape(layout, image_size: int = 0, channels: int = 0) -> tuple:
    """(C, H, W) that a folder's images become: --channels and --image_size (N, or (H, W)) where given (0: not
    given), else the images' own when they all agree: grey 1 or colour 3 (a mix is refused), and their size
    (else 28x28). Reads only the files' headers."""
    sizes, kinds = {}, {}
    for path, _ in (pair for files in layout.files.values() for pair in files):
        size, pixel_format = image_header(path)
        sizes.setdefault(size, path)
        kinds.setdefault(pixel_format.startswith("I;16") or pixel_format in GREY_MODES, path)
    if not channels:
        if len(kinds) > 1:
            raise DataError(f"{layout.root} mixes grey images ({kinds[True].name} ...) and colour ones "
                            f"({kinds[False].name} ...): pass --channels 1 to make them all grey, or --channels 3 "
                            "for colour")
        channels = 1 if True in kinds else 3
    if image_size:
        return (channels, *size_pair(image_size))
    if len(sizes) > 1:
        return channels, FALLBACK_SIZE, FALLBACK_SIZE
    (width, height), path = next(iter(sizes.items()))
    if channels * height * width > MAX_OWN_INPUTS:
        raise DataError(f"{layout.root}'s images are {width}x{height} ({path.name} ...), more inputs than these "
                        "fully connected networks take well: pass --image_size, e.g. 32")
    return channels, height, width


def size_pair(image_size):
    """(H, W) of --image_size N (N x N), or of a model's own (H, W) as the loaders are also given it."""
    return (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)


def image_header(path):
    """((width, height), PIL mode) of an image file as read_image turns it upright, from its header alone;
    DataError naming it if unreadable."""
    try:
        with Image.open(path) as image:
            turned = image.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8)  # a quarter turn: width <-> height
            return (image.size[::-1] if turned else image.size), image.mode
    except Exception as e:  # PIL raises many kinds for a file that is not an image
        raise unreadable(path, e) from None


def unreadable(path, error):
    """The DataError of an image file PIL cannot read: its name, and PIL's reason in one short line."""
    detail = " ".join(str(error).split())[:160] or type(error).__name__
    return DataError(f"{path} is not a readable image ({detail}); replace or remove it")


def convert(images, shape, chunk=CONVERT_CHUNK):
    """uint8 images [N, H, W] or [N, C, H, W] as `shape` (C, H, W): grey made colour by repeating it, colour made
    grey as PIL's convert("L") weighs it (ITU-R 601), resized with antialiasing; uint8 [N, H, W] when C is 1.
    `chunk` images at a time go through floats, so memory stays near the uint8 result's."""
    channels, height, width = shape
    out = torch.empty(len(images), channels, height, width, dtype=torch.uint8)
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk]
        x = (part[:, None] if part.dim() == 3 else part).float()
        if x.shape[1] != channels:
            x = x.repeat(1, 3, 1, 1) if channels == 3 else (x * LUMA[:, None, None]).sum(1, keepdim=True)
        if tuple(x.shape[2:]) != (height, width):
            x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
        out[start : start + chunk] = x.round().clamp(0, 255).to(torch.uint8)
    return out[:, 0] if channels == 1 else out


def read_array(path, shape):
    """A .npy array of images: integers in 0..255 (uint8 [N, C, H, W]) or floats in [0, 1] (float32)."""
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as e:  # not a .npy, truncated, or an array of Python objects
        detail = " ".join(str(e).split())[:160] or type(e).__name__
        raise DataError(f"--images {path} is not a readable .npy array ({detail})") from None
    kind = array.dtype.kind
    if kind in "ui" and array.size and (array.min() < 0 or array.max() > 255):
        raise DataError(f"--images {path} holds whole numbers from {array.min()} to {array.max()}: pixels must lie "
                        "in 0..255 (or be floats in [0, 1])")
    if kind == "f" and array.size and not (np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1):
        raise DataError(f"--images {path} holds floats outside [0, 1] (from {np.nanmin(array):.4g} to "
                        f"{np.nanmax(array):.4g}, or not finite): scale the pixels to [0, 1], or give uint8 0..255")
    if kind not in "uif":
        raise DataError(f"--images {path} holds {array.dtype} values: give uint8 pixels 0..255 or floats in [0, 1]")
    images = torch.from_numpy(array.astype(np.uint8 if kind in "ui" else np.float32))
    return shaped(images, shape, path)


def shaped(images, shape, path):
    """images [N, H, W], [N, C, H, W] or [N, C*H*W] as [N, C, H, W] of the model's shape, or DataError."""
    channels, height, width = shape
    if images.dim() == 3 and channels == 1 and tuple(images.shape[1:]) == (height, width):
        images = images[:, None]
    elif images.dim() == 2 and images.shape[1] == channels * height * width:
        images = images.reshape(-1, *shape)
    if images.dim() != 4 or tuple(images.shape[1:]) != tuple(shape):
        also = f"[N, {channels}, {height}, {width}] or " if channels == 1 else ""
        want = f"[N, {height}, {width}]" if channels == 1 else f"[N, {channels}, {height}, {width}]"
        raise DataError(f"--images {path} holds an array of shape {list(images.shape)}; the model takes images "
                        f"{want} ({also}[N, {channels * height * width}] also do)")
    if len(images) == 0:
        raise DataError(f"--images {path} holds no images")
    return images


# -- IDX files (MNIST's format) ----------------------------------------------------------------------


def read_idx(path) -> torch.Tensor:
    """Read a uint8 IDX file (gzip-compressed or plain) into a tensor of the shape its header gives."""
    path = Path(path)
    raw = file_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number {raw[:4].hex() or 'empty'}); "
                        "delete it and download it again")
    if raw[2] != IDX_UBYTE:
        raise DataError(f"{path} holds IDX type 0x{raw[2]:02x}, expected unsigned bytes (0x08)")
    dims, header = idx_shape(path, raw, itemsize=1)
    array = np.frombuffer(raw, dtype=np.uint8, count=math.prod(dims), offset=header).reshape(dims)
    return torch.from_numpy(array.copy())  # copy: frombuffer over bytes is read-only


def file_bytes(path: Path) -> bytes:
    """A file's bytes, gunzipped if it is gzip (by its name or its magic); DataError naming it if unreadable."""
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if path.suffix == ".gz" or raw[:2] == b"\x1f\x8b" else raw
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path} is truncated or not valid gzip ({one_line(e)}); "
                        "delete it and download it again") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or one_line(e)}") from None


def idx_shape(path, raw, itemsize):
    """(dims, header length) of an IDX file's bytes whose type the caller checked, values `itemsize` bytes each;
    DataError if its header is cut short or its data is not as long as the header says."""
    ndim, header = raw[3], 4 + 4 * raw[3]
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path} has a bad IDX header ({ndim} dimensions, {len(raw)} bytes); "
                        "delete it and download it again")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    size = math.prod(dims) * itemsize  # Python ints: a corrupt header cannot overflow
    if len(raw) - header != size:
        raise DataError(f"{path} is truncated or corrupt: header says {list(dims)} = {size} bytes of data, "
                        f"file holds {len(raw) - header}; delete it and download it again")
    return dims, header


def write_idx(path, tensor_uint8: torch.Tensor) -> None:
    """Write a uint8 tensor as an IDX file, gzip-compressed if `path` ends in .gz; atomic."""
    assert tensor_uint8.dtype == torch.uint8 and tensor_uint8.dim() >= 1, (tensor_uint8.dtype, tensor_uint8.shape)
    path = Path(path)
    array = tensor_uint8.detach().cpu().contiguous().numpy()
    payload = struct.pack(f">BBBB{array.ndim}I", 0, 0, IDX_UBYTE, array.ndim, *array.shape) + array.tobytes()
    if path.suffix == ".gz":
        payload = gzip.compress(payload, compresslevel=9, mtime=0)  # mtime=0: same data, same bytes
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")  # same folder: atomic replace
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 & umask, unlike mkstemp's 0o600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def one_line(error: Exception, limit: int = 200) -> str:
    """An exception as one short line: its type, and its message's lines joined."""
    text = " ".join(str(error).split())  # split() also removes newlines
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
