"""Interrupting main.py for real (SIGTERM, SIGINT, twice) and resuming it bit-identically.

Each test runs main.py as a subprocess on the synthetic IDX files, sends real signals when the
run prints a marker line, and compares the checkpoints and logs tensor by tensor.

    .venv/bin/python -m pytest tests/test_resume.py -q
"""

import csv
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from utils import LOCK_NAME

ROOT = Path(__file__).resolve().parent.parent
MAIN = ROOT / "main.py"
# The line main.py prints right before the first step: "training <the model> on <data set> ..."
TRAINING_STARTS = "training the plain AAE (--mode unsupervised) on "


class Child:
    """main.py in a subprocess, its stdout and stderr read line by line so a test can wait on a marker."""

    def __init__(self, *argv, prelude=""):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        # prelude: Python run before main.py in the same process (e.g. to make the disk slow)
        code = f"{prelude}\nimport runpy, sys\nsys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')"
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(MAIN), *map(str, argv)], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out, self.err, self.lines = [], [], queue.Queue()
        self.readers = [threading.Thread(target=self._read, args=(s, keep), daemon=True)
                        for s, keep in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for r in self.readers:
            r.start()

    def _read(self, stream, keep):
        for line in stream:
            keep.append(line)
            self.lines.put(line)

    def wait_for(self, text, timeout=120):
        """Block until a line containing `text` appears on stdout or stderr."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if text in self.lines.get(timeout=0.05):
                    return
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
        self.proc.kill()
        raise AssertionError(f"no line with {text!r}; stdout: {''.join(self.out)} stderr: {''.join(self.err)}")

    def signal(self, signum):
        self.proc.send_signal(signum)

    def finish(self, timeout=300):
        code = self.proc.wait(timeout=timeout)
        for r in self.readers:
            r.join(timeout=10)
        return code, "".join(self.out), "".join(self.err)


def run(*argv):
    child = Child(*argv)
    code, out, err = child.finish()
    assert code == 0, err
    return out, err


def assert_same(a, b, where="checkpoint"):
    """Every tensor, number and string of two checkpoints equal, except the timing column of the history."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        keys = set(a) - {"seconds"}
        assert keys == set(b) - {"seconds"}, (where, sorted(keys ^ (set(b) - {"seconds"})))
        for k in keys:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def log_rows(folder):
    with open(folder / "log.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def load(folder):
    return torch.load(folder / "aae.pt", weights_only=True)


def test_sigterm_and_sigint_mid_epoch_then_resume_equal_an_uninterrupted_run(idx_dir, tmp_path):
    # batch 5: 40 steps an epoch, so a signal sent as training starts lands inside the first epoch
    common = ["--directory", idx_dir, "--latent_dim", "2", "--batch_size", "5", "--epochs", "2", "--seed", "3"]
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    run(*common, "--weights", straight)

    child = Child(*common, "--weights", cut)
    child.wait_for(TRAINING_STARTS)
    child.signal(signal.SIGTERM)
    code, out, err = child.finish()
    assert code == 143, err
    assert "Traceback" not in err and f"continue with: python main.py --weights {cut} --resume" in err
    first = load(cut)
    assert first["epoch"] == 0 and first["partial_epoch"] is not None, "the signal missed the middle of epoch 1"
    assert 0 < first["partial_epoch"]["step_in_epoch"] == first["step"] < 40
    assert f"step {first['step']} of the next" in err

    # resume from the file itself, and Ctrl-C this run in turn
    child = Child(*common, "--weights", cut, "--resume", cut / "aae.pt")
    child.wait_for(TRAINING_STARTS)
    child.signal(signal.SIGINT)
    code, out, err = child.finish()
    assert code == 130, err
    assert "resuming from epoch 0 (mid-epoch)" in out and "Traceback" not in err
    second = load(cut)
    assert second["step"] > first["step"] and second["partial_epoch"] is not None

    out, err = run(*common, "--weights", cut, "--resume")
    assert "resuming from epoch" in out and "(mid-epoch)" in out
    assert_same(load(straight), load(cut))  # weights, optimisers, RNG states, step, configs, history
    assert log_rows(straight) == log_rows(cut) and len(log_rows(cut)) == 2


# Run before main.py: saving the checkpoint takes 30 s between writing the temp file and moving it
# into place, as on a slow disk, so a second signal can be sent while the save is under way.
SLOW_DISK = """
import os, time
_replace = os.replace
def slow_replace(src, dst, *args, **kwargs):
    if str(dst).endswith("aae.pt"):
        time.sleep(30)
    return _replace(src, dst, *args, **kwargs)
os.replace = slow_replace
"""


@pytest.fixture(scope="module")
def one_epoch(idx_dir, tmp_path_factory):
    """A weights folder after one epoch of main.py: the 'previous checkpoint' a second signal must keep."""
    weights = tmp_path_factory.mktemp("one_epoch")
    run("--directory", idx_dir, "--latent_dim", "2", "--batch_size", "5", "--weights", weights, "--epochs", "1")
    return weights


def second_signal_during_save(idx_dir, one_epoch, tmp_path, signum):
    weights = tmp_path / "w"
    shutil.copytree(one_epoch, weights)
    common = ["--directory", idx_dir, "--latent_dim", "2", "--batch_size", "5", "--weights", weights]
    before = (weights / "aae.pt").read_bytes()

    child = Child(*common, "--epochs", "3", "--resume", prelude=SLOW_DISK)
    child.wait_for(TRAINING_STARTS)
    child.signal(signum)
    child.wait_for("stopping at the next safe point")
    deadline = time.time() + 60
    while not any(p.name.startswith(".aae.pt.") for p in weights.iterdir()):  # the save has begun
        assert time.time() < deadline and child.proc.poll() is None, "the save never started"
        time.sleep(0.001)
    child.signal(signum)
    code, out, err = child.finish()
    assert code == 128 + signum, err
    assert "interrupted" in err and "Traceback" not in err and "continue with" not in err
    # The save's os.replace comes after its 30 s sleep: had the second signal waited for the save (or been
    # ignored), the new checkpoint would have replaced the previous one. No clock needed.
    assert (weights / "aae.pt").read_bytes() == before
    # no temp file (the run lock's file stays: the OS lock on it went with the process)
    assert sorted(p.name for p in weights.iterdir() if p.name.startswith(".")) == [LOCK_NAME]
    assert load(weights)["epoch"] == 1


def test_second_sigterm_during_the_save_exits_143_and_keeps_the_previous_checkpoint(idx_dir, one_epoch, tmp_path):
    second_signal_during_save(idx_dir, one_epoch, tmp_path, signal.SIGTERM)


def test_second_ctrl_c_during_the_save_exits_130_and_keeps_the_previous_checkpoint(idx_dir, one_epoch, tmp_path):
    second_signal_during_save(idx_dir, one_epoch, tmp_path, signal.SIGINT)
