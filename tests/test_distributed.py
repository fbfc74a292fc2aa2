"""Training in two processes (gloo on the CPU), as torchrun runs it: one model, one set of files."""

import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import models
import train
import utils
from config import model_config_from
from data import load_dataset, to_float
from models import ONEDNN_MIN_WIDTH, ModelConfig
from train import Trainer, TrainConfig

ROOT = utils.Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="this torch build has no gloo backend")


def _train_on_rank(rank, world_size, store, idx_dir, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        wide = ONEDNN_MIN_WIDTH  # hidden layers through models.Linear's oneDNN products, as at full size
        trainer = Trainer(ModelConfig(latent_dim=2, hidden_dim=wide, dis_hidden_dim=wide),
                          TrainConfig(epochs=2, batch_size=25, seed=0), "cpu", rank=rank, world_size=world_size)
        initial = {k: v.clone() for k, v in trainer.model.encoder.state_dict().items()}
        lines, onednn_calls = [], []
        apply = models._OneDNNLinear.apply  # counted where a backward follows: training, not the test evaluation
        models._OneDNNLinear.apply = lambda *args: onednn_calls.append(torch.is_grad_enabled()) or apply(*args)
        trainer.fit(load_dataset("mnist", idx_dir), log=lines.append)
        nets = {name: net.state_dict() for name, net in trainer.model.nets.items()}
        torch.save({"nets": nets, "initial": initial, "lines": lines, "history": trainer.history,
                    "steps": trainer.step, "onednn_calls": sum(onednn_calls)}, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ranks_train_one_model_on_their_shards(idx_dir, tmp_path):
    mp.spawn(_train_on_rank, args=(2, tmp_path / "store", idx_dir, tmp_path), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert sorted(r0["nets"]) == ["decoder", "discriminator", "encoder"]
    for name in ("encoder", "decoder", "discriminator"):
        for key, value in r0["nets"][name].items():
            assert torch.equal(value, r1["nets"][name][key]), f"{name}.{key} differs between ranks"
    assert not torch.equal(r0["initial"]["net.0.weight"], r0["nets"]["encoder"]["net.0.weight"])  # it trained
    assert r0["steps"] == r1["steps"] == 2 * 4  # 200 images / 2 ranks / batch 25, per epoch
    without_time = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert without_time(r0["history"]) == without_time(r1["history"])  # epoch means averaged over all ranks
    assert len(r0["lines"]) == 2 and r1["lines"] == []  # only rank 0 logs
    if not models.onednn_available():
        pytest.skip("this torch build has no oneDNN: the ranks trained through torch's own products only")
    # the wide layers trained through oneDNN with their gradients averaged across the ranks
    assert r0["onednn_calls"] > 0 and r1["onednn_calls"] > 0


def test_torchrun_writes_one_set_of_files_that_load_models_reads(idx_dir, tmp_path):
    weights = tmp_path / "w"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "main.py", "--directory", str(idx_dir), "--epochs", "2", "--batch_size", "50", "--latent_dim", "2",
               "--device", "cpu", "--threads", "1", "--weights", str(weights)]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("epoch   1/2") == 1 and run.stdout.count("done:") == 1, run.stdout
    assert "x 2 processes" in run.stdout
    assert sorted(p.name for p in weights.iterdir()) == [  # and the lock file rank 0 held the folder by
        utils.LOCK_NAME, "aae.pt", "interpolation.png", "log.csv", "losses.png", "reconstructions.png", "samples",
        "samples.png"]
    assert len(utils.read_csv(weights / "log.csv")) == 2
    trained = utils.load_models(weights)  # saved unwrapped: a single process reads it
    assert trained.model_cfg.latent_dim == 2 and len(trained.history) == 2
    ckpt = utils.load_checkpoint(weights)
    assert not any(k.startswith("module.") for k in ckpt["encoder"])
    assert ckpt["step"] == 2 * 2  # 200 images / 2 ranks / batch 50, for 2 epochs
    resumed = Trainer(model_config_from(ckpt["model_config"]), TrainConfig(**ckpt["train_config"]), "cpu")
    resumed.load_state_dict(ckpt)  # and a single process can continue it
    assert resumed.epoch == 2


def test_shards_have_equal_length(tiny_model, dataset, monkeypatch):
    """Unequal shards would give ranks unequal step counts, and the longer one would wait forever."""
    monkeypatch.setattr(dist, "all_reduce", lambda tensor: None)  # no process group needed to count steps
    cfg = TrainConfig(epochs=1, batch_size=33, seed=0)
    steps = []
    for rank in (0, 1, 2):  # 200 images: shards of 67, 67 and 66 would take 3, 3 and 2 steps of 33
        t = Trainer(tiny_model, cfg, "cpu")
        t.rank, t.world_size = rank, 3
        t.train_batch = lambda images, index, sums: None
        t.run_epoch(dataset.train.images, lambda: False, train._no_progress)
        steps.append(t.step)
    assert steps == [2, 2, 2]  # 2 of the 200 images sit this epoch out


def _record_rows_on_rank(rank, world_size, store, idx_dir, out):
    """One epoch; every batch's rows (indices into the training images) that this rank's model.step receives."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        data = load_dataset("mnist", idx_dir)
        trainer = Trainer(ModelConfig(latent_dim=2, hidden_dim=32, dis_hidden_dim=32),
                          TrainConfig(epochs=1, batch_size=25, seed=0), "cpu", rank=rank, world_size=world_size)
        step, batches, images_match = trainer.model.step, [], []

        def recording_step(x, rows, draws, sums):
            batches.append(rows.clone())
            images_match.append(torch.equal(x, to_float(data.train.images[rows])))  # x is those rows' images
            return step(x, rows, draws, sums)

        trainer.model.step = recording_step
        trainer.fit(data, log=lambda line: None)
        torch.save({"batches": batches, "images_match": images_match, "n_train": len(data.train.images)},
                   out / f"rows{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ranks_batches_are_disjoint_and_together_cover_the_epoch(idx_dir, tmp_path):
    """Each rank trains on its own shard: were every rank to take rank 0's, the two would train on the same images
    twice and never see the other half."""
    mp.spawn(_record_rows_on_rank, args=(2, tmp_path / "store", idx_dir, tmp_path), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"rows{r}.pt", weights_only=True) for r in (0, 1))
    assert len(r0["batches"]) == len(r1["batches"]) == 4  # 200 images / 2 ranks / batch 25
    assert all(r0["images_match"]) and all(r1["images_match"])
    rows0, rows1 = torch.cat(r0["batches"]).tolist(), torch.cat(r1["batches"]).tolist()
    assert len(rows0) == len(set(rows0)) == len(rows1) == len(set(rows1)) == 100  # no image twice within a rank
    assert set(rows0).isdisjoint(rows1)  # nor one image on both ranks
    assert set(rows0) | set(rows1) == set(range(r0["n_train"]))  # and every one of the 200 trained on


def _train_categorical_on_rank(rank, world_size, store, idx_dir, out, mode, labels):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        data = load_dataset("mnist", idx_dir)
        trainer = Trainer(ModelConfig(latent_dim=2, hidden_dim=32, dis_hidden_dim=32, mode=mode, clusters=4),
                          TrainConfig(epochs=2, batch_size=25, seed=0, labels=labels), "cpu", data.train.labels,
                          rank=rank, world_size=world_size)
        initial = {name: {k: v.clone() for k, v in net.state_dict().items()}
                   for name, net in trainer.model.nets.items()}
        trainer.fit(data, log=lambda line: None)
        nets = {name: net.state_dict() for name, net in trainer.model.nets.items()}
        torch.save({"nets": nets, "initial": initial, "history": trainer.history, "steps": trainer.step,
                    "columns": list(trainer.model.columns)}, out / f"{mode}{rank}.pt")
    finally:
        dist.destroy_process_group()


PLAIN_NETS, CATEGORICAL_NETS = ["decoder", "discriminator", "encoder"], ["decoder", "discriminator", "discriminator_y",
                                                                          "encoder"]


@pytest.mark.parametrize("mode, labels, nets", [("clustering", -1, CATEGORICAL_NETS),
                                                ("semi_supervised", 100, CATEGORICAL_NETS),
                                                ("dim_reduction", 100, CATEGORICAL_NETS),
                                                ("supervised", -1, PLAIN_NETS)])
def test_each_paper_model_trains_one_model_on_both_ranks(idx_dir, tmp_path, mode, labels, nets):
    """Their phases run the networks' other methods too (a category head, a style head, a label beside the code):
    every optimiser's gradients are averaged across the ranks all the same, so both ranks hold the same weights."""
    mp.spawn(_train_categorical_on_rank, args=(2, tmp_path / "store", idx_dir, tmp_path, mode, labels), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"{mode}{r}.pt", weights_only=True) for r in (0, 1))
    assert sorted(r0["nets"]) == nets
    for name, state in r0["nets"].items():
        for key, value in state.items():
            assert torch.equal(value, r1["nets"][name][key]), f"{name}.{key} differs between ranks"
            if key != "head_scale":  # dim_reduction's fixed scale of its cluster heads, a buffer
                assert not torch.equal(value, r0["initial"][name][key]), f"{name}.{key} did not train"
    assert ("classification_loss" in r0["columns"]) == (labels > 0)
    assert r0["steps"] == r1["steps"] == 2 * 4  # 200 images / 2 ranks / batch 25, per epoch
    without_time = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert without_time(r0["history"]) == without_time(r1["history"]) and len(r0["history"]) == 2
