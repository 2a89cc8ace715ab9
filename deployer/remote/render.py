"""The remote scripts' text (deployer/remote/scripts/, package data) and the one way values
reach it: `render` puts NAME=value assignments, every value through shlex.quote, above the
files' text. Comment lines and blank lines are left out of what is sent."""

from __future__ import annotations

import functools
import re
import shlex
from collections.abc import Sequence
from importlib import resources

HEADER = "set -e\numask 022\n"

Value = str | int | Sequence[str] | None

_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


@functools.cache
def text(name: str) -> str:
    """A script file as sent: without its comment and blank lines (read once)."""
    raw = resources.files("deployer.remote").joinpath("scripts", name).read_text(encoding="utf-8")
    return "".join(line + "\n" for line in raw.splitlines() if line.strip() and not line.lstrip().startswith("#"))


def word(value: Value) -> str:
    """One value as a shell word: a string or number quoted; None is empty; a list is one string
    of quoted words, which the script expands with `eval "set -- $NAME"` (never split by IFS)."""
    if value is None:
        return "''"
    if isinstance(value, bool):
        return "1" if value else "''"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return shlex.quote(value)
    return shlex.quote(" ".join(shlex.quote(item) for item in value))


def render(files: Sequence[str], values: dict[str, Value], *, header: str = HEADER) -> str:
    """`header`, one `NAME=value` line per input, then the files' text, in order."""
    bad = [name for name in values if not _NAME.fullmatch(name)]
    if bad:
        raise ValueError(f"not a script input name: {bad[0]!r}")
    assigns = "".join(f"{name}={word(value)}\n" for name, value in values.items())
    return header + assigns + "".join(text(name) for name in files)
