"""A benchmark's own section of results.md, between `<!-- NAME:begin -->` and `<!-- NAME:end -->`:
rewritten in place on every run, appended the first time; the rest of the file is left as it is."""

from __future__ import annotations

import re
from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def wrap(name: str, body: str) -> str:
    """body between the section's markers, ready for write_section."""
    begin, end = markers(name)
    return f"{begin}\n{body.strip()}\n\n{end}\n"


def write_section(out: Path, section: str, name: str) -> None:
    begin, end = markers(name)
    text = out.read_text() if out.exists() else ""
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end) + "\n?", lambda m: section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    out.write_text(text)
