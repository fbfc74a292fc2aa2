"""The README's commands are true: the fresh-machine lines, CI's copy of the test line, every usage line."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def fresh_machine_commands():
    block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_readme_opens_with_the_two_fresh_machine_commands():
    assert README.index("```bash") < 200  # the very first lines
    setup_and_train, setup_and_test = fresh_machine_commands()
    assert setup_and_train.startswith("python3 -m venv .venv && .venv/bin/pip install -r requirements.txt && ")
    assert " main.py " in setup_and_train
    assert setup_and_test.startswith("python3 -m venv .venv && .venv/bin/pip install -r requirements-dev.txt && ")
    assert setup_and_test.endswith("-m pytest -q")


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert fresh_machine_commands()[1] in ci


def test_requirements_name_what_the_code_imports():
    reqs = (ROOT / "requirements.txt").read_text()
    for package in ("torch", "torchvision", "numpy", "tqdm", "matplotlib"):
        assert re.search(rf"^{package}\b", reqs, re.M), package
    assert "-r requirements.txt" in (ROOT / "requirements-dev.txt").read_text()


def test_the_readme_training_command_runs(tmp_path):
    """The first command's training part, cut to one epoch and a temporary weights folder."""
    argv = shlex.split(fresh_machine_commands()[0].split("&&")[-1])
    assert argv[0].endswith("python") and argv[1] == "main.py"
    result = subprocess.run([sys.executable, "main.py", *argv[2:], "--epochs", "1", "--weights", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={"OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "aae.pt").is_file() and (tmp_path / "log.csv").is_file()


def usage_lines():
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.splitlines():
            if line.startswith("python main.py"):
                lines.append(line.split("#")[0].strip())
    return lines


@pytest.mark.parametrize("line", usage_lines())
def test_every_readme_usage_line_parses(line):
    argv = shlex.split(line)[2:]
    if argv and argv[0] in main.COMMANDS and argv[0] != "train":
        parser = getattr(main, f"build_{argv[0]}_parser")()
        argv = argv[1:]
    else:
        parser = main.build_parser()
    parser.parse_args(argv)  # exits with 2 on a flag the program does not have


def test_docs_cli_is_what_the_parsers_print_today():
    """docs/cli.md is written by docs/make_cli.py from main.py's parsers; it must not drift from --help."""
    result = subprocess.run([sys.executable, "docs/make_cli.py", "--check"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    help_text = subprocess.run([sys.executable, "main.py", "train", "--help"], cwd=ROOT, capture_output=True,
                               text=True, timeout=120, env={**os.environ, "COLUMNS": "100"}).stdout
    assert help_text.strip() in (ROOT / "docs" / "cli.md").read_text()


def test_the_readme_python_snippet_runs_as_written(tmp_path, monkeypatch):
    """The README's Python block, run in a folder where `weights/` holds a 1-epoch run of the embedded sample."""
    snippet = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    argv = ["--dataset", "mnist-sample", "--epochs", "1", "--latent_dim", "2", "--weights", str(tmp_path / "weights")]
    assert main.main(argv) == 0
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    assert namespace["images"].shape == (16, 1, 28, 28) and namespace["samples"].shape == (64, 1, 28, 28)
