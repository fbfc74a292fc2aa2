"""The evaluate command: its protocol, every file the report promises, its errors, --eval_every."""

import json
import sys
from dataclasses import replace

import pytest
import torch
from PIL import Image

import baselines
import data
import evaluate
import main
import metrics
import plots
import utils
from models import ModelConfig
from train import TrainConfig, Trainer


@pytest.fixture(scope="module")
def weights(tmp_path_factory, idx_dir, dataset):
    """A tiny 2-epoch checkpoint whose train_config names the synthetic data, evaluated after each epoch."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("weights")
    t = Trainer(ModelConfig(latent_dim=3, hidden_dim=32, dis_hidden_dim=32),
                TrainConfig(epochs=2, batch_size=50, directory=str(idx_dir)), "cpu")
    small = replace(evaluate.TRAINING_EVAL, parzen_samples=100, parzen_validation=50, mmd_points=100)
    t.fit(dataset, log=lambda line: None, evaluate=lambda t: evaluate.evaluate_trainer(t, dataset, small))
    utils.save_checkpoint(t.state_dict(), folder / utils.CHECKPOINT_NAME)
    return folder


PNGS = ("reconstructions.png", "samples.png", "interpolation.png", "latent.png", "losses.png", "eval_curves.png")


def spy_on_metrics(monkeypatch):
    """What each metrics.* function returned, by name, while the spy is in place."""
    returned = {}
    for name in ("parzen_estimate", "reconstruction_errors", "knn_accuracy", "mmd", "moment_match"):
        def spy(*args, _real=getattr(metrics, name), _name=name, **kwargs):
            returned[_name] = _real(*args, **kwargs)
            return returned[_name]

        monkeypatch.setattr(metrics, name, spy)
    return returned


def test_evaluate_writes_every_promised_file(weights, dataset, tmp_path, capsys, monkeypatch):
    out = tmp_path / "report"
    returned = spy_on_metrics(monkeypatch)
    assert main.main(["evaluate", "--weights", str(weights), "--out", str(out), "--samples", "300"]) == 0
    printed = capsys.readouterr().out
    assert "Parzen log-likelihood" in printed and "340 ± 2" in printed and "evaluated in" in printed
    assert sorted(p.name for p in out.iterdir()) == sorted(("metrics.json", "report.md") + PNGS)

    results = json.loads((out / "metrics.json").read_text())
    # each scalar is the one its metrics.* function returned: a type check passed recon_bce and recon_mse swapped
    parzen, recon, moments = returned["parzen_estimate"], returned["reconstruction_errors"], returned["moment_match"]
    assert (results["parzen_ll"], results["parzen_sem"], results["parzen_sigma"]) == (
        parzen["mean"], parzen["sem"], parzen["sigma"])
    assert (results["recon_bce"], results["recon_mse"]) == (recon["bce"], recon["mse"])
    assert (results["knn_accuracy"], results["mmd"]) == (returned["knn_accuracy"], returned["mmd"])
    assert (results["code_mean_error"], results["code_std_error"]) == (
        moments["mean_abs_error"], moments["std_abs_error"])
    assert (results["code_mean"], results["code_std"]) == (moments["code_mean"], moments["code_std"])
    # and those functions saw the test images and their codes (the Parzen inputs: the protocol test below)
    trained = utils.load_models(weights)
    test_images = data.to_float(dataset.test.images)
    assert recon == metrics.reconstruction_errors(trained.encoder, trained.decoder, test_images)
    with torch.no_grad():
        assert moments == metrics.moment_match(trained.encoder(test_images), 0.0, 5.0)
    assert len(results["code_mean"]) == len(results["prior_std"]) == 3 and results["prior_std"] == [5.0] * 3
    assert results["protocol"]["parzen_samples"] == 300 and results["protocol"]["test_images"] == 100
    assert results["dataset"] == "mnist" and results["epochs"] == 2
    assert 0 <= results["knn_accuracy"] <= 1 and results["parzen_sem"] > 0
    assert float(results["parzen_sigma"]) in metrics.DEFAULT_SIGMAS.tolist()

    report = (out / "report.md").read_text()
    assert f"{results['parzen_ll']:.1f} ± {results['parzen_sem']:.1f}" in report
    assert "340 ± 2" in report and "Theis" in report
    for name in PNGS:
        assert f"]({name})" in report, name  # shown, with a relative link: the folder is self-contained
        width, height = Image.open(out / name).size
        assert width > 100 and height > 100, name


def test_report_goes_beside_the_weights_by_default(weights, capsys):
    # the checkpoint's train_config says where the data is: no --directory needed
    assert main.main(["evaluate", "--weights", str(weights / utils.CHECKPOINT_NAME), "--samples", "100"]) == 0
    assert (weights / "metrics.json").is_file() and (weights / "report.md").is_file()


def test_protocol_uses_last_training_images_for_sigma_and_whole_test_split(weights, dataset, monkeypatch):
    seen = {}

    def spy(samples, validation, test, **kwargs):
        seen.update(samples=samples, validation=validation, test=test)
        return dict(mean=0.0, sem=0.0, sigma=0.1, scores={0.1: 0.0})

    monkeypatch.setattr(metrics, "parzen_estimate", spy)
    trained = utils.load_models(weights)
    evaluate.evaluate_checkpoint(trained, dataset, evaluate.EvalConfig(parzen_samples=70, parzen_validation=40))
    assert seen["samples"].shape == (70, 784) and 0 <= seen["samples"].min() and seen["samples"].max() <= 1
    assert torch.equal(seen["validation"], data.to_float(dataset.train.images[-40:]))
    assert torch.equal(seen["test"], data.to_float(dataset.test.images))


def test_evaluation_is_deterministic(weights, dataset):
    trained = utils.load_models(weights)
    config = evaluate.EvalConfig(parzen_samples=100, mmd_points=100)
    a, b = (evaluate.evaluate_checkpoint(trained, dataset, config) for _ in range(2))
    a.pop("seconds"), b.pop("seconds")
    assert a == b


def test_moments_and_mmd_see_a_prior_mismatch(weights, dataset):
    trained = utils.load_models(weights)
    config = evaluate.EvalConfig(parzen_samples=50, mmd_points=100)
    before = evaluate.evaluate_checkpoint(trained, dataset, config)
    with torch.no_grad():  # shift every code by 3 prior stds along dimension 0
        trained.encoder.net[-1].bias[0] += 15.0
    after = evaluate.evaluate_checkpoint(trained, dataset, config)
    assert after["code_mean"][0] == pytest.approx(before["code_mean"][0] + 15.0, abs=1e-3)
    assert after["mmd"] > before["mmd"] + 0.05
    assert after["knn_accuracy"] == before["knn_accuracy"]  # a shift moves no neighbour


@pytest.mark.parametrize("dim, words", [(2, "the code itself"), (5, "principal axes")])
def test_latent_scatter_says_how_it_projected(tmp_path, dim, words):
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(300, dim, generator=g) * torch.arange(1, dim + 1)
    how = plots.draw_latent(codes, torch.arange(300) % 10, tmp_path / "l.png", prior=torch.randn(300, dim, generator=g))
    assert words in how and (tmp_path / "l.png").is_file()
    basis, _ = plots.project_2d(codes)
    if dim > 2:  # the two largest-variance axes of these codes are dimensions 5 and 4
        assert torch.allclose(basis.abs().argmax(0), torch.tensor([dim - 1, dim - 2]))


@pytest.mark.parametrize("argv, code, message", [
    (["--weights", "{tmp}/nothing"], 1, "no checkpoint"),
    (["--weights", "{weights}", "--directory", "{tmp}"], 1, "not found"),
    (["--weights", "{weights}", "--samples", "0"], 2, "--samples: must be at least 1"),
])
def test_user_errors_are_one_line(weights, tmp_path, capsys, argv, code, message):
    argv = [a.format(tmp=tmp_path, weights=weights) for a in argv]
    try:
        result = main.main(["evaluate", *argv])
    except SystemExit as e:  # argparse refuses bad flags by exiting
        result = e.code
    err = capsys.readouterr().err
    assert result == code and message in err and err.count("\n") == 1


def test_eval_every_logs_metrics_and_leaves_training_unchanged(idx_dir, tmp_path, capsys):
    common = ["--directory", str(idx_dir), "--epochs", "3", "--latent_dim", "2", "--batch_size", "50"]
    assert main.main(common + ["--weights", str(tmp_path / "plain")]) == 0
    assert main.main(common + ["--weights", str(tmp_path / "eval"), "--eval_every", "2"]) == 0
    assert "parzen_ll" in capsys.readouterr().out  # on the epoch's log line

    rows = utils.read_csv(tmp_path / "eval" / utils.LOG_NAME)
    evaluated = [r["epoch"] for r in rows if r["parzen_ll"] == r["parzen_ll"]]  # not NaN
    assert evaluated == [2, 3]  # every 2nd epoch, and the last
    assert all(key in rows[0] for key in evaluate.TRAINING_COLUMNS)
    # the evaluation draws from its own generators and restores train mode: the run is unchanged
    a = torch.load(tmp_path / "plain" / utils.CHECKPOINT_NAME, weights_only=True)
    b = torch.load(tmp_path / "eval" / utils.CHECKPOINT_NAME, weights_only=True)
    for net in ("encoder", "decoder", "discriminator"):
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k]), f"{net}.{k}"


def test_a_terminal_sees_how_long_the_evaluation_and_the_baseline_have_left(weights, dataset, monkeypatch, capsys):
    """On a terminal, evaluate's parts and the labels-alone baseline each draw a tqdm bar with the time left;
    into a file or a pipe (the tests' stderr), nothing."""
    trained = utils.load_models(weights)
    config = evaluate.EvalConfig(parzen_samples=70, parzen_validation=40)
    labels = torch.full_like(dataset.train.labels, -1)
    labels[:20] = dataset.train.labels[:20]
    evaluate.evaluate_checkpoint(trained, dataset, config)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(type(sys.stderr), "isatty", lambda self: True, raising=False)
    evaluate.evaluate_checkpoint(trained, dataset, config)
    baselines.labels_alone_error(dataset, labels, trained.model_cfg)
    err = capsys.readouterr().err
    assert "evaluate: parzen" in err and "evaluate: knn" in err and " left" in err
    assert "baseline: the network on the labels alone" in err and "step" in err
