"""Shared fixtures: tiny synthetic data in the real IDX format, tiny models through the real configs."""

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import data  # noqa: E402
from models import ModelConfig  # noqa: E402
from train import TrainConfig  # noqa: E402


@pytest.fixture(scope="session")
def idx_dir(tmp_path_factory):
    """A folder with the four MNIST IDX .gz files: 200 train and 100 test synthetic digits."""
    folder = tmp_path_factory.mktemp("idx")
    data.write_synthetic_idx(folder, n_train=200, n_test=100, seed=0)
    return folder


@pytest.fixture(scope="session")
def dataset(idx_dir):
    return data.load_dataset("mnist", idx_dir, download=False)


@pytest.fixture
def tiny_model():
    return ModelConfig(latent_dim=2, hidden_dim=32, dis_hidden_dim=32)


@pytest.fixture
def tiny_train():
    return TrainConfig(epochs=2, batch_size=50, seed=0)


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(1)  # bit-identical runs and no oversubscription on 2 cores
