"""Bad inputs thrown at the entry points: weights files, contradicting resumes, divergence, full disks,
and (with hypothesis) random flags and garbled IDX and checkpoint files.

Every bad input must give one line on stderr, a non-zero exit code, no traceback, and leave an
existing checkpoint byte for byte as it was. docs/bad_inputs.md lists the messages.

    .venv/bin/python -m pytest tests/test_robustness.py -q
"""

import errno
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import data
import main
import train
import utils
from train import Trainer, TrainConfig

CUDA_CHECKPOINT = Path(__file__).resolve().parent / "data" / "cuda_checkpoint.pt"


def run_main(argv, capsys):
    """main.main in this process: (exit code, stdout, stderr), whether it returns or exits."""
    try:
        code = main.main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, expected_code):
    assert code == expected_code, err
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith(("error:", "main.py")), err


@pytest.fixture(scope="module")
def tiny_run(idx_dir, tmp_path_factory):
    """A weights folder holding the checkpoint of one epoch of a tiny model, as main.py would leave it."""
    from models import ModelConfig

    torch.set_num_threads(1)
    cfg = TrainConfig(dataset="mnist", directory=str(idx_dir), epochs=1, batch_size=50)
    t = Trainer(ModelConfig(latent_dim=2, hidden_dim=32, dis_hidden_dim=32), cfg, "cpu")
    t.fit(data.load_dataset("mnist", idx_dir), log=lambda line: None)
    folder = tmp_path_factory.mktemp("tiny_run")
    utils.save_checkpoint(t.state_dict(), folder / utils.CHECKPOINT_NAME)
    return folder


@pytest.fixture
def weights(tiny_run, tmp_path):
    folder = tmp_path / "w"
    shutil.copytree(tiny_run, folder)
    return folder


# -- resume ----------------------------------------------------------------------------------------


def test_resume_through_main_continues_exactly_with_the_saved_sizes(weights, dataset, idx_dir, capsys):
    # the tiny checkpoint's hidden sizes are not main.py's defaults: resume must rebuild from the file
    code, out, err = run_main(["--weights", weights, "--resume", "--epochs", "2"], capsys)
    assert code == 0, err
    resumed = utils.load_checkpoint(weights)

    from models import ModelConfig

    straight = Trainer(ModelConfig(latent_dim=2, hidden_dim=32, dis_hidden_dim=32),
                       TrainConfig(dataset="mnist", directory=str(idx_dir), epochs=2, batch_size=50), "cpu")
    straight.fit(dataset, log=lambda line: None)
    expected = straight.state_dict()
    for net in ("encoder", "decoder", "discriminator"):
        for k, v in expected[net].items():
            assert torch.equal(v, resumed[net][k]), f"{net}.{k}"
    for name, opt in expected["optimizers"].items():
        for pid, state in opt["state"].items():
            for k, v in state.items():
                assert torch.equal(v, resumed["optimizers"][name]["state"][pid][k]), f"{name} {pid}.{k}"
    for k in ("torch", "data", "prior"):
        assert torch.equal(expected["rng"][k], resumed["rng"][k]), k
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(expected["history"]) == strip(resumed["history"])


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--dataset", "fashion-mnist"], ["--dataset fashion-mnist (checkpoint: mnist)"]),
        (["--latent_dim", "4"], ["--latent_dim 4 (checkpoint: 2)"]),
        (["--prior_std", "2"], ["--prior_std 2.0 (checkpoint: 5.0)"]),
        (["--batch_size", "10"], ["--batch_size 10 (checkpoint: 50)"]),
        (["--seed", "7"], ["--seed 7 (checkpoint: 0)"]),
        (["--gen_lr", "1e-3", "--dis_lr", "1e-3"], ["--gen_lr 0.001 (checkpoint: 0.0006)",
                                                    "--dis_lr 0.001 (checkpoint: 0.0008)"]),
    ],
)
def test_resume_refuses_flags_that_contradict_the_checkpoint(weights, flags, named, capsys):
    before = (weights / "aae.pt").read_bytes()
    code, out, err = run_main(["--weights", weights, "--resume", *flags], capsys)
    one_line_error(code, err, 2)
    for text in named:
        assert text in err
    assert (weights / "aae.pt").read_bytes() == before


