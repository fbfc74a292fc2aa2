"""Writes docs/cli.md from the command line's own parsers: `python docs/make_cli.py` (or --check).

Each command's `--help`, as `python main.py COMMAND --help` prints it 100 columns wide.
tests/test_readme.py fails when docs/cli.md is not what this script writes today.
"""

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal's width: fix it

import main  # noqa: E402

OUT = ROOT / "docs" / "cli.md"


def text():
    parts = ["# The command line", "",
             "Written by `python docs/make_cli.py` from the parsers in main.py: what `--help` prints. With no command,",
             "`python main.py` trains (`python main.py --epochs 100 --download True`).", ""]
    sections = [("main.py --help", main.build_main_parser())]
    sections += [(f"main.py {command} --help", main.PARSERS[command]()) for command in main.COMMANDS]
    for title, parser in sections:
        parts += [f"## `python {title}`", "", "```text", parser.format_help().rstrip(), "```", ""]
    return "\n".join(parts)


def run(argv=None):
    parser = argparse.ArgumentParser(description="Write docs/cli.md from main.py's parsers.")
    parser.add_argument("--check", action="store_true", help="only say whether docs/cli.md is up to date (exit 1 if not)")
    check = parser.parse_args(argv).check
    wanted = text()
    if check:
        same = OUT.exists() and OUT.read_text() == wanted
        print("docs/cli.md is up to date" if same else "docs/cli.md differs from --help: run python docs/make_cli.py")
        return 0 if same else 1
    OUT.write_text(wanted)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(run())
