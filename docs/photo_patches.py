"""Cut scikit-image's colour sample photographs into 32x32 PNG patches, one class subfolder a photograph: a
folder of real images, made by no one here, for `--dataset folder` (docs/data.md).

    pip install scikit-image
    python docs/photo_patches.py /tmp/photo_patches            # 3,509 patches in 7 class folders
    python main.py --dataset folder --directory /tmp/photo_patches --epochs 100 --weights runs/patches

Patches tile each photograph without overlap (so no test patch shares pixels with a training one); the flat
ones (pixel standard deviation under 4 of 255, e.g. the retina photograph's black surround) are left out.
"""
import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "retina", "rocket")
FLAT_STD = 4.0  # of 255: below it a patch is one colour, and says nothing about the photograph


def patches(photo, size):
    """The size x size tiles of an [H, W, 3] uint8 photograph, row by row, less the flat ones."""
    rows, cols = photo.shape[0] // size, photo.shape[1] // size
    tiles = photo[: rows * size, : cols * size].reshape(rows, size, cols, size, 3).swapaxes(1, 2).reshape(-1, size,
                                                                                                         size, 3)
    return [t for t in tiles if t.std() >= FLAT_STD]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="folder to write <photograph>/<n>.png into (made if missing)")
    p.add_argument("--size", type=int, default=32, help="patch side in pixels")
    args = p.parse_args(argv)
    try:
        import skimage.data
    except ImportError:
        sys.exit("error: this script needs scikit-image: pip install scikit-image")
    for name in PHOTOS:
        folder = args.out / name
        folder.mkdir(parents=True, exist_ok=True)
        mine = patches(np.asarray(getattr(skimage.data, name)())[..., :3], args.size)
        for i, tile in enumerate(mine):
            Image.fromarray(tile).save(folder / f"{i:04d}.png")
        print(f"{name}: {len(mine)} patches")


if __name__ == "__main__":
    main()
