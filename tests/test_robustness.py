"""Bad inputs thrown at the entry points: weights files, contradicting resumes, divergence, full disks,
and (with hypothesis) random flags and garbled IDX and checkpoint files.

Every bad input must give one line on stderr, a non-zero exit code, no traceback, and leave an
existing checkpoint byte for byte as it was. docs/bad_inputs.md lists the messages.

    .venv/bin/python -m pytest tests/test_robustness.py -q
"""

import errno
import math
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

import data
import main
import phases
import train
import utils
from train import Trainer, TrainConfig

CUDA_CHECKPOINT = Path(__file__).resolve().parent / "data" / "cuda_checkpoint.pt"


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


def test_resume_through_main_continues_exactly_with_the_saved_sizes(weights, dataset, idx_dir, cli):
    # the tiny checkpoint's hidden sizes are not main.py's defaults: resume must rebuild from the file
    code, out, err = cli(["--weights", weights, "--resume", "--epochs", "2"])
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
                                                    "--dis_lr 0.001 (checkpoint: 0.0002)"]),
    ],
)
def test_resume_refuses_flags_that_contradict_the_checkpoint(weights, flags, named, cli):
    before = (weights / "aae.pt").read_bytes()
    code, out, err = cli(["--weights", weights, "--resume", *flags])
    one_line_error(code, err, 2)
    for text in named:
        assert text in err
    assert (weights / "aae.pt").read_bytes() == before


def test_resume_on_other_data_mid_epoch_is_refused(weights, tmp_path, cli):
    ckpt = utils.load_checkpoint(weights)
    ckpt["partial_epoch"] = {"data_rng": ckpt["rng"]["data"], "step_in_epoch": 3, "sums": torch.zeros(4, dtype=torch.float64)}
    utils.save_checkpoint(ckpt, weights / "aae.pt")
    small = data.write_synthetic_idx(tmp_path / "small", n_train=100, n_test=10)  # 2 steps an epoch, not 4
    code, out, err = cli(["--weights", weights, "--resume", "--directory", small, "--epochs", "2"])
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
def test_unusable_weights_files_get_one_line_and_exit_1(weights, tmp_path, name, command, cli):
    spoil, message = BAD_WEIGHTS[name]
    spoil(weights / "aae.pt")
    before = (weights / "aae.pt").read_bytes() if (weights / "aae.pt").exists() else None
    argv = (["draw", "samples", "--weights", weights, "--out", tmp_path / "pics"] if command == "draw"
            else ["--weights", weights, "--resume", "--epochs", "2"])
    code, out, err = cli(argv)
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
def test_weights_without_a_training_state_draw_but_do_not_resume(weights, tmp_path, spoil, message, cli):
    edit(spoil)(weights / "aae.pt")
    before = (weights / "aae.pt").read_bytes()
    code, out, err = cli(["--weights", weights, "--resume", "--epochs", "2"])
    one_line_error(code, err, 1)
    assert message in err and (weights / "aae.pt").read_bytes() == before
    assert cli(["draw", "samples", "--weights", weights, "--out", tmp_path])[0] == 0


def test_a_checkpoint_without_its_train_config_still_draws_from_the_default_prior(weights, tmp_path, cli):
    edit(lambda c: c.pop("train_config"))(weights / "aae.pt")  # utils.load_models reads it as {}
    assert cli(["draw", "samples", "--weights", weights, "--out", tmp_path])[0] == 0
    assert utils.load_models(weights).sample_prior(4000, torch.Generator().manual_seed(0)).std().item() == (
        pytest.approx(TrainConfig.prior_std, rel=0.05))


