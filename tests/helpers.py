"""Small checks the data tests share (tests/test_data.py, tests/test_vision_sets.py)."""
from pathlib import Path

import pytest

import data


def raises_one_line(match_all, call):
    """Run `call`, expect DataError, check its message is one line containing every string in `match_all`."""
    with pytest.raises(data.DataError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    for text in match_all:
        assert str(text) in message, (text, message)
    return message


def files_under(folder: Path):
    """Every file below `folder`, as sorted paths relative to it."""
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
