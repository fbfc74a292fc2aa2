"""What each flag of main.py accepts: argparse types that refuse a bad value with a one-line message (argparse
prints it after the flag's name), so a run never starts on a value it cannot use.

    from flags import positive_int
    parser.add_argument("--epochs", type=positive_int, default=100)
"""

import argparse
import math

def str2bool(text):
    value = text.strip().lower()
    if value in ("true", "1", "yes", "y", "on"):
        return True
    if value in ("false", "0", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected True/False/1/0/yes/no, got {text!r}")


def whole_number(text):
    """int(text), or argparse's error for text that is not a whole number."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive_int(text):
    value = whole_number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text):
    value = whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def number(text):
    """float(text), or argparse's error for text that is not a number."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def positive_float(text):
    value = number(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def probability(text):
    value = number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}")
    return value + 0.0


def open_fraction(text):
    value = number(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, both left out, got {text!r}")
    return value


def non_negative_float(text):
    value = number(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value + 0.0  # -0 -> 0


MAX_IMAGE_SIZE = 128  # 3 x 128 x 128 inputs to 1000 units is 49 million weights a layer


def at_most(most, why):
    """positive_int with an upper bound: past it a run would only exhaust memory or threads."""

    def parse(text):
        value = positive_int(text)
        if value > most:
            raise argparse.ArgumentTypeError(f"must be at most {most} ({why}), got {value}")
        return value

    return parse


def class_label(text):
    """A class number, 0 or more (the model's data says how many there are)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a class number, 0 or more, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"classes are numbered from 0, got {value}")
    return value


def seed_int(text):
    value = whole_number(text)
    if not -(2**63) <= value <= 2**63 - 3:  # torch takes 64-bit seeds, and the run also uses seed + 1, seed + 2
        raise argparse.ArgumentTypeError(f"must be from -2**63 to 2**63 - 3, got {value}")
    return value


def label_count(text):
    value = whole_number(text)
    if value < -1:
        raise argparse.ArgumentTypeError(f"must be a count >= 0, or -1 for all labels; got {value}")
    return value