def test_a_checkpoint_saved_on_a_gpu_loads_and_resumes_on_the_cpu(tmp_path, cli):
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
    code, out, err = cli(["--weights", tmp_path, "--resume", "--directory", idx, "--device", "cpu"])
    assert code == 0, err
    assert "resuming from epoch 1 (mid-epoch)" in out
    ckpt = utils.load_checkpoint(tmp_path)
    assert ckpt["epoch"] == 2 and ckpt["step"] == 40 and ckpt["partial_epoch"] is None
    assert ckpt["encoder"]["net.0.weight"].device.type == "cpu"


# -- faults during training ------------------------------------------------------------------------


def nan_from_call(monkeypatch, calls):
    """Make the generator phase's loss NaN from its `calls`-th call on (in every module that calls it)."""
    real, count = phases.generator_phase, [0]

    def phase(*args, **kwargs):
        count[0] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if count[0] >= calls else loss

    for module in list(sys.modules.values()):  # the variants' modules import it by name (aae.py ...)
        if getattr(module, "generator_phase", None) is real:
            monkeypatch.setattr(module, "generator_phase", phase)


def test_non_finite_loss_exits_3_naming_phase_and_epoch_and_keeps_the_checkpoint(weights, monkeypatch, cli):
    before = (weights / "aae.pt").read_bytes()
    log = (weights / "log.csv").read_bytes() if (weights / "log.csv").exists() else None
    nan_from_call(monkeypatch, 1)
    code, out, err = cli(["--weights", weights, "--resume", "--epochs", "3"])
    one_line_error(code, err, 3)
    assert "the generator loss became non-finite in epoch 2" in err
    assert f"the checkpoint in {weights}/ is from epoch 1, the last good one" in err
    assert (weights / "aae.pt").read_bytes() == before
    assert ((weights / "log.csv").read_bytes() if (weights / "log.csv").exists() else None) == log


def test_non_finite_loss_in_a_fresh_run_says_nothing_was_saved(idx_dir, tmp_path, monkeypatch, cli):
    nan_from_call(monkeypatch, 1)
    code, out, err = cli(["--directory", idx_dir, "--weights", tmp_path / "w", "--latent_dim", "2",
                          "--batch_size", "100", "--epochs", "2"])
    one_line_error(code, err, 3)
    assert "in epoch 1" in err and "no checkpoint was saved" in err
    assert not (tmp_path / "w" / "aae.pt").exists()


def test_a_full_disk_while_training_exits_1_and_keeps_the_previous_checkpoint(weights, monkeypatch, cli):
    before = (weights / "aae.pt").read_bytes()

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_full)
    code, out, err = cli(["--weights", weights, "--resume", "--epochs", "2"])
    one_line_error(code, err, 1)
    assert f"could not write {weights / 'aae.pt'}: no space left on the device" in err
    assert (weights / "aae.pt").read_bytes() == before
    # no temp file left (the run's lock file, utils.RunLock, stays by design: the OS lock is what counts)
    assert not [p.name for p in weights.iterdir() if p.name.startswith(".") and p.name != utils.LOCK_NAME]


def test_a_fresh_run_never_overwrites_an_earlier_one(weights, idx_dir, cli):
    before = (weights / "aae.pt").read_bytes()
    code, out, err = cli(["--directory", idx_dir, "--weights", weights, "--epochs", "1"])
    one_line_error(code, err, 2)
    assert f"holds an earlier run: continue it with `python main.py --weights {weights} --resume`" in err
    assert (weights / "aae.pt").read_bytes() == before


def test_resuming_another_runs_checkpoint_never_overwrites_the_one_in_weights(weights, tmp_path, idx_dir, cli):
    other = tmp_path / "other"
    other.mkdir()
    (other / "aae.pt").write_bytes((weights / "aae.pt").read_bytes())  # another run's file, not weights' own
    before = (weights / "aae.pt").read_bytes()
    code, out, err = cli(["--directory", idx_dir, "--weights", weights, "--resume", other / "aae.pt",
                          "--epochs", "2"])
    one_line_error(code, err, 2)
    assert f"holds another run than {other / 'aae.pt'}" in err and f"--weights {other}" in err
    assert (weights / "aae.pt").read_bytes() == before
    # its own file, named as --resume FILE, continues as --resume does
    assert cli(["--directory", idx_dir, "--weights", weights, "--resume", weights / "aae.pt", "--epochs", "2"])[0] == 0
    assert utils.load_checkpoint(weights)["epoch"] == 2