def test_resume_on_other_data_mid_epoch_is_refused(weights, tmp_path, capsys):
    ckpt = utils.load_checkpoint(weights)
    ckpt["partial_epoch"] = {"data_rng": ckpt["rng"]["data"], "step_in_epoch": 3, "sums": torch.zeros(4, dtype=torch.float64)}
    utils.save_checkpoint(ckpt, weights / "aae.pt")
    small = data.write_synthetic_idx(tmp_path / "small", n_train=100, n_test=10)  # 2 steps an epoch, not 4
    code, out, err = run_main(["--weights", weights, "--resume", "--directory", small, "--epochs", "2"], capsys)
    one_line_error(code, err, 2)
    assert "step 3 of an epoch" in err and "2 steps an epoch" in err


# -- weights files that cannot be used -------------------------------------------------------------


def edit(change):
    """A maker that loads the good checkpoint, applies `change` to the dict and saves it back."""

    def make(path):
        ckpt = torch.load(path, weights_only=True)
        change(ckpt)
        torch.save(ckpt, path)

    return make


BAD_WEIGHTS = {  # name: (how to spoil weights/aae.pt, text of the message; for draw and for --resume)
    "missing": (lambda p: p.unlink(), "no checkpoint at"),
    "empty": (lambda p: p.write_bytes(b""), "is empty"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:5000]), "not a readable checkpoint"),
    "random bytes": (lambda p: p.write_bytes(os.urandom(5000)), "not a readable checkpoint"),
    "a text file": (lambda p: p.write_text("epoch,loss\n1,2\n"), "not a readable checkpoint"),
    "a pickled object": (lambda p: torch.save({"f": shutil.copy}, p, _use_new_zipfile_serialization=True),
                         "not a readable checkpoint"),  # weights_only refuses code
    "another torch file": (lambda p: torch.save({"weights": torch.ones(2)}, p), "not an AAE checkpoint"),
    "format 99": (edit(lambda c: c.update(format_version=99)), "format 99"),
    "latent_dim does not fit the tensors": (edit(lambda c: c["model_config"].update(latent_dim=3)),
                                            "encoder weights do not fit"),
    "hidden_dim 10**9 (no memory must be taken)": (edit(lambda c: c["model_config"].update(hidden_dim=10**9)),
                                                   "encoder weights do not fit"),
    "negative latent_dim": (edit(lambda c: c["model_config"].update(latent_dim=-3)), "cannot be built"),
    "model_config a string": (edit(lambda c: c.update(model_config="big")), "model_config is not a dict"),
    "encoder a list": (edit(lambda c: c.update(encoder=[1, 2])), "encoder weights do not fit"),
    "a tensor missing": (edit(lambda c: c["decoder"].pop("net.0.weight")), "no tensor net.0.weight"),
}


@pytest.mark.parametrize("name", BAD_WEIGHTS)
@pytest.mark.parametrize("command", ["draw", "resume"])
def test_unusable_weights_files_get_one_line_and_exit_1(weights, tmp_path, name, command, capsys):
    spoil, message = BAD_WEIGHTS[name]
    spoil(weights / "aae.pt")
    before = (weights / "aae.pt").read_bytes() if (weights / "aae.pt").exists() else None
    argv = (["draw", "samples", "--weights", weights, "--out", tmp_path / "pics"] if command == "draw"
            else ["--weights", weights, "--resume", "--epochs", "2"])
    code, out, err = run_main(argv, capsys)
    one_line_error(code, err, 1)
    assert message in err
    after = (weights / "aae.pt").read_bytes() if (weights / "aae.pt").exists() else None
    assert after == before and not (tmp_path / "pics").exists()


@pytest.mark.parametrize(
    "spoil, message",
    [
        (lambda c: c.pop("optimizers"), "missing 'optimizers'"),
        (lambda c: c.pop("rng"), "missing 'rng'"),
        (lambda c: c["train_config"].update(batch_size="abc"), "batch_size = 'abc', which --batch_size refuses"),
        (lambda c: c["train_config"].update(dataset="cifar"), "dataset = 'cifar', which --dataset refuses"),
    ],
)
def test_weights_without_a_training_state_draw_but_do_not_resume(weights, tmp_path, spoil, message, capsys):
    edit(spoil)(weights / "aae.pt")
    before = (weights / "aae.pt").read_bytes()
    code, out, err = run_main(["--weights", weights, "--resume", "--epochs", "2"], capsys)
    one_line_error(code, err, 1)
    assert message in err and (weights / "aae.pt").read_bytes() == before
    assert run_main(["draw", "samples", "--weights", weights, "--out", tmp_path], capsys)[0] == 0


