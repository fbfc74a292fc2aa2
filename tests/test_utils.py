"""Atomic saves, checkpoint loading with clear errors, load_models and the pictures."""

import errno
import os

import pytest
import torch

import data
import plots
import utils
from train import Trainer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, dataset):
    from models import ModelConfig
    from train import TrainConfig

    torch.set_num_threads(1)
    t = Trainer(ModelConfig(latent_dim=2, hidden_dim=32, dis_hidden_dim=32), TrainConfig(epochs=2, batch_size=50), "cpu")
    t.fit(dataset, log=lambda line: None)
    path = tmp_path_factory.mktemp("weights") / utils.CHECKPOINT_NAME
    utils.save_checkpoint(t.state_dict(), path)
    return path, t


def test_load_models_reproduces_the_trained_networks(checkpoint, dataset):
    path, t = checkpoint
    trained = utils.load_models(path.parent)  # a folder works as well as the file
    assert not trained.encoder.training and not trained.decoder.training and not trained.discriminator.training
    x = dataset.test.images[:20].unsqueeze(1).float() / 255
    t.model.eval()
    with torch.no_grad():
        z = trained.encoder(x)
        assert z.shape == (20, 2)
        assert torch.equal(z, t.model.encoder(x))
        assert torch.equal(trained.encoder(x.flatten(1)), z)  # [N, 784] is accepted too
        images = trained.decoder(z)
        assert images.shape == (20, 1, 28, 28) and images.min() >= 0 and images.max() <= 1
        assert torch.equal(images, t.model.decoder(z))
        assert torch.equal(trained.discriminator(z), t.model.discriminator(z))
    assert trained.model_cfg.latent_dim == 2 and trained.train_cfg.prior_std == 5.0


def test_sample_prior_follows_the_saved_prior(checkpoint):
    trained = utils.load_models(checkpoint[0])
    z = trained.sample_prior(20000, generator=torch.Generator().manual_seed(0))
    assert z.shape == (20000, 2)
    assert abs(z.std().item() - 5.0) < 0.1


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "aae.pt"
    utils.save_checkpoint({"a": torch.ones(3)}, path)
    before = path.read_bytes()

    def disk_full(obj, f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(utils.SaveError, match="no space left"):
        utils.save_checkpoint({"a": torch.zeros(3)}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["aae.pt"]  # no temp file left behind


def test_unwritable_weights_folder_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a regular file, not a folder")
    with pytest.raises(utils.SaveError, match="not writable"):
        utils.check_writable(blocker / "weights")


@pytest.mark.parametrize(
    "name, make, message",
    [
        ("missing", None, "no checkpoint"),
        ("empty", lambda p, good: p.write_bytes(b""), "is empty"),
        ("truncated", lambda p, good: p.write_bytes(good[: len(good) // 2]), "not a readable checkpoint"),
        ("garbage", lambda p, good: p.write_bytes(os.urandom(4096)), "not a readable checkpoint"),
        ("other torch file", lambda p, good: torch.save({"weights": torch.ones(2)}, p), "not an AAE checkpoint"),
        ("a list", lambda p, good: torch.save([1, 2], p), "not an AAE checkpoint"),
    ],
)
def test_unusable_checkpoints_get_a_clear_message(tmp_path, checkpoint, name, make, message):
    good = checkpoint[0].read_bytes()
    path = tmp_path / "aae.pt"
    if make:
        make(path, good)
    with pytest.raises(utils.CheckpointError, match=message) as err:
        utils.load_models(path)
    assert "\n" not in str(err.value)


def test_wrong_shapes_get_a_clear_message(tmp_path, checkpoint):
    ckpt = torch.load(checkpoint[0], weights_only=True)
    ckpt["model_config"]["latent_dim"] = 3  # config and tensors disagree
    utils.save_checkpoint(ckpt, tmp_path / "aae.pt")
    with pytest.raises(utils.CheckpointError, match="do not fit"):
        utils.load_models(tmp_path)


def test_interpolation_walks_between_the_end_codes(checkpoint, dataset, tmp_path, monkeypatch):
    trained = utils.load_models(checkpoint[0])
    seen = {}

    def spy(start, strips, end, path, _real=plots.interpolation_grid):
        seen.update(start=start, strips=strips, end=end)
        return _real(start, strips, end, path)

    monkeypatch.setattr(plots, "interpolation_grid", spy)
    test = data.Split(dataset.test.images[:4], dataset.test.labels[:4])
    trained.draw_interpolation(test, tmp_path / "i.png", n_pairs=2, steps=5)
    strips, start, end = seen["strips"], seen["start"], seen["end"]
    assert strips.shape == (2, 5, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(strips[:, 0], trained.decoder(trained.encoder(start)))
        assert torch.allclose(strips[:, -1], trained.decoder(trained.encoder(end)))


def test_pictures_read_stored_or_float_images_alike(checkpoint, dataset, tmp_path):
    # the data sets' uint8 [N, 28, 28], and floats [N, 1, 28, 28] or [N, 784] as the networks take them
    trained = utils.load_models(checkpoint[0])
    stored = dataset.test.images[:40]
    floats = stored.unsqueeze(1).float() / 255
    for i, images in enumerate((stored, floats, floats.flatten(1))):
        trained.draw_interpolation(data.Split(images, dataset.test.labels[:40]), tmp_path / f"i{i}.png",
                                   n_pairs=3, steps=4)
        plots.reconstruction_grid(floats[:20], trained.reconstruct(images[:20]).cpu(), tmp_path / f"r{i}.png")
    for name in ("i", "r"):
        assert (tmp_path / f"{name}0.png").read_bytes() == (tmp_path / f"{name}1.png").read_bytes() == (
            tmp_path / f"{name}2.png").read_bytes()


def test_pictures_are_written(checkpoint, dataset, tmp_path):
    from PIL import Image

    trained = utils.load_models(checkpoint[0])
    written = trained.pictures(dataset, tmp_path, ("interpolation", "samples", "reconstructions", "losses"),
                               n_pairs=3, steps=6, classes=(1, 7))
    names = ("interpolation.png", "samples.png", "reconstructions.png", "losses.png")
    assert sorted(p.name for p in written) == sorted(names)
    sizes = {name: Image.open(tmp_path / name).size for name in names}
    assert sizes["interpolation.png"] == (8 * 30 + 2, 3 * 30 + 2)  # 6 steps + 2 real ends per row, 28px + 2px padding
    assert sizes["samples.png"] == (10 * 30 + 2, 10 * 30 + 2)  # 100 prior draws, 10 a row
    assert sizes["reconstructions.png"] == (10 * 30 + 2, 10 * 30 + 2)  # 50 test images over their reconstructions
    assert sizes["losses.png"][0] > 300


def test_csv_round_trip(tmp_path):
    rows = [{"epoch": 1, "recon_loss": 2.5}, {"epoch": 2, "recon_loss": 1.5, "parzen": 3.0}]
    utils.write_csv(rows, tmp_path / "log.csv")
    back = utils.read_csv(tmp_path / "log.csv")
    assert back[1] == {"epoch": 2.0, "recon_loss": 1.5, "parzen": 3.0}
    assert back[0]["epoch"] == 1.0