def test_weights_folder_that_is_a_file_is_refused(tmp_path, idx_dir, cli):
    (tmp_path / "w").write_text("not a folder")
    code, out, err = cli(["--directory", idx_dir, "--weights", tmp_path / "w", "--epochs", "1"])
    one_line_error(code, err, 1)
    assert "is not writable" in err and (tmp_path / "w").read_text() == "not a folder"



@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seed", "100000000000000000000000"], "--seed: must be from -2**63 to 2**63 - 3"),  # was torch's Overflow
        (["--latent_dim", "100000000"], "--latent_dim: must be at most 784"),  # was a 400 GB allocation
        (["--threads", "100000000000000000000000"], "--threads: must be at most 1024"),
        (["draw", "interpolation", "--classes", "3", "100000000000000000000000"], "the test split has no image of class 1"),
        (["draw", "samples", "--classes", "-1", "3"], "--classes: classes are numbered from 0"),  # was ignored: exit 0
        (["evaluate", "--seed", "100000000000000000000000"], "--seed: must be from -2**63 to 2**63 - 3"),
    ],
)
def test_flag_values_past_what_the_program_can_use_are_refused(tiny_run, argv, message, cli):
    code, out, err = cli(argv + ["--weights", tiny_run])
    one_line_error(code, err, 2)
    assert message in err


def test_draw_into_an_unwritable_folder_is_refused(tiny_run, tmp_path, cli):
    (tmp_path / "file").write_text("x")
    code, out, err = cli(["draw", "samples", "--weights", tiny_run, "--out", tmp_path / "file" / "pics"])
    one_line_error(code, err, 1)
    assert "--out folder" in err and "not writable" in err


