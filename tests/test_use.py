"""Using a trained model from the command line: `main.py encode` and `main.py generate`.

Each checks the files against the one loader, utils.load_models: the same codes, the same images.

    .venv/bin/python -m pytest tests/test_use.py -q
"""

import csv
import errno
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import data
import main
import utils
from models import one_hot

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "data" / "checkpoints"
KINDS = {"plain": [], "clustering": ["--mode", "clustering", "--clusters", "4"], "supervised": ["--mode", "supervised"]}


@pytest.fixture(scope="module")
def trained(idx_dir, tmp_path_factory):
    """{kind: checkpoint folder}: one epoch of the plain AAE, a clustering and a supervised model, via main.py."""
    base = tmp_path_factory.mktemp("use")
    folders = {}
    for kind, flags in KINDS.items():
        folders[kind] = base / kind
        argv = ["--directory", str(idx_dir), "--epochs", "1", "--latent_dim", "2", "--threads", "1", "--weights",
                str(folders[kind]), *flags]
        assert main.main(argv) == 0
    return folders


@pytest.fixture(scope="module")
def test_images(dataset):
    return dataset.test.images[:12]  # uint8 [12, 28, 28]


def refused(code, err, expected_code, message):
    assert code == expected_code, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err, err


def png_folder(folder, images):
    """The images as PNG files named so that sorted name order is not their index order; returns that order."""
    folder.mkdir()
    names = [f"digit_{(7 * i) % len(images):02d}_{i}.png" for i in range(len(images))]
    for name, image in zip(names, images):
        Image.fromarray(image.numpy()).save(folder / name)
    order = sorted(range(len(images)), key=lambda i: names[i])
    return [names[i] for i in order], order


# -- encode ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_encode_gives_the_loaders_codes_for_a_folder_an_idx_file_and_npy_arrays(kind, trained, test_images,
                                                                             tmp_path, cli):
    model = utils.load_models(trained[kind])
    want = model.encode(test_images)
    names, order = png_folder(tmp_path / "pngs", test_images)
    data.write_idx(tmp_path / "images.idx", test_images)
    data.write_idx(tmp_path / "images.idx.gz", test_images)
    np.save(tmp_path / "uint8.npy", test_images.numpy())
    np.save(tmp_path / "floats.npy", (test_images.numpy() / 255).astype(np.float32))
    np.save(tmp_path / "flat.npy", test_images.numpy().reshape(12, 784))
    for source, rows in (("pngs", order), ("images.idx", range(12)), ("images.idx.gz", range(12)),
                         ("uint8.npy", range(12)), ("floats.npy", range(12)), ("flat.npy", range(12))):
        out = tmp_path / f"{source}.codes.npy"
        code, stdout, err = cli(["encode", "--weights", trained[kind], "--images", tmp_path / source, "--out", out])
        assert code == 0 and err == "", err
        codes = np.load(out)
        assert codes.dtype == np.float32 and codes.shape == tuple(want.shape)
        assert np.array_equal(codes, want[list(rows)].numpy()), source  # bit for bit: the same batches
        assert str(out) in stdout and f"codes {list(want.shape)}" in stdout
    if kind == "plain":  # the plain AAE's code is its latent_dim; the categorical one's is [y, z]
        assert want.shape == (12, 2)
    beside = sorted(p.name for p in tmp_path.glob("pngs.codes.*"))
    if kind == "clustering":
        category, probs = model.predict_category(test_images), model.category_probabilities(test_images)
        assert want.shape == (12, 4 + 2) and beside == ["pngs.codes.cluster.npy", "pngs.codes.npy",
                                                        "pngs.codes.probability.npy"]
        assert np.array_equal(np.load(tmp_path / "pngs.codes.cluster.npy"), category[order].numpy())
        probability = np.load(tmp_path / "pngs.codes.probability.npy")
        assert np.array_equal(probability, probs.max(1).values[order].numpy())
        assert probability.dtype == np.float32 and (probability >= 1 / 4).all()  # the most likely of 4
    else:
        assert beside == ["pngs.codes.npy"]  # no category to give


