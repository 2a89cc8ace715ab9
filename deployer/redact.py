"""Secret masking: the values registered as secret, and `redact`, which masks them in any text.

The bottom floor: config registers the secrets it resolves, and ssh, remote and report mask them
in what they print, record or send. Imports nothing of the package.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

_SECRETS: set[str] = set()
MASK = "••••••"
MIN_SECRET = 4  # shorter values cannot be masked without masking unrelated text: envfile refuses them


def double_quoted(value: str) -> str:
    """value with \\ " $ ` escaped, as it stands between double quotes in a dotenv file or sh."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("`", "\\`")


def add_secret(value: str) -> None:
    """Register a secret value: every string this process sends to a host, a webhook or a
    terminal has it masked (see `redact`). Each line of a multi-line value, and the forms the
    value takes once escaped in a dotenv file, in JSON or in a shell's single quotes, are masked too."""
    if len(value) < MIN_SECRET:
        return
    forms = {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    forms.add(double_quoted(value))  # the dotenv form: a `cat .env` in a hook's output
    forms.add(value.replace("'", "'\\''"))  # in single quotes, as `export -p` or `set` shows it
    for form in list(forms):
        forms.update(line for line in form.splitlines())
    _SECRETS.update(f for f in forms if len(f) >= MIN_SECRET)


def redact(text: str) -> str:
    """`text` with every registered secret masked, where it appears whole and where a line of
    it was cut: a line ending with the first characters of a secret (a tail cut short) or
    starting with its last ones (a tail that starts mid-way), at least MIN_SECRET of them.
    Overlapping or nested secrets are masked as one span; matching is literal."""
    if not isinstance(text, str) or not _SECRETS or not text:
        return text
    spans = []
    for secret in _SECRETS:
        i = text.find(secret)
        while i != -1:
            spans.append((i, i + len(secret)))
            i = text.find(secret, i + 1)
    for start, end in _lines(text):
        for secret in _SECRETS:
            spans += _cut_edges(text, start, end, secret)
    if not spans:
        return text
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out, pos = [], 0
    for start, end in merged:
        out += [text[pos:start], MASK]
        pos = end
    out.append(text[pos:])
    return "".join(out)


def redact_data(data: Any) -> Any:
    """Every string inside lists and dicts redacted (before it is serialised: JSON escapes
    would hide a secret that has quotes, backslashes or non-ASCII characters from `redact`)."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {redact_data(k): redact_data(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact_data(v) for v in data]
    return data


def _lines(text: str) -> Iterator[tuple[int, int]]:
    start = 0
    for match in re.finditer(r"[\r\n]", text):
        yield start, match.start()
        start = match.end()
    yield start, len(text)


def _cut_edges(text: str, start: int, end: int, secret: str) -> list[tuple[int, int]]:
    """The spans of text[start:end] that are a cut piece of secret at its edges."""
    if len(secret) <= MIN_SECRET or end - start < MIN_SECRET:
        return []
    spans = []
    head, i = secret[:MIN_SECRET], text.find(secret[:MIN_SECRET], max(start, end - len(secret) + 1), end)
    while i != -1:  # the line ends with a prefix of the secret
        if secret.startswith(text[i:end]):
            spans.append((i, end))
            break
        i = text.find(head, i + 1, end)
    tail = secret[-MIN_SECRET:]
    limit = min(end, start + len(secret) - 1)
    i = text.rfind(tail, start, limit)
    while i != -1:  # the line starts with a suffix of the secret
        if secret.endswith(text[start : i + MIN_SECRET]):
            spans.append((start, i + MIN_SECRET))
            break
        i = text.rfind(tail, start, i + MIN_SECRET - 1)
    return spans