def test_a_checkpoint_saved_on_a_gpu_loads_and_resumes_on_the_cpu(tmp_path, capsys):
    # tests/data/cuda_checkpoint.pt was written by train.Trainer on an NVIDIA H200 (torch 2.11, CUDA 13):
    # a tiny model stopped at step 5 of epoch 2 of 2000 synthetic digits, every tensor saved on cuda:0.
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):  # the file really asks for CUDA storage
            torch.load(CUDA_CHECKPOINT, weights_only=True)
    trained = utils.load_models(CUDA_CHECKPOINT)
    assert next(trained.encoder.parameters()).device.type == "cpu"
    x = torch.rand(3, 1, 28, 28)
    assert trained.decoder(trained.encoder(x)).shape == (3, 1, 28, 28)

    shutil.copy(CUDA_CHECKPOINT, tmp_path / "aae.pt")
    idx = data.write_synthetic_idx(tmp_path / "idx", n_train=2000, n_test=100)  # the data it was trained on
    code, out, err = run_main(["--weights", tmp_path, "--resume", "--directory", idx, "--device", "cpu"], capsys)
    assert code == 0, err
    assert "resuming from epoch 1 (mid-epoch)" in out
    ckpt = utils.load_checkpoint(tmp_path)
    assert ckpt["epoch"] == 2 and ckpt["step"] == 40 and ckpt["partial_epoch"] is None
    assert ckpt["encoder"]["net.0.weight"].device.type == "cpu"


# -- faults during training ------------------------------------------------------------------------


def nan_from_call(monkeypatch, calls):
    """Make the generator phase's loss NaN from its `calls`-th call on."""
    real, count = train.generator_phase, [0]

    def phase(*args, **kwargs):
        count[0] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if count[0] >= calls else loss

    monkeypatch.setattr(train, "generator_phase", phase)


def test_non_finite_loss_exits_3_naming_phase_and_epoch_and_keeps_the_checkpoint(weights, monkeypatch, capsys):
    before = (weights / "aae.pt").read_bytes()
    log = (weights / "log.csv").read_bytes() if (weights / "log.csv").exists() else None
    nan_from_call(monkeypatch, 1)
    code, out, err = run_main(["--weights", weights, "--resume", "--epochs", "3"], capsys)
    one_line_error(code, err, 3)
    assert "the generator loss became non-finite in epoch 2" in err
    assert f"the checkpoint in {weights}/ is from epoch 1, the last good one" in err
    assert (weights / "aae.pt").read_bytes() == before
    assert ((weights / "log.csv").read_bytes() if (weights / "log.csv").exists() else None) == log


def test_non_finite_loss_in_a_fresh_run_says_nothing_was_saved(idx_dir, tmp_path, monkeypatch, capsys):
    nan_from_call(monkeypatch, 1)
    code, out, err = run_main(["--directory", idx_dir, "--weights", tmp_path / "w", "--latent_dim", "2",
                               "--batch_size", "100", "--epochs", "2"], capsys)
    one_line_error(code, err, 3)
    assert "in epoch 1" in err and "no checkpoint was saved" in err
    assert not (tmp_path / "w" / "aae.pt").exists()


def test_a_full_disk_while_training_exits_1_and_keeps_the_previous_checkpoint(weights, monkeypatch, capsys):
    before = (weights / "aae.pt").read_bytes()

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_full)
    code, out, err = run_main(["--weights", weights, "--resume", "--epochs", "2"], capsys)
    one_line_error(code, err, 1)
    assert f"could not write {weights / 'aae.pt'}: no space left on the device" in err
    assert (weights / "aae.pt").read_bytes() == before
    assert not [p.name for p in weights.iterdir() if p.name.startswith(".")]  # no temp file left


def test_weights_folder_that_is_a_file_is_refused(tmp_path, idx_dir, capsys):
    (tmp_path / "w").write_text("not a folder")
    code, out, err = run_main(["--directory", idx_dir, "--weights", tmp_path / "w", "--epochs", "1"], capsys)
    one_line_error(code, err, 1)
    assert "is not writable" in err and (tmp_path / "w").read_text() == "not a folder"
