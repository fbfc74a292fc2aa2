"""Shared fixtures: tiny synthetic data in the real IDX format, tiny models through the real configs."""

import sys
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import data  # noqa: E402
import main  # noqa: E402
import train  # noqa: E402
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


@pytest.fixture
def cli(capsys):
    """main.main in this process: cli(argv) -> (exit code, stdout, stderr), whether it returns or exits (argparse)."""

    def run(argv):
        try:
            code = main.main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(1)  # bit-identical runs and no oversubscription on 2 cores


class _ReplayingGraph:
    """Stands in for a CUDA graph on the CPU: a replay reruns the captured function into its output."""

    def __init__(self, fn):  # fn: a GraphedStep's _step, which returns one sum per column of its model's step
        self.fn, self.out = fn, torch.zeros(len(fn.__self__.model.columns), dtype=torch.float64)

    def replay(self):
        self.out.copy_(self.fn())


@pytest.fixture
def cpu_graphs(monkeypatch):
    """train.GraphedStep's plumbing (warm-up, static inputs, the models' draws, loss sums) runnable on the CPU."""
    monkeypatch.setattr(torch.cuda, "Stream", lambda device: SimpleNamespace(wait_stream=lambda other: None))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device: SimpleNamespace(wait_stream=lambda other: None))
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: nullcontext())
    captured = []

    def capture(fn):
        captured.append(_ReplayingGraph(fn))
        return captured[-1], captured[-1].out

    monkeypatch.setattr(train, "capture", capture)
    return captured
