"""Training on real digits: the embedded MNIST sample always, Fashion-MNIST where it is installed."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch

import data
from models import ModelConfig
from train import TrainConfig, Trainer

FASHION = Path("/usr/share/datasets/fashion-mnist")

pytestmark = pytest.mark.realdata


def untrained_and_trained(dataset, epochs):
    torch.set_num_threads(2)
    t = Trainer(ModelConfig(), TrainConfig(epochs=epochs, seed=0), "cpu")
    untrained = t.model.test_reconstruction(dataset.test.images)
    t.fit(dataset, log=print)
    return untrained, t


def test_mnist_sample_reconstruction_improves_well_past_untrained():
    ds = data.load_dataset("mnist-sample", None)
    untrained, t = untrained_and_trained(ds, epochs=3)
    trained = t.history[-1]["test_recon_bce"]
    # an untrained decoder outputs ~0.5 everywhere: 784 * log 2 = 543 nats; the mean image is ~200
    assert untrained > 500
    assert trained < 0.5 * untrained
    assert t.history[-1]["test_recon_bce"] < t.history[0]["test_recon_bce"]
    with torch.no_grad():  # the codes have not collapsed: their spread is of the prior's order
        t.model.encoder.eval()
        codes = t.model.encoder(data.to_float(ds.test.images))
    assert codes.std(0).mean() > 0.2 * t.cfg.prior_std


@pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").exists(),
                    reason="Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist")
def test_fashion_mnist_one_epoch_on_20k_images():
    ds = data.load_dataset("fashion-mnist", FASHION)
    assert len(ds.train.images) == 60000 and len(ds.test.images) == 10000
    ds = replace(ds, train=data.Split(ds.train.images[:20000], ds.train.labels[:20000]),
                 test=data.Split(ds.test.images[:2000], ds.test.labels[:2000]))
    untrained, t = untrained_and_trained(ds, epochs=1)
    assert t.history[-1]["test_recon_bce"] < 0.6 * untrained