@pytest.mark.parametrize("kind", ["plain", "clustering"])
def test_encode_csv_names_each_file_in_sorted_order_with_its_code_and_category(kind, trained, test_images, tmp_path,
                                                                              cli):
    model = utils.load_models(trained[kind])
    names, order = png_folder(tmp_path / "pngs", test_images)
    code, _, err = cli(["encode", "--weights", trained[kind], "--images", tmp_path / "pngs", "--out",
                        tmp_path / "codes.csv"])
    assert code == 0, err
    with open(tmp_path / "codes.csv", newline="") as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    codes = model.encode(test_images)[order]
    if kind == "plain":
        assert header == ["file", "z0", "z1"]
    else:
        assert header == ["file", "y0", "y1", "y2", "y3", "z0", "z1", "cluster", "probability"]
        category = model.predict_category(test_images)[order]
        probability = model.category_probabilities(test_images).max(1).values[order]
        assert [int(r[-2]) for r in rows] == category.tolist()
        assert np.array_equal(np.array([r[-1] for r in rows], dtype=np.float32), probability.numpy())
    assert [r[0] for r in rows] == names == sorted(names)
    values = np.array([r[1 : 1 + codes.shape[1]] for r in rows], dtype=np.float32)
    assert np.array_equal(values, codes.numpy())  # 9 significant digits give float32 back exactly

    # an array has no file names: its rows are numbered; --format csv with its default name
    np.save(tmp_path / "a.npy", test_images.numpy())
    code, _, err = cli(["encode", "--weights", trained[kind], "--images", tmp_path / "a.npy", "--format", "csv",
                        "--out", tmp_path / "b.csv"])
    with open(tmp_path / "b.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert code == 0 and rows[0][0] == "index" and [r[0] for r in rows[1:]] == [str(i) for i in range(12)]


def test_encode_makes_other_images_the_models_shape(trained, test_images, tmp_path, cli):
    """RGB, a different size, a JPEG: grey 28x28 as PIL converts and resizes them; 16-bit grey scaled to 8 bits."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rgb = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "a.png")
    Image.fromarray(rgb).save(folder / "b.JPG", quality=95)
    Image.fromarray(test_images[0].numpy()).save(folder / "c.png")
    Image.fromarray(test_images[1].numpy().astype(np.uint16) * 257).save(folder / "d.png")  # 16 bits: 255 -> 65535
    (folder / "notes.txt").write_text("not an image: skipped")
    code, out, err = cli(["encode", "--weights", trained["plain"], "--images", folder, "--out", tmp_path / "c.csv"])
    assert code == 0, err

    def converted(path):
        return np.array(Image.open(path).convert("L").resize((28, 28), Image.Resampling.BILINEAR))

    assert Image.open(folder / "d.png").mode == "I;16"
    expected = torch.from_numpy(np.stack([converted(folder / "a.png"), converted(folder / "b.JPG"),
                                          test_images[0].numpy(), test_images[1].numpy()]))
    with open(tmp_path / "c.csv", newline="") as f:
        rows = list(csv.reader(f))[1:]
    assert [r[0] for r in rows] == ["a.png", "b.JPG", "c.png", "d.png"]
    codes = utils.load_models(trained["plain"]).encode(expected)
    assert np.array_equal(np.array([r[1:] for r in rows], dtype=np.float32), codes.numpy())
    assert "encoded 4 images (in file-name order)" in out

    # one image file on its own: one row, named (its code from a batch of one, as encode(x[1:2]) gives it)
    code, out, err = cli(["encode", "--weights", trained["plain"], "--images", folder / "b.JPG", "--out",
                          tmp_path / "one.csv"])
    with open(tmp_path / "one.csv", newline="") as f:
        (name, *values), = list(csv.reader(f))[1:]
    alone = utils.load_models(trained["plain"]).encode(expected[1:2])
    assert code == 0 and name == "b.JPG" and np.array_equal(np.array([values], dtype=np.float32), alone.numpy())
    assert "encoded 1 image with" in out


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.glob("*.pt")))
def test_encode_and_generate_work_for_every_model(fixture, test_images, tmp_path, cli):
    weights = FIXTURES / fixture
    model = utils.load_models(weights)
    np.save(tmp_path / "x.npy", test_images.numpy())
    code, _, err = cli(["encode", "--weights", weights, "--images", tmp_path / "x.npy", "--out", tmp_path / "z.npy"])
    assert code == 0, err
    assert np.array_equal(np.load(tmp_path / "z.npy"), model.encode(test_images).numpy())
    code, _, err = cli(["generate", "--weights", weights, "-n", "3", "--seed", "5", "--out", tmp_path / "g"])
    assert code == 0, err
    assert np.array_equal(pngs(tmp_path / "g"), as_pixels(model.sample(3, seed=5)))


# -- generate --------------------------------------------------------------------------------------


def as_pixels(images):
    """[N, 1, H, W] in [0, 1] -> uint8 [N, H, W], rounded as torchvision's save_image rounds."""
    return images[:, 0].mul(255).add(0.5).clamp(0, 255).to(torch.uint8).numpy()


def pngs(folder):
    files = sorted(folder.glob("sample_*.png"))
    images = [Image.open(f) for f in files]
    assert all(i.mode == "L" and i.size == (28, 28) for i in images)
    return np.stack([np.array(i) for i in images])


@pytest.mark.parametrize("kind", KINDS)
def test_generate_writes_n_pngs_of_the_models_samples(kind, trained, tmp_path, cli):
    model = utils.load_models(trained[kind])
    out = tmp_path / "samples"
    code, stdout, err = cli(["generate", "--weights", trained[kind], "-n", "25", "--seed", "3", "--out", out])
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [f"sample_{i:04d}.png" for i in range(25)]  # no temp files left
    assert np.array_equal(pngs(out), as_pixels(model.sample(25, seed=3)))
    assert f"25 images of {model.title} (seed 3): sample_0000.png to sample_0024.png in {out}/" in stdout
    # another seed, other images; the default folder is generated/ beside the checkpoint
    code, _, err = cli(["generate", "--weights", trained[kind], "-n", "25", "--seed", "4"])
    assert code == 0, err
    again = pngs(trained[kind] / "generated")
    assert np.array_equal(again, as_pixels(model.sample(25, seed=4))) and not np.array_equal(again, pngs(out))
    shutil.rmtree(trained[kind] / "generated")


def test_generate_names_have_as_many_digits_as_the_count_needs(trained, tmp_path, cli):
    code, _, err = cli(["generate", "--weights", trained["plain"], "-n", "10001", "--out", tmp_path])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert code == 0 and len(names) == 10001 and names[0] == "sample_00000.png" and names[-1] == "sample_10000.png"


@pytest.mark.parametrize("kind, nrow", [("plain", 10), ("clustering", 4), ("supervised", 10)])
def test_generate_grid_is_one_picture_of_the_samples(kind, nrow, trained, tmp_path, cli):
    import plots

    model = utils.load_models(trained[kind])
    code, stdout, err = cli(["generate", "--weights", trained[kind], "-n", "25", "--grid", "--out", tmp_path / "g"])
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["grid.png"]
    grid = Image.open(tmp_path / "g" / "grid.png")
    rows = math.ceil(25 / nrow)  # one category a column for the models with a category in their prior
    assert grid.size == (nrow * 30 + 2, rows * 30 + 2)  # 28 pixels and a 2-pixel border each
    reference = plots.save_grid(model.sample(25, seed=0), tmp_path / "reference.png", nrow=nrow)
    assert np.array_equal(np.array(grid), np.array(Image.open(reference)))
    assert stdout.endswith(f"{tmp_path / 'g' / 'grid.png'}\n")
    # a second grid does not replace the first
    code, stdout, err = cli(["generate", "--weights", trained[kind], "-n", "4", "--grid", "--out", tmp_path / "g"])
    assert code == 2 and "holds grid.png of an earlier generate" in err
    assert np.array_equal(np.array(Image.open(tmp_path / "g" / "grid.png")), np.array(grid))


@pytest.mark.parametrize("kind, k, classes, word", [("supervised", 7, 10, "class"), ("clustering", 2, 4, "cluster")])
def test_generate_class_decodes_the_same_styles_as_that_class(kind, k, classes, word, trained, tmp_path, cli):
    """--class K: model.sample's style draws, every one decoded with class K; where model.sample's row is of
    class K already (rows K, K + classes ...), the very same image."""
    model = utils.load_models(trained[kind])
    code, stdout, err = cli(["generate", "--weights", trained[kind], "-n", "20", "--class", k, "--out", tmp_path])
    assert code == 0, err
    assert f", {word} {k} (seed 0)" in stdout
    generated, sampled = pngs(tmp_path), as_pixels(model.sample(20, seed=0))
    mine = np.arange(20) % classes == k
    assert np.array_equal(generated[mine], sampled[mine])
    assert all(not np.array_equal(a, b) for a, b in zip(generated[~mine], sampled[~mine]))  # another class each
    style = model.sample_style(20, torch.Generator().manual_seed(0))
    assert np.array_equal(generated, as_pixels(model.decode(torch.cat([one_hot(torch.full((20,), k), classes),
                                                                       style], 1))))


def test_generate_class_of_the_label_discriminator_draws_from_its_part_of_the_prior(cli, tmp_path):
    model = utils.load_models(FIXTURES / "label_discriminator.pt")  # a mixture of 10 Gaussians, trained with labels
    assert model.classes() == (10, "class")
    codes = model.sample_prior(500, torch.Generator().manual_seed(0), category=3)
    code, out, err = cli(["generate", "--weights", FIXTURES / "label_discriminator.pt", "-n", "2", "--class", "3",
                          "--out", tmp_path / "g"])
    assert code == 0 and ", class 3 (seed 0)" in out, err
    angle = torch.atan2(codes[:, 1], codes[:, 0]).remainder(2 * math.pi)
    assert (angle - 2 * math.pi * 3 / 10).abs().max() < 0.2  # component 3 of 10 on the circle
    assert 3 < codes.norm(dim=1).mean() < 5  # at radius 4


# -- refusals: one line, the exit code, nothing written ------------------------------------------


@pytest.fixture
def spoiled(tmp_path, test_images):
    """A folder of bad inputs: an empty folder, PNGs with one corrupt, arrays of the wrong kind."""
    (tmp_path / "empty").mkdir()
    png_folder(tmp_path / "pngs", test_images[:3])
    whole = (tmp_path / "pngs" / "digit_00_0.png").read_bytes()
    (tmp_path / "pngs" / "digit_05_9.png").write_bytes(whole[: len(whole) // 2])  # a PNG cut off half-way
    np.save(tmp_path / "good.npy", test_images.numpy())
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.png").write_text("a text file named like a PNG")
    np.save(tmp_path / "wide.npy", np.zeros((4, 28, 27), dtype=np.uint8))
    np.save(tmp_path / "none.npy", np.zeros((0, 28, 28), dtype=np.uint8))
    np.save(tmp_path / "bright.npy", np.full((4, 28, 28), 2.0, dtype=np.float32))
    np.save(tmp_path / "big.npy", np.full((4, 28, 28), 300, dtype=np.int64))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "file").write_text("a regular file")
    return tmp_path


@pytest.mark.parametrize(
    "images, extra, exit_code, message",
    [
        ("nowhere", [], 1, "error: --images {d}/nowhere: no such file or folder"),
        ("empty", [], 1, "error: --images {d}/empty holds no images (*.png, *.jpg, *.jpeg; subfolders are not read)"),
        ("pngs", [], 1, "error: {d}/pngs/digit_05_9.png is not a readable image (image file is truncated"),
        ("text", [], 1, "error: {d}/text/a.png is not a readable image (cannot identify image file"),
        ("wide.npy", [], 1, "error: --images {d}/wide.npy holds an array of shape [4, 28, 27]; the model takes images "
                            "[N, 28, 28] ([N, 1, 28, 28] or [N, 784] also do)"),
        ("none.npy", [], 1, "error: --images {d}/none.npy holds no images"),
        ("bright.npy", [], 1, "error: --images {d}/bright.npy holds floats outside [0, 1] (from 2 to 2"),
        ("big.npy", [], 1, "error: --images {d}/big.npy holds whole numbers from 300 to 300: pixels must lie in "
                           "0..255"),
        ("objects.npy", [], 1, "error: --images {d}/objects.npy is not a readable .npy array ("),
        ("notes.txt", [], 1, "error: --images {d}/notes.txt is not a folder, a .png/.jpg image, a .npy array or an "
                             "IDX file"),
        ("good.npy", ["--out", "{d}/file/codes.npy"], 1, "error: the --out folder {d}/file is not writable"),
        ("good.npy", ["--out", "{d}/empty"], 2, "error: --out {d}/empty is a folder: give a file in it, such as "
                                            "{d}/empty/codes.npy"),
        ("good.npy", ["--format", "csv", "--out", "{d}/codes.npy"], 2, "error: --out {d}/codes.npy ends in .npy but "
                                                                   "--format csv writes a CSV: name it {d}/codes.csv"),
        ("good.npy", ["--format", "tsv"], 2, "main.py encode: error: argument --format: invalid choice: 'tsv'"),
    ],
)
def test_encode_refuses_bad_input_in_one_line(images, extra, exit_code, message, trained, spoiled, cli):
    before = sorted(p.relative_to(spoiled) for p in spoiled.rglob("*"))
    argv = ["encode", "--weights", trained["clustering"], "--images", spoiled / images,
            *[a.format(d=spoiled) for a in extra]]
    if "--out" not in extra:
        argv += ["--out", spoiled / "out" / "codes.npy"]
    code, _, err = cli(argv)
    refused(code, err, exit_code, message.format(d=spoiled))
    assert sorted(p.relative_to(spoiled) for p in spoiled.rglob("*")) == before  # nothing written, no folder made


def test_encode_needs_images_and_a_checkpoint(tmp_path, cli):
    code, _, err = cli(["encode", "--weights", tmp_path])
    refused(code, err, 2, "main.py encode: error: the following arguments are required: --images")
    code, _, err = cli(["encode", "--weights", tmp_path, "--images", tmp_path])
    refused(code, err, 1, f"error: no checkpoint at {tmp_path / 'aae.pt'}")


@pytest.mark.parametrize(
    "kind, argv, exit_code, message",
    [
        ("plain", ["-n", "0"], 2, "main.py generate: error: argument -n/--number: must be at least 1, got 0"),
        ("plain", ["-n", "ten"], 2, "argument -n/--number: expected a whole number, got 'ten'"),
        ("plain", ["-n", "2000000"], 2, "argument -n/--number: must be at most 1000000 (a million files)"),
        ("plain", ["--grid", "-n", "10001"], 2, "error: -n 10001 is too many for one --grid picture: use -n 10000 or "
                                                "fewer, or drop --grid"),
        ("plain", ["--class", "3"], 2, "error: the plain AAE (--mode unsupervised) decodes no class: drop --class"),
        ("plain", ["--class", "-1"], 2, "argument --class: must be 0 or more, got -1"),
        ("supervised", ["--class", "10"], 2, "error: --class 10: the supervised AAE (--mode supervised) has classes "
                                             "0 to 9"),
        ("clustering", ["--class", "4"], 2, "error: --class 4: the clustering AAE (--mode clustering) has clusters "
                                            "0 to 3"),
        ("plain", ["--out", "{d}/file/samples"], 1, "error: the --out folder {d}/file/samples is not writable"),
        ("plain", ["--out", "{d}/file"], 1, "error: the --out folder {d}/file is not writable"),
        ("plain", ["--out", "{d}/earlier"], 2, "error: {d}/earlier holds 1 sample (sample_*.png) of an earlier "
                                               "generate: pass another --out, or delete them"),
    ],
)
def test_generate_refuses_bad_input_in_one_line(kind, argv, exit_code, message, trained, tmp_path, cli):
    (tmp_path / "file").write_text("a regular file")
    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier" / "sample_0000.png").write_bytes(b"kept")
    before = sorted(tmp_path.rglob("*"))
    argv = [a.format(d=tmp_path) for a in argv]
    out = [] if "--out" in argv else ["--out", tmp_path / "new"]
    code, _, err = cli(["generate", "--weights", trained[kind], *argv, *out])
    refused(code, err, exit_code, message.format(d=tmp_path))
    assert sorted(tmp_path.rglob("*")) == before
    assert (tmp_path / "earlier" / "sample_0000.png").read_bytes() == b"kept"


def test_a_failed_write_leaves_nothing_half_written(trained, test_images, tmp_path, cli, monkeypatch):
    """A full disk at the third file: no PNG appears, and of encode's three files none does."""
    saves = []
    real_save = Image.Image.save

    def save(self, fp, *args, **kwargs):
        saves.append(fp)
        if len(saves) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)
    code, _, err = cli(["generate", "--weights", trained["plain"], "-n", "5", "--out", tmp_path / "g"])
    refused(code, err, 1, f"error: could not write {tmp_path / 'g' / 'sample_0002.png'}: no space left on the "
                          "device; nothing was written")
    assert list((tmp_path / "g").iterdir()) == []

    real_np_save = np.save
    calls = []

    def np_save(file, array, *args, **kwargs):
        calls.append(file)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_np_save(file, array, *args, **kwargs)

    monkeypatch.setattr(np, "save", np_save)
    real_np_save(tmp_path / "x.npy", test_images.numpy())
    code, _, err = cli(["encode", "--weights", trained["clustering"], "--images", tmp_path / "x.npy", "--out",
                        tmp_path / "e" / "codes.npy"])
    refused(code, err, 1, "no space left on the device; nothing was written")
    assert list((tmp_path / "e").iterdir()) == []


def test_help_of_both_commands_lists_their_flags_with_defaults(capsys):
    for command, flags in (("encode", ["--images PATH", "--out FILE", "--format {npy,csv}", "(default: cpu)"]),
                           ("generate", ["-n N, --number N", "--grid [BOOL]", "--class K", "(default: 100)"])):
        with pytest.raises(SystemExit) as exit_:
            main.main([command, "--help"])
        out = capsys.readouterr().out
        assert exit_.value.code == 0 and out.startswith(f"usage: main.py {command}")
        assert all(flag in out for flag in flags), out
        assert "(default: None)" not in out  # --images is required; --out, --format, --class say theirs in words
