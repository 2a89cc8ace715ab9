"""Checks hosts.toml's tables against deployer.config.schema and builds the settings of each.

A problem stops the section it is in (a table, a host, a stage); `Reader.section` records it and the
other sections are still read, so one run reports every problem of the file, one line each.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from deployer.config import schema
from deployer.config.settings import (
    ENV_NAME,
    AppSettings,
    BuildSettings,
    EnvValue,
    Hook,
    MigrateSettings,
    NotifySettings,
    PipelineSettings,
    RestartSettings,
    SSHSettings,
    VerifySettings,
)
from deployer.errors import ConfigError, did_you_mean

T = TypeVar("T")
D = TypeVar("D")
Doc = dict[str, Any]  # a TOML table as tomllib returns it

RESERVED_SHARED = {".deployer", "REVISION"}
SECRET_SOURCES = ("env", "file", "cmd")
WEBHOOK_REFS = ("env", "file")  # a webhook URL kept in the environment or a file (CI secret stores)
_USER = re.compile(r"^[a-z_][a-z0-9_.-]*$")
# app.name names files and a systemd unit on hosts (deployer setup): no shell or path characters
_APP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class Reported(ConfigError):
    """A section whose problems are already in the reader's list: stop reading that section."""


class Reader:
    """Validates one file's tables, every message prefixed with the file name (and line)."""

    def __init__(self, path: Path, line_of: Callable[[str], int | None] = lambda where: None):
        self.path = path
        self.base = path.parent
        self.line_of = line_of
        self.problems: list[str] = []

    def fail(self, where: str, message: str) -> ConfigError:
        line = self.line_of(where)
        return ConfigError(f"{self.path}:{line}: {where}: {message}" if line else f"{self.path}: {where}: {message}")

    def note(self, where: str, message: str) -> None:
        self.problems.append(str(self.fail(where, message)))

    def section(self, read: Callable[..., T], *args: Any, default: D) -> T | D:
        """read(*args), or default once its problem is recorded."""
        try:
            return read(*args)
        except Reported:
            return default
        except ConfigError as exc:
            self.problems.append(str(exc))
            return default

    def reported(self, read: Callable[..., T], *args: Any) -> T:
        """read(*args) outside parse (hosts_command runs when its stage is used): its problems raised."""
        self.problems = []
        try:
            return read(*args)
        except Reported:
            raise ConfigError("\n".join(self.problems)) from None

    def table(self, data: object, where: str, keys: schema.Table, complete: bool = True) -> Doc:
        """data when every key is known and its value has the schema's type, range and choices, and
        (when the table is complete, not an override) every required key is there."""
        if not isinstance(data, dict):
            raise self.fail(where, "expected a table")
        before = len(self.problems)
        for name in (n for n, key in keys.items() if complete and key.required and n not in data):
            self.note(f"{where}.{name}", f"missing (expected {keys[name].expected})")
        for name, value in data.items():
            if name not in keys:
                hint = did_you_mean(name, keys) or f" (expected one of: {', '.join(keys)})"
                self.note(f"{where}.{name}", "unknown key" + hint)
            elif problem := keys[name].problem(value):
                self.note(f"{where}.{name}", problem)
        if len(self.problems) > before:
            raise Reported("")
        return data

    def resolve(self, value: str) -> str:
        path = Path(os.path.expanduser(value))
        return str(path if path.is_absolute() else (self.base / path).resolve())

    def rel_paths(self, values: list[object], where: str) -> tuple[str, ...]:
        out = []
        for value in values:
            if not isinstance(value, str) or not value.strip():
                raise self.fail(where, f"expected relative paths, got {value!r}")
            norm = posixpath.normpath(value)
            if value.startswith("/") or norm == ".." or norm.startswith("../") or norm == ".":
                raise self.fail(where, f"{value!r} must be a relative path inside the release")
            if norm.split("/")[0] in RESERVED_SHARED:
                raise self.fail(where, f"{value!r} is reserved by the deployer")
            out.append(norm)
        return tuple(out)

    def names(self, values: list[object], where: str) -> tuple[str, ...]:
        if not all(isinstance(v, str) and v for v in values):
            raise self.fail(where, f"expected a list of names, got {values!r}")
        return tuple(str(v) for v in values)

    def app(self, data: object, where: str, base: AppSettings | None) -> AppSettings:
        given = self.table(data, where, schema.APP, complete=base is None)
        if base is None:
            base = AppSettings(name=given.get("name") or schema.APP["name"].default, deploy_to="/")
        values = dict(given)  # as given, but for the paths and the user checked below
        if "name" in given and not _APP_NAME.fullmatch(given["name"]):
            raise self.fail(
                f"{where}.name",
                "expected letters, digits, '.', '_' or '-', starting with a letter or digit, at most 64 "
                f"(it names files and a systemd unit on the hosts), got {given['name']!r}",
            )
        if "deploy_to" in given:
            d = given["deploy_to"]
            if not d.startswith("/") or posixpath.normpath(d) != d.rstrip("/") or d.rstrip("/") == "":
                raise self.fail(f"{where}.deploy_to", f"expected an absolute, normalised path, got {d!r}")
            if "\0" in d:
                raise self.fail(f"{where}.deploy_to", "contains a NUL byte (no path can)")
            if "\n" in d:
                raise self.fail(f"{where}.deploy_to", "must not contain newlines")
            values["deploy_to"] = d.rstrip("/")
        if "env_file" in given:
            values["env_file"] = self.rel_paths([given["env_file"]], f"{where}.env_file")[0]
        if given.get("run_as") and not _USER.match(given["run_as"]):
            raise self.fail(f"{where}.run_as", f"expected a user name, got {given['run_as']!r}")
        for key in ("shared_dirs", "shared_files", "generated"):
            if key in given:
                values[key] = self.rel_paths(given[key], f"{where}.{key}")
        app = replace(base, **values)
        self.shared_apart(app, where)
        return app

    def shared_apart(self, app: AppSettings, where: str) -> None:
        """No shared path at or under another: linking the inner one would go through the outer
        one's link into shared/ (`log` and `log/app.log` made the file a link to itself)."""
        paths = [(p, "shared_dirs") for p in app.shared_dirs] + [(p, "shared_files") for p in app.shared_files]
        for i, (a, key_a) in enumerate(paths):
            for b, key_b in paths[i + 1 :]:
                if a == b or b.startswith(a + "/") or a.startswith(b + "/"):
                    raise self.fail(
                        f"{where}.{key_b}", f"{b!r} overlaps {key_a} {a!r} (shared paths must not contain one another)"
                    )
        env = app.env_file  # linked like a shared file; the same path as one is the same file
        for p, key in paths:
            if (env == p and key == "shared_dirs") or env.startswith(p + "/") or p.startswith(env + "/"):
                raise self.fail(
                    f"{where}.env_file",
                    f"{env!r} overlaps {key} {p!r} (the env file is linked into releases like a shared file)",
                )

    def build(self, data: object) -> BuildSettings:
        given = self.table(data, "build", schema.BUILD)

        def get(key: str) -> Any:
            return given.get(key, schema.BUILD[key].default)

        return BuildSettings(
            source=Path(self.resolve(get("source"))),
            command=get("command"),
            include=self.rel_paths(get("include"), "build.include"),
            output=Path(self.resolve(get("output"))),
        )

    def ssh(self, data: object, where: str, base: SSHSettings) -> SSHSettings:
        values = dict(self.table(data, where, schema.SSH))
        for key in ("key", "known_hosts", "config_file"):
            if key in values:
                values[key] = self.resolve(values[key])
        if values.get("gateway") and any(c.isspace() for c in values["gateway"]):
            raise self.fail(f"{where}.gateway", f"expected [user@]host[:port], got {values['gateway']!r}")
        return replace(base, **values)

    def env(self, data: object, where: str) -> dict[str, EnvValue]:
        """KEY = "value" | KEY = { secret = "env:NAME" | "file:PATH" | "cmd:COMMAND", roles = [...] }."""
        if not isinstance(data, dict):
            raise self.fail(where, "expected a table of KEY = value")
        out = {}
        for key, value in data.items():
            at = f"{where}.{key}"
            if not ENV_NAME.fullmatch(key):
                raise self.fail(at, "expected a variable name (letters, digits, _)")
            if isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
                out[key] = EnvValue(value=str(value))
                continue
            if not isinstance(value, dict):
                raise self.fail(at, f'expected a string or {{ secret = "env:NAME" }}, got {value!r}')
            self.table(value, at, schema.SECRET)
            ref = value.get("secret", "")
            kind, _, rest = ref.partition(":")
            if kind not in SECRET_SOURCES or not rest:
                raise self.fail(f"{at}.secret", f"expected env:NAME, file:PATH or cmd:COMMAND, got {ref!r}")
            if kind == "file":
                ref = "file:" + self.resolve(rest)
            out[key] = EnvValue(secret=ref, roles=self.names(value.get("roles", []), f"{at}.roles"))
        return out

    def pipeline(self, data: Doc, where: str, base: PipelineSettings) -> PipelineSettings:
        """The [hooks] [migrate] [smoke] [verify] [restart] [notify] tables; each replaces base's."""
        values: dict[str, Any] = {}
        if "hooks" in data:
            values["hooks"] = self.hooks(data["hooks"], f"{where}hooks")
        if "migrate" in data:
            m = self.table(data["migrate"], f"{where}migrate", schema.MIGRATE)
            if not m.get("command"):
                raise self.fail(f"{where}migrate.command", "missing (expected a shell command)")
            values["migrate"] = MigrateSettings(**m)
        if "smoke" in data:
            values["smoke"] = self.table(data["smoke"], f"{where}smoke", schema.SMOKE).get("command", "")
        if "verify" in data:
            v = dict(self.table(data["verify"], f"{where}verify", schema.VERIFY))
            if "from" in v:
                v["run_from"] = v.pop("from")
            url = v.get("url", "")
            if url and not url.startswith(("http://", "https://")):
                raise self.fail(f"{where}verify.url", f"expected an http(s) URL, got {url!r}")
            values["verify"] = VerifySettings(**v)
        if "restart" in data:
            r = self.table(data["restart"], f"{where}restart", schema.RESTART)
            values["restart"] = RestartSettings(
                command=r.get("command", ""), roles=self.names(r.get("roles", []), f"{where}restart.roles")
            )
        if "notify" in data:
            values["notify"] = self.notify(data["notify"], f"{where}notify")
        return replace(base, **values)

    def notify(self, data: object, where: str) -> NotifySettings:
        n = dict(self.table(data, where, schema.NOTIFY))
        events = schema.NOTIFY["events"].choices
        for e in n.get("events", ()):
            if e not in events:
                raise self.fail(f"{where}.events", f"unknown event {e!r} (expected: {', '.join(events)})")
        hooks = []
        for url in n.get("webhooks", ()):
            kind, _, rest = url.partition(":") if isinstance(url, str) else ("", "", "")
            if kind in WEBHOOK_REFS and rest and not rest.startswith("//"):
                url = "file:" + self.resolve(rest) if kind == "file" else url  # env:NAME, file:PATH
            elif not isinstance(url, str) or not url.startswith(("http://", "https://")):
                shown = url.split(":", 1)[0] + ":…" if isinstance(url, str) else repr(url)  # may hold a token
                raise self.fail(f"{where}.webhooks", f"expected http(s) URLs, env:NAME or file:PATH, got {shown}")
            hooks.append(url)
        n.update({k: tuple(n[k]) for k in ("events",) if k in n}, webhooks=tuple(hooks))
        return NotifySettings(**n)

    def hooks(self, data: object, where: str) -> tuple[Hook, ...]:
        if not isinstance(data, dict):
            raise self.fail(where, "expected a table of hook points")
        out = []
        for point, entries in data.items():
            if point not in schema.HOOK_POINTS:
                raise self.fail(
                    f"{where}.{point}", f"unknown hook point (expected one of: {', '.join(schema.HOOK_POINTS)})"
                )
            if isinstance(entries, dict):
                entries = [entries]
            if not isinstance(entries, list):
                raise self.fail(f"{where}.{point}", "expected a list of hook tables")
            for i, entry in enumerate(entries):
                at = f"{where}.{point}[{i}]"
                h = self.table(entry, at, schema.HOOK)
                kinds = [k for k in ("command", "local", "python") if h.get(k)]
                if len(kinds) != 1:
                    raise self.fail(at, "expected exactly one of command, local, python")
                if h.get("python") and ":" not in h["python"]:
                    raise self.fail(f"{at}.python", f"expected module:function, got {h['python']!r}")
                out.append(Hook(point=point, **{**h, "roles": self.names(h.get("roles", []), f"{at}.roles")}))
        return tuple(out)
