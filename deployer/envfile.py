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

from .config import EnvValue, Host
from .errors import ConfigError
from .output import add_secret

_PLAIN = re.compile(r"^[A-Za-z0-9_./:@+,=-]*$")


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


def quote(value: str) -> str:
    """dotenv quoting: plain words as is, anything else double-quoted with \\ " $ ` and newlines escaped."""
    if _PLAIN.match(value):
        return value
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("`", "\\`")
               .replace("\n", "\\n"))
    return f'"{escaped}"'


def unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        out, i, body = [], 0, value[1:-1]
        while i < len(body):
            if body[i] == "\\" and i + 1 < len(body):
                out.append("\n" if body[i + 1] == "n" else body[i + 1])
                i += 2
            else:
                out.append(body[i])
                i += 1
        return "".join(out)
    return value


def render(values: dict[str, str]) -> bytes:
    return "".join(f"{k}={quote(v)}\n" for k, v in sorted(values.items())).encode()


def parse(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out[key.strip()] = unquote(value.strip())
    return out


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
        proc = subprocess.run(rest, shell=True, capture_output=True, text=True, timeout=60, cwd=cwd,
                              stdin=subprocess.DEVNULL)
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


def _value(key: str, item: EnvValue, cache: dict, cwd: str | None) -> str:
    if not item.secret:
        return item.value
    if (key, item.secret) not in cache:
        value = resolve_secret(key, item.secret, cwd)
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
        secret = key in new.secret_keys or after is None     # a removed key may have been a secret

        def show(v):
            return "" if v is None else ("(secret)" if secret else v)
        rows.append((key, change, show(before), show(after)))
    return rows