def test_more_random_pairs_than_the_test_split_holds_are_refused(tiny_run, idx_dir, tmp_path, cli):
    n_test = len(data.load_dataset("mnist", idx_dir).test.images)
    argv = ["draw", "interpolation", "--weights", tiny_run, "--directory", idx_dir, "--out", tmp_path]
    code, out, err = cli(argv + ["--pairs", n_test // 2 + 1])
    one_line_error(code, err, 2)
    assert f"the test split has {n_test}: use --pairs {n_test // 2} or fewer" in err
    assert cli(argv + ["--pairs", n_test // 2])[0] == 0 and (tmp_path / "interpolation.png").exists()


def test_losses_of_a_checkpoint_with_no_completed_epoch_are_refused(tiny_run, idx_dir, tmp_path, cli):
    state = utils.load_checkpoint(tiny_run)
    state["history"] = []  # as a run stopped inside its first epoch leaves it
    (tmp_path / "w").mkdir()
    utils.save_checkpoint(state, tmp_path / "w" / "aae.pt")
    code, out, err = cli(["draw", "losses", "--weights", tmp_path / "w", "--out", tmp_path / "pics"])
    one_line_error(code, err, 2)
    assert "has no completed epoch yet, so no losses to draw" in err
    assert cli(["draw", "samples", "--weights", tmp_path / "w", "--out", tmp_path / "pics"])[0] == 0


def test_an_idx_file_of_no_images_is_refused(tmp_path):
    folder = data.write_synthetic_idx(tmp_path, n_train=20, n_test=10, gz=False)
    data.write_idx(folder / "train-images-idx3-ubyte", torch.zeros(0, 28, 28, dtype=torch.uint8))
    data.write_idx(folder / "train-labels-idx1-ubyte", torch.zeros(0, dtype=torch.uint8))
    with pytest.raises(data.DataError, match="holds no images"):
        data.load_dataset("mnist", folder)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1.5 MB tmpfs: room for one tiny checkpoint and a little, not for its temp copy beside it."""
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN); the monkeypatched test still runs")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_really_full_disk_exits_1_and_keeps_the_previous_checkpoint(tiny_run, tiny_disk, cli):
    weights = tiny_disk / "w"
    shutil.copytree(tiny_run, weights)
    before = (weights / "aae.pt").read_bytes()
    assert 2 * len(before) > 1536 * 1024 > len(before)
    code, out, err = cli(["--weights", weights, "--resume", "--epochs", "2"])
    one_line_error(code, err, 1)
    assert f"could not write {weights / 'aae.pt'}: no space left on the device" in err
    assert (weights / "aae.pt").read_bytes() == before
    # no temp file, no half-written log (only the run's lock file, utils.RunLock, which stays by design)
    assert sorted(p.name for p in weights.iterdir() if p.name != utils.LOCK_NAME) == ["aae.pt"]



def test_the_bad_inputs_doc_has_a_row_for_every_case_tried():
    import bad_inputs  # tests/bad_inputs.py, which writes the doc by running each case

    doc = (Path(__file__).resolve().parent.parent / "docs" / "bad_inputs.md").read_text()
    rows = [line.split(" | ") for line in doc.splitlines() if line.startswith("| ") and line[2].isdigit()]
    described = [what for _, what, _, _ in bad_inputs.CASES] + [what for what, _, _ in bad_inputs.SIGNALS]
    assert [row[2] for row in rows] == described, "rerun: python tests/bad_inputs.py"


# -- property-based: random flags, garbled IDX files, garbled checkpoints --------------------------

from contextlib import redirect_stderr, redirect_stdout  # noqa: E402
import io  # noqa: E402
import tempfile  # noqa: E402

from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

TRAIN_FLAGS = {a.dest: a for a in main.build_parser()._actions}
DRAW_FLAGS = {a.dest: a for a in main.build_draw_parser()._actions}
OPTION_STRINGS = {s for p in (main.build_parser(), main.build_draw_parser()) for s in p._option_string_actions}

text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
numbers = st.one_of(
    st.integers(-10**30, 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "-nan", "inf", "-inf", "Infinity", "1e400", "-0", "0.0", "0x10", "1_0", "", " ", "1e-400"]),
)
values = st.one_of(numbers, text)


def whole(low, high=float("inf")):
    def ok(value):
        try:
            return low <= int(value) <= high
        except ValueError:
            return False

    return ok


def finite_number(ok):
    def accepts(value):
        try:
            return math.isfinite(float(value)) and ok(float(value))
        except ValueError:
            return False

    return accepts


positive_number = finite_number(lambda v: v > 0)
non_negative_number = finite_number(lambda v: v >= 0)


# What each flag should take, written from its help text rather than from its code: a value
# outside this is a bad input, whether or not the parser's own check knows it.
SPEC = {
    "epochs": whole(1), "batch_size": whole(1), "pairs": whole(1), "steps": whole(1),
    "latent_dim": whole(1, 784), "threads": whole(1, 1024), "seed": whole(-(2**63), 2**63 - 3),
    "classes": whole(0), "eval_every": whole(0), "gen_lr": positive_number, "dis_lr": positive_number, "prior_std": positive_number,
    "download": lambda v: v.strip().lower() in ("true", "1", "yes", "y", "on", "false", "0", "no", "n", "off"),
    "label_discriminator": lambda v: v.strip().lower() in ("true", "1", "yes", "y", "on", "false", "0", "no", "n", "off"),
    "labels": whole(-1), "clusters": whole(1), "noise_dim": whole(1), "classification_lr": positive_number,
    "balance_weight": non_negative_number, "confidence_weight": non_negative_number,
    "augment": whole(0), "consistency_weight": non_negative_number,
    "consistency_threshold": finite_number(lambda v: 0 <= v < 1), "tensorboard_every": whole(1),
    "test_fraction": finite_number(lambda v: 0 < v < 1), "samples": whole(1), "number": whole(1, 1_000_000),
    "category": whole(0), "image_size": whole(1, 128), "channels": lambda v: whole(1, 3)(v) and int(v) != 2,
}


def accepted(action, value):
    if action.dest in SPEC:
        return SPEC[action.dest](value)
    return value in action.choices


@st.composite
def bad_flag(draw, flags):
    """One flag given a value it refuses, an unknown flag, a flag without its value, or a stray word."""
    kind = draw(st.sampled_from(["value", "value", "value", "unknown", "missing value", "stray word"]))
    typed = sorted(d for d, a in flags.items() if a.option_strings and (a.type or a.choices) and a.nargs in (None, 2))
    if kind == "value":
        action = flags[draw(st.sampled_from(typed))]
        value = draw(values)
        assume(not accepted(action, value))
        more = [draw(st.sampled_from(["3", "0", "-1", value]))] if action.nargs == 2 else []  # --classes FROM TO
        return [action.option_strings[0], *draw(st.permutations([value, *more]))]
    if kind == "unknown":
        name = "--" + draw(st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=10))
        # argparse takes unambiguous prefixes (--epo is --epochs), and --help is not a bad input
        assume(not any(option.startswith(name.split("=")[0]) for option in OPTION_STRINGS))
        return [name]
    if kind == "missing value":
        return [flags[draw(st.sampled_from(typed))].option_strings[0]]
    word = draw(text.filter(lambda w: not w.startswith("-")))
    assume(word.strip() not in ("", "draw", "train") and word not in main.COMMANDS and word not in main.PICTURES)
    return [word]


# Flags that are fine, to mix in around the bad ones (the run must still be refused).
GOOD_TRAIN = [["--epochs", "3"], ["--batch_size", "20"], ["--latent_dim", "2"], ["--seed", "5"], ["--download", "no"],
              ["--precision", "bf16"], ["--device", "cpu"], ["--prior_std", "2.5"], ["--gen_lr", "1e-3"]]
GOOD_DRAW = [["samples"], ["--pairs", "2"], ["--steps", "3"], ["--seed", "1"], ["--device", "cpu"]]


def never_trains(*args, **kwargs):
    raise AssertionError("a bad input got as far as building the models")


@st.composite
def bad_argv(draw):
    """A train or draw command line with at least one bad flag among good ones."""
    draw_command = draw(st.booleans())
    flags, good = (DRAW_FLAGS, GOOD_DRAW) if draw_command else (TRAIN_FLAGS, GOOD_TRAIN)
    parts = draw(st.lists(st.sampled_from(good), max_size=3)) + draw(st.lists(bad_flag(flags), min_size=1, max_size=3))
    parts = draw(st.permutations(parts))
    # a lone flag (its value missing, or unknown) goes last: before a stray word "0", --seed would take it
    parts = sorted(parts, key=lambda part: len(part) == 1 and part[0].startswith("-"))
    return (["draw"] if draw_command else []) + [item for part in parts for item in part]


def refused_by_main(argv, weights):
    """Run main.main on a bad command line: a non-zero exit, one line on stderr, the checkpoint untouched."""
    argv = [str(a) for a in argv]
    before = (weights / "aae.pt").read_bytes()
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, redirect_stdout(out), redirect_stderr(err):
        mp.setattr(train.Trainer, "__init__", never_trains)
        try:
            code = main.main(argv)
        except SystemExit as e:
            code = e.code
    err = err.getvalue()
    assert code not in (0, None), (argv, err)
    assert "Traceback" not in err and err.count("\n") == 1, (argv, err)
    assert (weights / "aae.pt").read_bytes() == before
    return code, err


@PROPERTY
@given(argv=bad_argv(), resume=st.booleans())
def test_random_bad_flags_exit_non_zero_in_one_line_and_never_touch_the_checkpoint(tiny_run, argv, resume):
    if argv[:1] == ["draw"]:
        argv = argv + ["--weights", tiny_run, "--out", tiny_run / "pictures"]
    else:
        argv = ["--weights", tiny_run] + (["--resume"] if resume else []) + argv
    refused_by_main(argv, tiny_run)
    assert not (tiny_run / "pictures").exists()


@st.composite
def garbling(draw, size):
    """A list of edits to a file of `size` bytes: truncate, overwrite, insert or delete bytes."""
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "overwrite", "overwrite", "insert", "delete"]))
        at = draw(st.one_of(st.integers(0, 40), st.integers(0, size)))  # the header is where parsers trip
        edits.append((kind, at, draw(st.binary(min_size=1, max_size=8))))
    return edits


def apply(raw, edits):
    raw = bytearray(raw)
    for kind, at, blob in edits:
        at = min(at, len(raw))
        if kind == "truncate":
            del raw[at:]
        elif kind == "overwrite":
            raw[at : at + len(blob)] = blob
        elif kind == "insert":
            raw[at:at] = blob
        else:
            del raw[at : at + len(blob)]
    return bytes(raw)


@pytest.fixture(scope="module")
def pristine_idx(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pristine")
    data.write_synthetic_idx(folder / "plain", n_train=30, n_test=20, gz=False)
    data.write_synthetic_idx(folder / "gz", n_train=30, n_test=20, gz=True)
    return folder


FILES = [f for pair in data.SPLIT_FILES.values() for f in pair]


@PROPERTY
@given(name=st.sampled_from(FILES), gz=st.sampled_from(["no", "compressed bytes", "content"]), data_=st.data())
def test_garbled_idx_files_load_correctly_or_raise_data_error(pristine_idx, tiny_run, name, gz, data_):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = pristine_idx / ("plain" if gz == "no" else "gz")
        for f in source.iterdir():
            shutil.copy(f, folder / f.name)
        path = folder / (name + ("" if gz == "no" else ".gz"))
        raw = path.read_bytes()
        if gz == "content":  # garble the IDX inside a valid gzip stream
            import gzip

            inner = gzip.decompress(raw)
            path.write_bytes(gzip.compress(apply(inner, data_.draw(garbling(len(inner))))))
        else:
            path.write_bytes(apply(raw, data_.draw(garbling(len(raw)))))
        try:
            ds = data.load_dataset("mnist", folder)
        except data.DataError as e:
            assert "\n" not in str(e) and str(folder) in str(e)
            refused_by_main(["--weights", tiny_run, "--resume", "--directory", folder, "--epochs", "2"], tiny_run)
            return
    for split in (ds.train, ds.test):  # a garbling can leave a valid file: then it must be a usable one
        assert split.images.dtype == torch.uint8 and split.images.dim() == 3 and split.images.shape[1:] == (28, 28)
        assert split.labels.dtype == torch.int64 and split.labels.shape == (len(split.images),)
        assert len(split.images) > 0 and 0 <= int(split.labels.min()) and int(split.labels.max()) <= 9


@PROPERTY
@given(data_=st.data())
def test_garbled_checkpoints_load_correctly_or_raise_checkpoint_error(tiny_run, data_):
    raw = (tiny_run / "aae.pt").read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "aae.pt"
        path.write_bytes(apply(raw, data_.draw(garbling(len(raw)))))
        try:
            trained = utils.load_models(path)
        except utils.CheckpointError as e:
            assert "\n" not in str(e)
            return
    with torch.no_grad():  # it loaded: then the networks must work at the saved sizes
        z = trained.encoder(torch.rand(2, 1, 28, 28))
        assert z.shape == (2, trained.model_cfg.latent_dim)
        assert trained.decoder(z).shape == (2, 1, 28, 28)
