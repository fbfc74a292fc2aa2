"""--tensorboard: the event files a run writes, read back; steps that continue across a resume; no tensorboard."""

import io
import sys
from dataclasses import replace

import pytest
import torch

import dashboard
import main
from config import ModelConfig
from train import Trainer

EventAccumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator").EventAccumulator
EventFileLoader = pytest.importorskip("tensorboard.backend.event_processing.event_file_loader").EventFileLoader
HPARAMS = {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"}


def read(folder):
    """{tag: [steps]} of every scalar, image and histogram in the folder's event files, and the plugins used."""
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "histograms": 0})
    events.Reload()
    tags = events.Tags()
    steps = {tag: [e.step for e in events.Scalars(tag)] for tag in tags["scalars"]}
    steps.update({tag: [e.step for e in events.Images(tag)] for tag in tags["images"]})
    steps.update({tag: [e.step for e in events.Histograms(tag)] for tag in tags["histograms"]})
    return steps, events.PluginTagToContent("hparams")


def settings_written(folder):
    """How many times the event files hold the run's settings."""
    return sum(value.tag == "_hparams_/experiment" for path in folder.glob("events.out.tfevents.*")
               for event in EventFileLoader(str(path)).Load() for value in event.summary.value)


def fit(trainer, dataset, folder, every=2):
    board = dashboard.Dashboard(folder, trainer, dataset.test, every=every)
    trainer.fit(dataset, log=lambda line: None, watch=board)
    board.close()
    return trainer


def test_a_run_writes_every_phase_its_epochs_pictures_codes_and_settings(dataset, tiny_train, tmp_path):
    model_cfg = ModelConfig(latent_dim=2, hidden_dim=32, dis_hidden_dim=32, mode="clustering", clusters=4)
    trainer = fit(Trainer(model_cfg, replace(tiny_train, dis_lr=8e-4), "cpu"), dataset, tmp_path)
    steps, hparams = read(tmp_path)
    per_epoch = len(dataset.train.images) // tiny_train.batch_size  # 4 steps an epoch, 2 epochs
    every_second = list(range(2, 2 * per_epoch + 1, 2))
    for column in trainer.model.columns:  # every phase of the clustering model, its consistency phase included
        assert steps[f"loss/{column}"] == every_second, column
    assert "loss/consistency_loss" in steps and "loss/gen_y_loss" in steps
    for column in ("recon_loss", "disc_y_loss", "test_recon_bce", "seconds"):
        assert steps[f"epoch/{column}"] == [per_epoch, 2 * per_epoch], column
    for tag in ("images/samples", "images/reconstructions", "codes/test", "codes/prior"):
        assert steps[tag] == [per_epoch, 2 * per_epoch], tag
    assert set(hparams) == HPARAMS and settings_written(tmp_path) == 1
    # the first logged recon loss is the mean of steps 1-2 in nats per image, as log.csv's epoch mean is
    assert 100 < trainer.history[0]["recon_loss"] < 1000


def test_a_resumed_run_continues_its_steps_and_writes_its_settings_once(dataset, tiny_model, tiny_train, tmp_path):
    first = fit(Trainer(tiny_model, replace(tiny_train, epochs=1), "cpu"), dataset, tmp_path)
    state = io.BytesIO()
    torch.save(first.state_dict(), state)
    state.seek(0)
    resumed = Trainer(tiny_model, tiny_train, "cpu")
    resumed.load_state_dict(torch.load(state, weights_only=True))
    fit(resumed, dataset, tmp_path)
    steps, hparams = read(tmp_path)
    assert steps["loss/recon_loss"] == [2, 4, 6, 8]  # 4 steps an epoch: no step twice, none missing
    assert steps["epoch/test_recon_bce"] == [4, 8]
    assert set(hparams) == HPARAMS and settings_written(tmp_path) == 1  # by the first run, not again


def test_without_the_tensorboard_package_a_run_is_refused_with_how_to_install_it(dataset, tiny_model, tiny_train,
                                                                                monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # importing it raises ImportError
    with pytest.raises(ImportError, match="--tensorboard needs the tensorboard package: pip install tensorboard"):
        dashboard.Dashboard(tmp_path, Trainer(tiny_model, tiny_train, "cpu"), dataset.test)
    assert not any(tmp_path.iterdir())


def test_the_command_line_writes_into_the_weights_folder_and_refuses_before_any_work(idx_dir, tmp_path, capsys,
                                                                                    monkeypatch):
    weights = tmp_path / "w"
    common = ["--directory", str(idx_dir), "--weights", str(weights), "--latent_dim", "2", "--tensorboard_every", "2"]
    assert main.main([*common, "--epochs", "1", "--tensorboard"]) == 0
    assert f"tensorboard --logdir {weights / 'tensorboard'}" in capsys.readouterr().out
    assert main.main([*common, "--epochs", "2", "--resume", "--tensorboard"]) == 0
    steps, _ = read(weights / "tensorboard")
    assert steps["loss/recon_loss"] == [2, 4] and steps["epoch/test_recon_bce"] == [2, 4]  # 2 steps an epoch

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # importing it raises ImportError
    fresh = tmp_path / "fresh"
    assert main.main(["--directory", str(idx_dir), "--weights", str(fresh), "--tensorboard", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --tensorboard needs the tensorboard package: pip install tensorboard"
    assert not fresh.exists() or not any(fresh.iterdir())
