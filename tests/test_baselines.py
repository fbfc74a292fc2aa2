"""The baselines beside a paper model's number: k-means on pixels, and the same network on the labels alone."""

import json
from pathlib import Path

import torch

import aae
import baselines
import main
import utils
from config import ModelConfig
from data import load_dataset

FIXTURES = Path(__file__).resolve().parent / "data" / "checkpoints"


def blobs(n_per, centres, generator, spread=0.1):
    points = torch.cat([c + spread * torch.randn(n_per, len(c), generator=generator) for c in centres])
    return points, torch.arange(len(centres)).repeat_interleave(n_per)


def test_kmeans_finds_separated_blobs_and_labels_them_by_majority():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]])
    (train_x, train_y), (test_x, test_y) = blobs(50, centres, g), blobs(20, centres, g)
    assert baselines.kmeans_error(train_x, train_y, test_x, test_y, k=4, seed=0) == 0.0
    # two clusters for four classes: each cluster is labelled with one class, so half the test points are wrong
    assert baselines.kmeans_error(train_x, train_y, test_x, test_y, k=2, seed=0) == 0.5


def test_kmeans_is_seeded_and_its_best_start_is_no_worse_than_one_start():
    x = torch.rand(300, 5, generator=torch.Generator().manual_seed(1))
    a = baselines.kmeans(x, 6, torch.Generator().manual_seed(3))
    b = baselines.kmeans(x, 6, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)

    def inertia(c):
        return float(baselines._squared_distances(x, c).min(1).values.sum())

    one = baselines.kmeans(x, 6, torch.Generator().manual_seed(3), restarts=1)
    assert inertia(a) <= inertia(one) + 1e-6


def test_the_labels_alone_network_learns_from_its_labels_and_leaves_the_callers_random_stream(dataset):
    cfg = ModelConfig(latent_dim=2, hidden_dim=32, dis_hidden_dim=32)
    state = torch.get_rng_state()
    every = baselines.labels_alone_error(dataset, dataset.train.labels, cfg, seed=0)
    assert torch.equal(state, torch.get_rng_state())  # its weights and dropout come from its own seed
    assert every == baselines.labels_alone_error(dataset, dataset.train.labels, cfg, seed=0)  # seeded
    few = aae.select_labels(dataset.train.labels, 10, 10, seed=0)  # one a class
    assert every < 0.5 < 0.9  # far below chance (0.9) with all 200 labels
    assert every <= baselines.labels_alone_error(dataset, few, cfg, seed=0)  # more labels, no worse


def test_evaluate_prints_and_saves_the_baseline_beside_the_models_number(idx_dir, tmp_path, capsys):
    weights = tmp_path / "w"
    weights.mkdir()
    (weights / "aae.pt").write_bytes((FIXTURES / "clustering.pt").read_bytes())
    data = ["--directory", str(idx_dir)]  # the synthetic digits the checkpoint was trained on
    assert main.main(["evaluate", "--weights", str(weights), "--out", str(tmp_path / "with"), *data]) == 0
    assert "baselines: kmeans_pixels_error" in capsys.readouterr().out
    saved = json.loads((tmp_path / "with" / "metrics.json").read_text())
    assert 0 <= saved["kmeans_pixels_error"] <= 1 and "test_cluster_error" in saved
    assert "kmeans_pixels_error" in (tmp_path / "with" / "report.md").read_text()
    assert main.main(["evaluate", "--weights", str(weights), "--out", str(tmp_path / "without"), *data,
                      "--baselines", "False"]) == 0
    assert "kmeans_pixels_error" not in json.loads((tmp_path / "without" / "metrics.json").read_text())


def test_evaluate_refuses_baselines_for_a_model_that_has_none(tmp_path, capsys):
    weights = tmp_path / "w"
    weights.mkdir()
    (weights / "aae.pt").write_bytes((FIXTURES / "unsupervised.pt").read_bytes())
    assert main.main(["evaluate", "--weights", str(weights), "--baselines", "True"]) == 2
    assert "has no baselines to measure: drop --baselines" in capsys.readouterr().err


def test_evaluate_clusters_a_plain_aaes_codes_too_when_given_one(idx_dir, tmp_path, capsys):
    weights, plain = tmp_path / "w", tmp_path / "plain"
    for folder, fixture in ((weights, "clustering.pt"), (plain, "unsupervised.pt")):
        folder.mkdir()
        (folder / "aae.pt").write_bytes((FIXTURES / fixture).read_bytes())
    argv = ["evaluate", "--weights", str(weights), "--directory", str(idx_dir), "--out", str(tmp_path / "e")]
    assert main.main([*argv, "--codes_of", str(plain)]) == 0
    saved = json.loads((tmp_path / "e" / "metrics.json").read_text())
    model, reference = utils.load_models(weights), utils.load_models(plain)
    data = load_dataset("mnist", idx_dir)
    expected = baselines.kmeans_error(reference.encode(data.train.images), data.train.labels,
                                      reference.encode(data.test.images), data.test.labels, model.n_categories, seed=0)
    assert saved["kmeans_codes_error"] == expected and "kmeans_pixels_error" in saved
    capsys.readouterr()
    assert main.main([*argv, "--codes_of", str(plain), "--baselines", "False"]) == 2  # nothing would read it
    assert "--codes_of gives k-means the codes of a plain AAE" in capsys.readouterr().err
    plain_argv = ["evaluate", "--weights", str(plain), "--directory", str(idx_dir), "--codes_of", str(plain)]
    assert main.main(plain_argv) == 2  # the plain AAE measures no such baseline
