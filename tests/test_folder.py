"""--dataset folder: a folder of PNG/JPEG files as a data set (images.load_folder), through main.py.

The fixture draws 30 small pictures with PIL, three classes of simple shapes, some RGB and of other sizes than
28x28, and writes them as PNG and JPEG files in the layouts the trainer reads.
"""

import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import data
import images
import main
import utils

TINY = ["--latent_dim", "2", "--epochs", "1", "--batch_size", "10", "--threads", "1"]
SHAPES = ("circle", "square", "stripes")  # the class subfolders, in sorted name order: labels 0, 1, 2


def picture(shape, i, colour="grey"):
    """One picture of `shape`: white on black, sizes 28, 40x32 and 20 in turn; colour "grey", "rgb" (red ink), or
    "mixed": every third RGB."""
    size = ((28, 28), (40, 32), (20, 20))[i % 3]
    rgb = colour == "rgb" or (colour == "mixed" and i % 3 == 1)
    image = Image.new("RGB" if rgb else "L", size, 0)
    ink = (255, 40, 40) if rgb else 255
    draw = ImageDraw.Draw(image)
    w, h = size
    if shape == "circle":
        draw.ellipse((w * 0.2, h * 0.2, w * 0.8, h * 0.8), fill=ink)
    elif shape == "square":
        draw.rectangle((w * 0.25, h * 0.25, w * 0.75, h * 0.75), fill=ink)
    else:
        for x in range(2 + i % 2, w, 6):
            draw.rectangle((x, 0, x + 2, h), fill=ink)
    return image


def write_pictures(folder, shapes=SHAPES, per_class=10, flat=False, colour="grey"):
    """per_class pictures of each shape: PNG, and every fourth a JPEG; in class subfolders, or flat."""
    for shape in shapes:
        target = folder if flat else folder / shape
        target.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            suffix = ".jpg" if i % 4 == 3 else ".png"
            picture(shape, i, colour).save(target / f"{shape}_{i:02d}{suffix}")
    return folder


@pytest.fixture(scope="module")
def classes_dir(tmp_path_factory):
    return write_pictures(tmp_path_factory.mktemp("classes"))


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory):
    return write_pictures(tmp_path_factory.mktemp("mixed"), colour="mixed")


@pytest.fixture(scope="module")
def flat_dir(tmp_path_factory):
    return write_pictures(tmp_path_factory.mktemp("flat"), flat=True)


