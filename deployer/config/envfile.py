"""Per-stage configuration: [env] values and secrets rendered into a dotenv file per host.

Secrets are resolved on this machine before any host is touched (a missing one is bad input),
registered for redaction, and travel only over the SSH channel's stdin into a 0600 file: never
on a command line, never in logs, notifications or the ledger (which gets a digest).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from dataclasses import dataclass

from deployer.config.settings import ENV_NAME, EnvValue, Host
from deployer.errors import ConfigError
from deployer.redact import MIN_SECRET, add_secret, double_quoted

_PLAIN = re.compile(r"[A-Za-z0-9_./:@+,=-]*")
# what neither a dotenv reader nor sh's `.` can be trusted to read back: NUL and the control
# characters but tab and newline, DEL, C1 controls (NEL), and Unicode's line/paragraph separators
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass(frozen=True)
class HostEnv:
    """What one host's env file will contain."""

    values: dict[str, str]
    secret_keys: frozenset[str]

    def render(self) -> bytes:
        return render(self.values)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.render()).hexdigest()


def check(key: str, value: str, secret: bool = False) -> None:
    """Bad input (exit 2) for what the env file cannot carry exactly; never shows the value."""
    what = "secret" if secret else "env"
    if not ENV_NAME.fullmatch(key):
        raise ConfigError(f"{what} {key!r}: expected a variable name (letters, digits, _)")
    bad = _UNSAFE.search(value)
    if bad:
        raise ConfigError(
            f"{what} {key}: its value contains the control character U+{ord(bad.group()):04X} "
            f"at position {bad.start()}, which an env file cannot carry safely"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"{what} {key}: its value is not valid UTF-8") from None
    if secret and 0 < len(value) < MIN_SECRET:
        raise ConfigError(
            f"secret {key}: its value has {len(value)} character(s); secrets shorter than "
            f"{MIN_SECRET} cannot be masked in output without masking unrelated text"
        )


def quote(value: str) -> str:
    """Plain words as is, anything else in double quotes with \\ " $ ` escaped (newlines and
    tabs as they are): read back the same by `parse` and by a POSIX shell's `.`."""
    if _PLAIN.fullmatch(value):
        return value
    return f'"{double_quoted(value)}"'


def render(values: dict[str, str]) -> bytes:
    return "".join(f"{k}={quote(v)}\n" for k, v in sorted(values.items())).encode()


def parse(text: str) -> dict[str, str]:
    """KEY=value lines as a POSIX shell's `.` reads those `render` writes: double quotes (which
    may span lines; \\ escapes \\ " $ ` and a newline), single quotes, backslashes outside
    quotes. Blank lines, comments and lines that are no assignment are skipped."""
    out, i, n = {}, 0, len(text)
    while i < n:
        while i < n and text[i] in " \t":
            i += 1
        if text.startswith("export ", i):
            i += 7
        key = ENV_NAME.match(text, i)
        if not key or not text.startswith("=", key.end()):
            i = _next_line(text, i)
            continue
        value, i = _word(text, key.end() + 1)
        out[key.group()] = value
        i = _next_line(text, i)
    return out


def _word(text: str, i: int) -> tuple[str, int]:
    """The shell word at text[i:] (up to unquoted blank or newline) and where it ends."""
    out, n = [], len(text)
    while i < n and text[i] not in " \t\n":
        c = text[i]
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n and text[i + 1] in '\\"$`\n':
                    if text[i + 1] != "\n":
                        out.append(text[i + 1])
                    i += 2
                else:
                    out.append(text[i])
                    i += 1
            i += 1
        elif c == "'":
            end = text.find("'", i + 1)
            end = n if end == -1 else end
            out.append(text[i + 1 : end])
            i = end + 1
        elif c == "\\" and i + 1 < n:
            if text[i + 1] != "\n":
                out.append(text[i + 1])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out), i


def _next_line(text: str, i: int) -> int:
    end = text.find("\n", i)
    return len(text) if end == -1 else end + 1


def resolve_secret(key: str, ref: str, cwd: str | None = None) -> str:
    kind, _, rest = ref.partition(":")
    if kind == "env":
        if rest not in os.environ:
            raise ConfigError(f"secret {key}: environment variable {rest} is not set")
        return os.environ[rest]
    if kind == "file":
        try:
            with open(rest, encoding="utf-8") as fh:
                return fh.read().rstrip("\n")
        except OSError as exc:
            raise ConfigError(f"secret {key}: cannot read {rest}: {exc.strerror}") from None
    try:
        proc = subprocess.run(
            rest, shell=True, capture_output=True, text=True, timeout=60, cwd=cwd, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise ConfigError(f"secret {key}: command did not finish within 60s") from None
    if proc.returncode != 0:
        raise ConfigError(f"secret {key}: command exited {proc.returncode}")
    return proc.stdout.rstrip("\n")


def resolve(hosts: tuple[Host, ...], cwd: str | None = None) -> dict[str, HostEnv]:
    """Every host's env, secrets resolved once each; empty when no host has any [env]."""
    cache: dict[tuple[str, str], str] = {}
    out = {}
    for host in hosts:
        values, secret_keys = {}, set()
        for key, item in host.env:
            values[key] = _value(key, item, cache, cwd)
            if item.secret:
                secret_keys.add(key)
        out[host.name] = HostEnv(values, frozenset(secret_keys))
    if not any(e.values for e in out.values()):
        return {}
    return out


def mask_readable(hosts: tuple[Host, ...], cwd: str | None = None, commands: bool = False) -> list[str]:
    """Register the secrets this machine can read for flows that write no env but print or
    record what hosts say: without running anything (env:, file:) for a rollback (restart,
    hooks, down migrations), and with `commands` (cmd: too) for `run` and `logs`, whose whole
    point is to print it. One it cannot read is skipped, never fatal: the list says which
    (one line each, for the operator: its value is shown as is)."""
    unread: dict[tuple[str, str], str] = {}
    done: set[tuple[str, str]] = set()
    for host in hosts:
        for key, item in host.env:
            if not item.secret or (key, item.secret) in done or (item.secret.startswith("cmd:") and not commands):
                continue
            done.add((key, item.secret))
            try:
                add_secret(resolve_secret(key, item.secret, cwd))
            except ConfigError as exc:
                unread[(key, item.secret)] = f"{exc}: its value is not masked in this output"
    return list(unread.values())


def _value(key: str, item: EnvValue, cache: dict[tuple[str, str], str], cwd: str | None) -> str:
    if not item.secret:
        check(key, item.value)
        return item.value
    if (key, item.secret) not in cache:
        value = resolve_secret(key, item.secret, cwd)
        check(key, value, secret=True)
        add_secret(value)
        cache[(key, item.secret)] = value
    return cache[(key, item.secret)]


def diff(old: dict[str, str], new: HostEnv) -> list[tuple[str, str, str, str]]:
    """(key, change, old, new) for keys that differ; secret values masked."""
    rows = []
    for key in sorted(set(old) | set(new.values)):
        before, after = old.get(key), new.values.get(key)
        if before == after:
            continue
        change = "added" if before is None else "removed" if after is None else "changed"
        secret = key in new.secret_keys or after is None  # a removed key may have been a secret
        rows.append((key, change, _shown(before, secret), _shown(after, secret)))
    return rows


def _shown(value: str | None, secret: bool) -> str:
    return "" if value is None else ("(secret)" if secret else value)
