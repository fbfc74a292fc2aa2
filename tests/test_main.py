"""The command line: flags, user errors with their messages and exit codes, and whole runs."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import commands
import config
import main
import train
import utils

ROOT = Path(__file__).resolve().parent.parent


def parse(*argv):
    return main.build_parser().parse_args(list(argv))


@pytest.mark.parametrize(
    "argv, expected",
    [
        ([], False),
        (["--download"], True),
        (["--download", "True"], True),
        (["--download", "true"], True),
        (["--download", "1"], True),
        (["--download", "yes"], True),
        (["--download", "False"], False),
        (["--download", "false"], False),
        (["--download", "0"], False),
        (["--download", "no"], False),
    ],
)
def test_download_flag(argv, expected):
    assert parse(*argv).download is expected


@pytest.mark.parametrize("argv", [["--no-download"], ["--download", "--no-download"]])
def test_no_download_is_gone_for_the_one_boolean_style(argv, capsys, tmp_path):
    # --no-download was removed: every boolean flag is --name [BOOL]; --download False says it
    with pytest.raises(SystemExit) as exit_:
        main.main(argv + ["--weights", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "unrecognized arguments: --no-download" in err and err.count("\n") == 1
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(
    "flags, dis_lr",
    [
        ([], 2e-4),
        (["--mode", "clustering"], 8e-4),  # the rate the paper's other models were tuned at
        (["--mode", "supervised"], 8e-4),
        (["--label_discriminator", "--prior", "mixture", "--latent_dim", "2"], 8e-4),
        (["--mode", "clustering", "--dis_lr", "3e-4"], 3e-4),  # typed: as typed
    ],
)
def test_discriminator_rate_defaults_to_the_models_own(flags, dis_lr):
    assert commands.configs_from(parse(*flags))[1].dis_lr == dis_lr


def test_original_flags_and_defaults():
    args = parse("--directory", "d", "--epochs", "3", "--batch_size", "16", "--gen_lr", "1e-3", "--dis_lr", "2e-3")
    assert (args.directory, args.epochs, args.batch_size, args.gen_lr, args.dis_lr) == ("d", 3, 16, 1e-3, 2e-3)
    d = parse()
    assert (d.epochs, d.batch_size, d.gen_lr, d.latent_dim, d.prior_std) == (100, 100, 6e-4, 8, 5.0)
    assert d.dis_lr is None and commands.configs_from(d)[1].dis_lr == 2e-4  # the plain AAE's default
    assert (d.dataset, d.weights, d.device, d.seed, d.resume) == ("mnist", "weights", "auto", 0, False)


def test_schedule_balance_and_confidence_flags_reach_the_training_config():
    cfg = commands.configs_from(parse())[1]
    assert (cfg.lr_decay, cfg.balance_weight, cfg.confidence_weight) == ("none", 0.4, 0.1)
    assert (cfg.augment, cfg.consistency_weight, cfg.consistency_threshold) == (2, 1.0, 0.0)
    cfg = commands.configs_from(parse("--augment", "0", "--consistency_weight", "3", "--consistency_threshold", "0.9"))[1]
    assert (cfg.augment, cfg.consistency_weight, cfg.consistency_threshold) == (0, 3.0, 0.9)
    cfg = commands.configs_from(parse("--lr_decay", "cosine", "--balance_weight", "0", "--confidence_weight", "0.5"))[1]
    assert (cfg.lr_decay, cfg.balance_weight, cfg.confidence_weight) == ("cosine", 0.0, 0.5)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "--epochs: must be at least 1"),
        (["--epochs", "-3"], "--epochs: must be at least 1"),
        (["--epochs", "ten"], "--epochs: expected a whole number"),
        (["--batch_size", "0"], "--batch_size: must be at least 1"),
        (["--gen_lr", "0"], "--gen_lr: must be a finite number > 0"),
        (["--gen_lr=-1e-3"], "--gen_lr: must be a finite number > 0"),
        (["--gen_lr", "-0.001"], "--gen_lr: must be a finite number > 0"),
        (["--dis_lr", "nan"], "--dis_lr: must be a finite number > 0"),
        (["--dis_lr", "inf"], "--dis_lr: must be a finite number > 0"),
        (["--dis_lr", "fast"], "--dis_lr: expected a number"),
        (["--dataset", "cifar"], "--dataset: invalid choice"),
        (["--download", "maybe"], "--download: expected True/False"),
        (["--prior_std", "0"], "--prior_std: must be a finite number > 0"),
        (["--latent_dim", "0"], "--latent_dim: must be at least 1"),
        (["--lr_decay", "step"], "--lr_decay: invalid choice"),
        (["--balance_weight", "-1"], "--balance_weight: must be a finite number >= 0"),
        (["--balance_weight", "nan"], "--balance_weight: must be a finite number >= 0"),
        (["--confidence_weight", "-0.5"], "--confidence_weight: must be a finite number >= 0"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_flags_are_refused_in_one_line_with_exit_2(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main.main(argv + ["--weights", str(tmp_path / "w")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "w").exists()  # refused before any work


def test_help_lists_the_commands_and_train_help_the_flags(capsys):
    assert main.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"    {command}  " in out for command in main.COMMANDS), out
    assert "--epochs EPOCHS" not in out and "--batch_size" not in out  # the flags are in train's own help
    with pytest.raises(SystemExit) as exit_:
        main.main(["train", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and out.startswith("usage: main.py train")
    assert "--epochs EPOCHS" in out and "(default: 100)" in out and "--download [BOOL]" in out


def test_missing_data_is_one_line_exit_1(tmp_path, capsys):
    code = main.main(["--directory", str(tmp_path), "--weights", str(tmp_path / "w"), "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and str(tmp_path) in err and "mnist-sample" in err


def test_download_failure_names_the_offline_options(tmp_path, capsys, monkeypatch):
    import torchvision
    import urllib.error

    class Offline:
        def __init__(self, *args, **kwargs):
            raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "MNIST", Offline)
    code = main.main(["--download", "True", "--directory", str(tmp_path / "data"), "--weights", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert "mnist-sample" in err and "fashion-mnist" in err


def test_weights_under_a_regular_file_is_refused_before_training(tmp_path, idx_dir, capsys):
    (tmp_path / "file").write_text("x")
    code = main.main(["--directory", str(idx_dir), "--weights", str(tmp_path / "file" / "w"), "--epochs", "1"])
    assert code == 1 and "not writable" in capsys.readouterr().err


def run_main(*argv, **kwargs):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *argv], capture_output=True, text=True,
                          env=env, cwd=kwargs.pop("cwd", ROOT), timeout=kwargs.pop("timeout", 300), **kwargs)


def test_one_epoch_through_main_py_writes_everything(idx_dir, tmp_path):
    weights = tmp_path / "w"
    result = run_main("--directory", str(idx_dir), "--epochs", "1", "--weights", str(weights), "--latent_dim", "2")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "epoch   1/1" in result.stdout
    summary = re.search(r"1 epoch, ([\d.]+) s in all .*peak memory: ([\d,]+) MB resident", result.stdout)
    assert summary and float(summary[1]) > 0 and 100 < int(summary[2].replace(",", "")) < 100_000, result.stdout
    for name in ("aae.pt", "log.csv", "interpolation.png", "samples.png", "reconstructions.png", "losses.png",
                 "samples/epoch_001.png"):
        assert (weights / name).is_file(), name
    rows = utils.read_csv(weights / "log.csv")
    assert len(rows) == 1 and rows[0]["epoch"] == 1 and rows[0]["test_recon_bce"] > 0
    trained = utils.load_models(weights)
    assert trained.model_cfg.latent_dim == 2 and trained.train_cfg.epochs == 1

    # draw, as a separate command, into another folder
    out = tmp_path / "pics"
    result = run_main("draw", "interpolation", "samples", "--weights", str(weights), "--out", str(out),
                      "--classes", "3", "8")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["interpolation.png", "samples.png"]


def test_resume_refuses_contradicting_flags(idx_dir, tmp_path, capsys):
    weights = str(tmp_path / "w")
    common = ["--directory", str(idx_dir), "--weights", weights, "--latent_dim", "2"]
    assert main.main(common + ["--epochs", "1"]) == 0
    capsys.readouterr()
    code = main.main(["--directory", str(idx_dir), "--weights", weights, "--resume", "--latent_dim", "4"])
    err = capsys.readouterr().err
    assert code == 2 and "--latent_dim 4 (checkpoint: 2)" in err and err.count("\n") == 1
    # flags not typed come from the checkpoint; --epochs may grow the run
    assert main.main(["--directory", str(idx_dir), "--weights", weights, "--resume", "--epochs", "2"]) == 0
    assert utils.load_models(weights).model_cfg.latent_dim == 2
    assert len(utils.read_csv(tmp_path / "w" / "log.csv")) == 2


def test_a_checkpoint_from_before_a_field_resumes_with_what_it_was_trained_with(idx_dir, tmp_path):
    weights = tmp_path / "w"
    assert main.main(["--directory", str(idx_dir), "--weights", str(weights), "--epochs", "1", "--mode", "clustering",
                      "--clusters", "4", "--latent_dim", "2"]) == 0
    ckpt = torch.load(weights / "aae.pt", weights_only=True)
    assert (ckpt["train_config"]["confidence_weight"], ckpt["train_config"]["augment"]) == (0.1, 2)
    for field in ("confidence_weight", "augment", "consistency_weight"):  # as written before each existed
        del ckpt["train_config"][field]
    utils.save_checkpoint(ckpt, weights / "aae.pt")
    actions = {a.dest: a for a in main.build_parser()._actions}
    args = commands.merge_resume(parse("--weights", str(weights), "--resume"), {}, ckpt, actions)
    resumed = commands.configs_from(args)[1]
    assert resumed.confidence_weight == config.UNSAVED_VALUES["confidence_weight"] == 0.0
    assert (resumed.augment, resumed.consistency_weight) == (0, 0.0)
    assert utils.load_models(weights).train_cfg.confidence_weight == 0.0
    assert utils.load_models(weights).train_cfg.augment == 0
    with pytest.raises(main.UsageError, match=r"--confidence_weight 1.0 \(checkpoint: 0.0\)"):
        commands.merge_resume(parse("--resume", "--confidence_weight", "1"), {"confidence_weight": 1.0}, ckpt,
                              actions)


def test_resume_from_nothing_says_so(tmp_path, capsys):
    assert main.main(["--weights", str(tmp_path / "w"), "--resume"]) == 1
    assert "no checkpoint" in capsys.readouterr().err


def test_sigterm_saves_and_resume_matches_an_uninterrupted_run(idx_dir, tmp_path):
    common = ["--directory", str(idx_dir), "--latent_dim", "2", "--batch_size", "10", "--epochs", "3"]
    straight = run_main(*common, "--weights", str(tmp_path / "a"))
    assert straight.returncode == 0, straight.stderr

    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *common, "--weights", str(tmp_path / "b")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    deadline = time.time() + 120
    while not (tmp_path / "b" / "aae.pt").exists() and time.time() < deadline:  # killed after epoch 1
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "--resume" in err and "Traceback" not in err

    resumed = run_main(*common, "--weights", str(tmp_path / "b"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(tmp_path / "a" / "aae.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "aae.pt", weights_only=True)
    for net in ("encoder", "decoder", "discriminator"):
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k]), f"{net}.{k}"
    for name, opt in a["optimizers"].items():
        for pid, state in opt["state"].items():
            for k, v in state.items():
                assert torch.equal(v, b["optimizers"][name]["state"][pid][k])
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])


@pytest.mark.parametrize("command", ["draw", "evaluate"])
def test_draw_and_evaluate_take_threads(command, tmp_path, monkeypatch, capsys):
    import torch

    asked = []
    monkeypatch.setattr(torch, "set_num_threads", asked.append)
    code = main.main([command, "--threads", "1", "--weights", str(tmp_path / "none")])
    assert asked == [1] and code == 1  # set before the missing checkpoint is reported
    assert str(tmp_path / "none") in capsys.readouterr().err


# -- refusals of flags the chosen model does not read (each: one line, exit 2, before any folder or data) ---


@pytest.fixture
def no_data_read(monkeypatch):
    """Reading the data set, or building a model to train, fails the test: a refusal comes before both."""
    import data

    def refuse(*args, **kwargs):
        raise AssertionError("the data was read before the refusal")

    def never_trains(*args, **kwargs):
        raise AssertionError("a model was built before the refusal")

    monkeypatch.setattr(commands, "load_dataset", refuse)
    monkeypatch.setattr(data, "load_dataset", refuse)
    monkeypatch.setattr(train.Trainer, "__init__", never_trains)


PLAIN = "the plain AAE (--mode unsupervised)"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--prior", "uniform", "--prior_std", "2"], f"error: {PLAIN} does not read --prior_std: drop it ("),
        (["--labels", "100"], f"error: {PLAIN} does not read --labels: drop it ("),
        (["--mode", "semi_supervised", "--labels", "100", "--clusters", "8"],
         "error: the semi-supervised AAE (--mode semi_supervised) does not read --clusters: drop it ("),
        (["--balance_weight", "0"], f"error: {PLAIN} does not read --balance_weight: drop it ("),
        (["--confidence_weight", "0.5"], f"error: {PLAIN} does not read --confidence_weight: drop it ("),
        (["--mode", "supervised", "--confidence_weight", "0"],
         "error: the supervised AAE (--mode supervised) does not read --confidence_weight: drop it ("),
        (["--label_discriminator", "--prior", "mixture", "--latent_dim", "2", "--balance_weight", "0.5"],
         "error: the label discriminator (--label_discriminator) does not read --balance_weight: drop it ("),
        (["--noise_dim", "4"], f"error: {PLAIN} does not read --noise_dim: drop it ("),
        (["--encoder", "gaussian", "--noise_dim", "4"], f"error: {PLAIN} does not read --noise_dim: drop it ("),
        (["--prior", "mixture"], "error: --prior mixture is 2-D: add --latent_dim 2, "),  # the 8-D default code
        (["--prior", "swiss_roll"], "error: --prior swiss_roll is 2-D: add --latent_dim 2, "),
    ],
)
def test_flags_the_model_does_not_read_are_refused_before_any_folder_or_data(argv, message, idx_dir, tmp_path,
                                                                            capsys, no_data_read):
    code = main.main(argv + ["--directory", str(idx_dir), "--weights", str(tmp_path / "w"), "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(message) and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert not (tmp_path / "w").exists()  # refused before the folder was made


@pytest.mark.parametrize(
    "argv",
    [
        ["--noise_dim", "4", "--encoder", "universal"],  # read with --encoder universal
        ["--prior_std", "2"],  # read with --prior gaussian (the default)
        ["--prior", "mixture", "--latent_dim", "2"],
        ["--mode", "clustering", "--clusters", "4", "--balance_weight", "0.5", "--confidence_weight", "0.5"],
        ["--mode", "semi_supervised", "--labels", "100"],
    ],
)
def test_flags_the_model_reads_pass_those_checks(argv, idx_dir, tmp_path, capsys, no_data_read):
    # the same kind of command lines, with flags the model reads, get past every flag check to the data
    with pytest.raises(AssertionError, match="the data was read"):
        main.main(argv + ["--directory", str(idx_dir), "--weights", str(tmp_path / "w"), "--epochs", "1"])
    assert capsys.readouterr().err == ""


@pytest.fixture
def supervised_checkpoint(tmp_path):
    """A 1-epoch checkpoint of the supervised AAE, which draws no interpolation."""
    import shutil

    (tmp_path / "w").mkdir()
    shutil.copy(ROOT / "tests" / "data" / "checkpoints" / "supervised.pt", tmp_path / "w" / "aae.pt")
    return tmp_path / "w"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["samples", "--pairs", "2"], "error: --pairs is for the interpolation picture, which the supervised AAE "
                                      "(--mode supervised) does not draw: drop it"),
        (["samples", "--steps", "4"], "error: --steps is for the interpolation picture, which the supervised AAE "
                                      "(--mode supervised) does not draw: drop it"),
        (["--classes", "3", "8"], "error: --classes is for the interpolation picture, which the supervised AAE "
                                  "(--mode supervised) does not draw: drop it"),
        (["interpolation"], "error: the supervised AAE (--mode supervised) has no 'interpolation' picture; "
                            "choose from all, "),
    ],
)
def test_draw_refuses_interpolation_flags_on_a_model_without_interpolation(argv, message, supervised_checkpoint,
                                                                            tmp_path, capsys, no_data_read):
    code = main.main(["draw", *argv, "--weights", str(supervised_checkpoint), "--out", str(tmp_path / "pics")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(message) and err.count("\n") == 1, err
    assert not (tmp_path / "pics").exists()
    assert sorted(p.name for p in supervised_checkpoint.iterdir()) == ["aae.pt"]  # nothing drawn beside it


def test_a_second_run_into_a_folder_a_live_run_holds_is_refused(idx_dir, tmp_path, capsys, no_data_read):
    weights = tmp_path / "w"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    holder = subprocess.Popen(  # a live run's hold on the folder, as train holds --weights while it trains
        [sys.executable, "-c", f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); import utils; "
                               f"lock = utils.RunLock({str(weights)!r}).acquire(); print('held'); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        code = main.main(["--directory", str(idx_dir), "--weights", str(weights), "--latent_dim", "2",
                          "--epochs", "1"])
        err = capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait(timeout=60)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: {weights} is being trained into by process {holder.pid} ")
    assert "train into another --weights folder" in err
    assert sorted(p.name for p in weights.iterdir()) == [utils.LOCK_NAME]  # no checkpoint, log or picture


def test_the_first_epoch_says_how_long_the_run_will_take_and_where_its_output_goes(idx_dir, tmp_path, capsys):
    weights = tmp_path / "w"
    assert main.main(["--dataset", "mnist", "--directory", str(idx_dir), "--epochs", "3", "--batch_size", "50",
                      "--latent_dim", "2", "--weights", str(weights)]) == 0
    out = capsys.readouterr().out.splitlines()
    told = [line for line in out if "to go at this speed" in line]
    assert len(told) == 1 and f"in {weights}/" in told[0]
    assert out.index(told[0]) == next(i for i, line in enumerate(out) if line.startswith("epoch   1/3")) + 1