def test_class_subfolders_give_labels_in_sorted_order_and_channels_1_makes_every_image_grey(mixed_dir):
    with pytest.raises(images.DataError, match="mixes grey images .* and colour ones .*--channels 1"):
        data.load_dataset("folder", mixed_dir)
    ds = data.load_dataset("folder", mixed_dir, channels=1)
    assert ds.shape == (1, 28, 28)  # the images differ in size: 28x28
    assert ds.classes == SHAPES and ds.labelled
    assert len(ds.train.images) == 27 and len(ds.test.images) == 3  # round(30 * 0.1) held out
    for split in (ds.train, ds.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (28, 28)
    labels = torch.cat([ds.train.labels, ds.test.labels])
    assert sorted(labels.tolist()) == [0] * 10 + [1] * 10 + [2] * 10
    # the first circle, a 28x28 grey PNG, comes through pixel for pixel
    first = torch.from_numpy(np.array(picture("circle", 0)))
    everything = torch.cat([ds.train.images, ds.test.images])
    assert any(torch.equal(first, image) for image in everything)
    # an RGB 40x32 red square is converted to grey (L = 0.299 R + ...) and resized: its middle is lit, its corner dark
    square = Image.open(mixed_dir / "square" / "square_01.png")
    assert square.mode == "RGB" and square.size == (40, 32)
    grey = images.read_image(mixed_dir / "square" / "square_01.png", (1, 28, 28))[0]
    assert grey[14, 14] == round(0.299 * 255 + 0.587 * 40 + 0.114 * 40) and grey[0, 0] == 0
    assert any(torch.equal(grey, image) for image in everything)


def test_the_held_out_images_are_the_same_with_the_same_seed_and_differ_with_another(classes_dir):
    a = data.load_dataset("folder", classes_dir, seed=0)
    b = data.load_dataset("folder", classes_dir, seed=0)
    c = data.load_dataset("folder", classes_dir, seed=1)
    assert torch.equal(a.test.images, b.test.images) and torch.equal(a.test.labels, b.test.labels)
    assert not torch.equal(a.test.images, c.test.images)
    half = data.load_dataset("folder", classes_dir, seed=0, test_fraction=0.5)
    assert len(half.test.images) == 15 and len(half.train.images) == 15


def test_train_and_test_subfolders_are_the_split(tmp_path):
    write_pictures(tmp_path / "train", per_class=6)
    write_pictures(tmp_path / "test", shapes=("circle", "stripes"), per_class=2)
    ds = data.load_dataset("folder", tmp_path)
    assert ds.classes == SHAPES and len(ds.train.images) == 18
    assert ds.test.labels.tolist() == [0, 0, 2, 2]  # stripes keeps the training split's number
    expected = images.read_image(tmp_path / "test" / "stripes" / "stripes_01.png", (1, 28, 28))[0]
    assert torch.equal(ds.test.images[3], expected)


def test_a_flat_folder_is_unlabelled(flat_dir):
    ds = data.load_dataset("folder", flat_dir)
    assert ds.classes == () and not ds.labelled
    assert (ds.train.labels == images.UNLABELLED).all() and len(ds.test.images) == 3


def test_a_flat_folder_trains_the_plain_aae_then_draws_and_evaluates(flat_dir, tmp_path, cli):
    weights = tmp_path / "w"
    code, out, err = cli(["--dataset", "folder", "--directory", str(flat_dir), "--weights", str(weights),
                          "--eval_every", "1", *TINY])
    assert code == 0, err
    assert f"on folder {flat_dir} (unlabelled; 27 train / 3 test images, grey 28x28)" in out
    row = utils.read_csv(weights / utils.LOG_NAME)[0]
    assert math.isnan(row["knn_accuracy"]) and math.isfinite(row["parzen_ll"])  # per-epoch numbers, k-NN skipped
    ckpt = torch.load(weights / utils.CHECKPOINT_NAME, weights_only=True)
    assert ckpt["train_config"]["directory"] == str(flat_dir) and ckpt["train_config"]["test_fraction"] == 0.1

    code, out, err = cli(["evaluate", "--weights", str(weights), "--samples", "50", "--threads", "1"])
    assert code == 0, err
    assert "k-NN accuracy (k=5)    skipped: no labels" in out and "label-based figures skipped" in out
    metrics = json.loads((weights / "metrics.json").read_text())
    assert metrics["knn_accuracy"] is None and metrics["protocol"]["test_images"] == 3
    assert metrics["protocol"]["train_images"] == 27 and metrics["dataset"] == "folder"
    assert "skipped: the images have no labels" in (weights / "report.md").read_text()

    code, out, err = cli(["draw", "--weights", str(weights), "--pairs", "1", "--threads", "1"])
    assert code == 0, err
    assert (weights / "interpolation.png").is_file() and (weights / "reconstructions.png").is_file()
    code, out, err = cli(["draw", "interpolation", "--weights", str(weights), "--classes", "0", "1"])
    assert code == 2 and "have no labels" in err and len(err.strip().splitlines()) == 1


def test_a_labelled_folder_sets_the_classes_and_draw_reads_the_same_test_split(classes_dir, tmp_path, cli):
    weights = tmp_path / "w"
    code, out, err = cli(["--dataset", "folder", "--directory", str(classes_dir), "--weights", str(weights),
                          "--mode", "supervised", "--seed", "3", *TINY])
    assert code == 0, err
    assert " (3 classes; 27 train / 3 test images, grey 28x28)" in out
    model = utils.load_models(weights)
    assert model.model_cfg.n_classes == 3 and model.train_cfg.seed == 3
    test = data.load_dataset("folder", classes_dir, seed=3).test
    x = test.images
    # evaluate reads the folder again, from the checkpoint: its reconstruction figure is of those 3 images
    code, out, err = cli(["evaluate", "--weights", str(weights), "--threads", "1"])
    assert code == 0, err
    metrics = json.loads((weights / "metrics.json").read_text())
    expected = model.test_reconstruction(x, test.labels)
    assert metrics["test_recon_bce"] == pytest.approx(expected, rel=1e-5)
    assert 0 <= metrics["knn_accuracy"] <= 1
    code, out, err = cli(["draw", "--weights", str(weights), "--threads", "1"])
    assert code == 0 and (weights / "reconstructions.png").is_file()
    # another data set, whose 10 digits the model's 3 classes cannot decode, is refused in one line
    code, out, err = cli(["evaluate", "--weights", str(weights), "--dataset", "mnist-sample", "--threads", "1"])
    assert code == 2 and "has 10 classes and the model was trained on 3" in err and len(err.splitlines()) == 1
    # fewer labels than classes would leave a class with no labelled example
    code, out, err = cli(["--dataset", "folder", "--directory", str(classes_dir), "--weights", str(tmp_path / "l"),
                          "--mode", "semi_supervised", "--labels", "2", *TINY])
    assert code == 2 and "--labels 2 leaves classes without a labelled example" in err


@pytest.mark.parametrize("flags, words", [
    (["--mode", "supervised"], "trains on labels"),
    (["--mode", "semi_supervised", "--labels", "3"], "trains on labels"),
    (["--mode", "dim_reduction", "--labels", "3"], "trains on labels"),
    (["--label_discriminator", "--prior", "mixture"], "trains on labels"),
])
def test_the_models_that_need_labels_refuse_a_flat_folder_before_any_work(flat_dir, tmp_path, cli, flags,
                                                                            words):
    code, out, err = cli(["--dataset", "folder", "--directory", str(flat_dir), "--weights",
                          str(tmp_path / "w"), *flags, *TINY])
    assert code == 2 and words in err and "class subfolders" in err and len(err.strip().splitlines()) == 1
    assert out == "" and not (tmp_path / "w").exists()


def test_clustering_trains_on_a_flat_folder_and_skips_the_figures_that_need_labels(flat_dir, tmp_path, cli):
    weights = tmp_path / "w"
    code, out, err = cli(["--dataset", "folder", "--directory", str(flat_dir), "--weights", str(weights),
                          "--mode", "clustering", "--clusters", "3", *TINY])
    assert code == 0, err
    assert "label-based figures skipped" in out and (weights / "clustering_clusters.png").is_file()
    code, out, err = cli(["evaluate", "--weights", str(weights), "--threads", "1"])
    assert code == 0, err
    numbers = json.loads((weights / "metrics.json").read_text())
    assert 1 <= numbers["clusters_used"] <= 3 and "test_cluster_error" not in numbers
    assert "kmeans_pixels_error" not in numbers  # the baseline is measured against labels too


def bad(setup):
    """A folder of 30 good pictures in 3 classes, then spoilt by `setup(folder)`."""
    def make(tmp_path):
        folder = write_pictures(tmp_path / "pics")
        setup(folder)
        return folder
    return make


def corrupt(folder):
    path = folder / "square" / "square_04.png"
    path.write_bytes(path.read_bytes()[:40])


def one_image(folder):
    shutil.rmtree(folder)
    folder.mkdir()
    picture("circle", 0).save(folder / "only.png")


@pytest.mark.parametrize("make, words", [
    (lambda tmp_path: tmp_path / "nowhere", ["nowhere: no such folder"]),
    (bad(lambda f: [shutil.rmtree(f), f.mkdir()]), ["pics holds no images", "no class subfolders"]),
    (bad(one_image), ["only one image (only.png)", "at least two"]),
    (bad(corrupt), ["square_04.png is not a readable image", "replace or remove it"]),
    (bad(lambda f: (f / "zebra").mkdir()), ["class folder", "zebra holds no images"]),
    (bad(lambda f: (f / "notes.txt").write_text("not a picture")), None),  # other files are passed over
    (bad(lambda f: picture("circle", 0).save(f / "loose.png")), ["holds both images (loose.png", "subfolders"]),
    (bad(lambda f: picture("circle", 0, "rgb").save(f / "circle" / "red.png")),
     ["mixes grey images (circle_00.png ...) and colour ones (red.png ...)", "--channels 1", "--channels 3"]),
    (bad(lambda f: [p.unlink() or Image.new("RGB", (80, 70)).save(p) for p in f.rglob("*.*")]),
     ["images are 80x70", "pass --image_size"]),
])
def test_bad_folders_get_one_line_and_exit_1_and_nothing_is_written(make, words, tmp_path, cli):
    folder = make(tmp_path)
    code, out, err = cli(["--dataset", "folder", "--directory", str(folder), "--weights", str(tmp_path / "w"),
                          *TINY])
    if words is None:
        assert code == 0, err
        return
    assert code == 1 and len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert all(w in err for w in words), err
    assert not (tmp_path / "w").exists()


def test_download_is_refused_for_a_folder(classes_dir, tmp_path, cli):
    code, out, err = cli(["--dataset", "folder", "--directory", str(classes_dir), "--weights", str(tmp_path / "w"),
                          "--download", *TINY])
    assert code == 2 and "nothing to download: drop --download" in err and not (tmp_path / "w").exists()


def test_test_fraction_beside_train_and_test_subfolders_is_refused(tmp_path, cli):
    write_pictures(tmp_path / "pics" / "train", per_class=2)
    write_pictures(tmp_path / "pics" / "test", per_class=1)
    code, out, err = cli(["--dataset", "folder", "--directory", str(tmp_path / "pics"), "--weights",
                          str(tmp_path / "w"), "--test_fraction", "0.2", *TINY])
    assert code == 2 and "which give the test split: drop --test_fraction" in err and not (tmp_path / "w").exists()


def test_test_fraction_is_refused_for_the_mnist_sets_and_outside_0_1(tmp_path, capsys, cli):
    code, _, err = cli(["--dataset", "mnist-sample", "--test_fraction", "0.2", "--weights", str(tmp_path / "w")])
    assert code == 2 and "mnist-sample has its own test split" in err
    with pytest.raises(SystemExit) as e:
        main.main(["--dataset", "folder", "--test_fraction", "1", "--weights", str(tmp_path / "w")])
    assert e.value.code == 2 and "between 0 and 1" in capsys.readouterr().err


# -- sizes and colour: --image_size, --channels, and a folder's own ------------------------------------------


def test_a_folder_of_one_size_and_colour_keeps_its_own_and_the_flags_convert_it(tmp_path):
    folder = write_pictures(tmp_path / "rgb", per_class=3, colour="rgb")
    for path in folder.rglob("*.*"):  # all 24x20 (width x height)
        Image.open(path).convert("RGB").resize((24, 20)).save(path)
    ds = data.load_dataset("folder", folder)
    assert ds.shape == (3, 20, 24) and ds.train.images.dtype == torch.uint8 and ds.train.images.shape[1:] == (3, 20, 24)
    red = images.read_image(folder / "circle" / "circle_00.png", (3, 20, 24))
    assert any(torch.equal(red, image) for image in torch.cat([ds.train.images, ds.test.images]))
    assert data.load_dataset("folder", folder, image_size=16).shape == (3, 16, 16)
    grey = data.load_dataset("folder", folder, image_size=16, channels=1)
    assert grey.shape == (1, 16, 16) and grey.train.images.shape[1:] == (16, 16)


def test_a_named_set_is_converted_once_by_the_flags():
    own = data.load_dataset("mnist-sample", None)
    assert own.shape == (1, 28, 28)
    ds = data.load_dataset("mnist-sample", None, image_size=14, channels=3)
    assert ds.shape == (3, 14, 14) and ds.train.images.dtype == torch.uint8 and len(ds.test.images) == len(own.test.images)
    assert torch.equal(ds.train.images[:, 0], ds.train.images[:, 2])  # grey made colour: three equal channels
    # resized with antialiasing, as PIL resizes a folder's images
    pil = [np.array(Image.fromarray(image.numpy()).resize((14, 14), Image.Resampling.BILINEAR)) for image in
           own.train.images[:20]]
    assert (ds.train.images[:20, 0].float() - torch.from_numpy(np.stack(pil)).float()).abs().max() <= 1
    # colour made grey as PIL weighs it
    rgb = torch.tensor([[[[255]], [[40]], [[40]]]], dtype=torch.uint8)  # [1, 3, 1, 1]
    assert images.convert(rgb, (1, 1, 1)).item() == round(0.299 * 255 + 0.587 * 40 + 0.114 * 40)


def test_a_colour_folder_trains_resumes_and_every_command_reads_it_as_the_model_takes_it(tmp_path, cli):
    folder = write_pictures(tmp_path / "rgb", per_class=6, colour="rgb")
    weights = tmp_path / "w"
    code, out, err = cli(["--dataset", "folder", "--directory", str(folder), "--weights", str(weights),
                          "--image_size", "12", *TINY])
    assert code == 0, err
    assert "(3 classes; 16 train / 2 test images, RGB 12x12)" in out
    model = utils.load_models(weights)
    assert tuple(model.model_cfg.image_shape) == (3, 12, 12)
    for picture_file in ("samples.png", "reconstructions.png"):
        assert Image.open(weights / picture_file).mode == "RGB"
    # resuming reads the folder at the checkpoint's shape; a contradicting flag is refused
    code, out, err = cli(["--weights", str(weights), "--resume", "--image_size", "16", "--epochs", "2"])
    assert code == 2 and "trained on images of 3 x 12 x 12" in err and len(err.strip().splitlines()) == 1
    code, out, err = cli(["--weights", str(weights), "--resume", "--epochs", "2"])
    assert code == 0, err
    code, out, err = cli(["evaluate", "--weights", str(weights), "--samples", "20", "--threads", "1"])
    assert code == 0, err
    assert json.loads((weights / "metrics.json").read_text())["protocol"]["pixels"] == 3 * 12 * 12
    code, out, err = cli(["encode", "--weights", str(weights), "--images", str(folder / "circle"),
                          "--out", str(tmp_path / "codes.npy")])
    assert code == 0, err
    assert np.load(tmp_path / "codes.npy").shape == (6, 2)
    code, out, err = cli(["generate", "--weights", str(weights), "-n", "3", "--out", str(tmp_path / "gen")])
    assert code == 0, err
    made = sorted((tmp_path / "gen").iterdir())
    assert len(made) == 3 and all(Image.open(p).mode == "RGB" and Image.open(p).size == (12, 12) for p in made)


def test_a_quarter_turn_in_exif_counts_in_the_folders_own_size(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(6):
        exif = Image.Exif()
        if i % 2:
            exif[images.EXIF_ORIENTATION] = 6  # shown turned a quarter: 30 wide, 40 high
        Image.new("RGB", (40, 30), (200, 20 * i, 0)).save(folder / f"{i}.jpg", exif=exif)
    layout = images.scan_folder(folder)
    assert images.folder_shape(layout) == (3, 28, 28)  # two sizes once turned upright: the fallback
    upright = images.read_image(folder / "1.jpg", (3, 40, 30))
    assert upright.shape == (3, 40, 30)


def test_convert_a_chunk_at_a_time_gives_the_same_images():
    x = torch.randint(0, 256, (7, 3, 9, 11), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for shape in ((1, 5, 6), (3, 9, 11), (3, 12, 4)):
        assert torch.equal(images.convert(x, shape, chunk=2), images.convert(x, shape, chunk=100))


def test_images_too_small_to_shift_ask_for_augment_0(cli, tmp_path):
    code, out, err = cli(["--dataset", "mnist-sample", "--mode", "clustering", "--image_size", "2", "--weights",
                          tmp_path / "w", *TINY])
    assert code == 2 and "images of 2x2 are too small to shift: pass --augment 0" in err
    assert not (tmp_path / "w").exists()
