"""hosts.toml → frozen, validated settings. Read once; nothing downstream reads the file.

Every problem becomes one line naming the file (and line, where it can be found), the key and what is
expected; a file's problems are all reported in one run (one ConfigError, one line each).
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import subprocess
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

from deployer.config.settings import (
    AppSettings,
    BuildSettings,
    Config,
    EnvValue,
    Hook,
    Host,
    MigrateSettings,
    NotifySettings,
    PipelineSettings,
    RestartSettings,
    SSHSettings,
    Stage,
    VerifySettings,
)
from deployer.errors import ConfigError, did_you_mean

DEFAULT_FILE = "hosts.toml"
ENV_VAR = "DEPLOYER_CONFIG"
HOST_KEY_POLICIES = ("strict", "accept-new")
RESERVED_SHARED = {".deployer", "REVISION"}


_NAME = re.compile(r"^[a-z_][a-z0-9_.-]*$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_SOURCES = ("env", "file", "cmd")
WEBHOOK_REFS = ("env", "file")          # a webhook URL kept in the environment or a file (CI secret stores)

HOOK_POINTS = tuple(f"{when}_{step}" for step in ("prepare", "migrate", "smoke", "switch", "verify", "finish",
                                                    "rollback") for when in ("before", "after"))



# ---- schema: key -> (python type, description for messages) --------------------------------

_APP = {
    "name": (str, "a string"),
    "deploy_to": (str, "an absolute path"),
    "keep_releases": (int, "an integer >= 1"),
    "shared_dirs": (list, "a list of relative paths"),
    "shared_files": (list, "a list of relative paths"),
    "recipe": (str, "a recipe name (deployer.recipes.<name>)"),
    "env_file": (str, "a relative path"),
    "run_as": (str, "a user name"),
    "generated": (list, "a list of relative paths created in the release by hooks"),
    "hardlink_releases": (bool, "true or false"),
    "lock_ttl": (int, "a whole number of seconds >= 1"),
}
_BUILD = {
    "source": (str, "a path to a git work tree"),
    "command": (str, "a shell command"),
    "include": (list, "a list of relative paths"),
    "output": (str, "a directory path"),
}
MAX_PERSIST = 86400
_SSH = {
    "user": (str, "a user name"),
    "port": (int, "a port number 1-65535"),
    "key": (str, "a path to a private key"),
    "known_hosts": (str, "a path to a known_hosts file"),
    "host_key_policy": (str, "one of " + ", ".join(HOST_KEY_POLICIES)),
    "connect_timeout": (int, "seconds, an integer >= 1"),
    "keepalive": (int, "seconds, an integer >= 1"),
    "command_timeout": (int, "seconds, an integer >= 1"),
    "config": (bool, "true or false"),
    "config_file": (str, "a path to an ssh config file"),
    "gateway": (str, "[user@]host[:port] of a jump host"),
    "forward_agent": (bool, "true or false"),
    "persist": (int, "seconds, an integer >= 0 (0: off)"),
}
_PIPELINE_TABLES = ("hooks", "migrate", "smoke", "verify", "restart", "notify")
_STAGE = {
    "hosts": (list, "a list of host names or host tables"),
    "requires": ((str, list), "a stage name or a list of stage names"),
    "hosts_command": (str, "a local command printing the hosts as JSON"),
    "env": (dict, "a table of KEY = value or KEY = { secret = \"env:NAME\" }"),
    "role_env": (dict, "a table of role = { KEY = value }"),
    "app": (dict, "a table of [app] keys to override"),
    "ssh": (dict, "a table of [ssh] keys to override"),
    **{name: (dict, f"a [{name}] table replacing the global one for this stage") for name in _PIPELINE_TABLES},
}
_HOOK = {
    "command": (str, "a shell command run on the hosts in the release dir"),
    "local": (str, "a shell command run on this machine"),
    "python": (str, "module:function"),
    "roles": (list, "a list of role names"),
    "once": (bool, "true or false"),
}
_MIGRATE = {
    "command": (str, "a shell command"),
    "role": (str, "a role name"),
    "rollback_command": (str, "a shell command"),
}
_SMOKE = {"command": (str, "a shell command")}
_VERIFY = {
    "url": (str, "an http(s) URL"),
    "status": (int, "an HTTP status code"),
    "body": (str, "a substring the body must contain"),
    "timeout": (int, "seconds, an integer >= 1"),
    "retries": (int, "an integer >= 1"),
    "interval": ((int, float), "seconds"),
    "command": (str, "a shell command"),
    "from": (str, "host or local"),
}
_RESTART = {"command": (str, "a shell command"), "roles": (list, "a list of role names")}
_NOTIFY = {
    "webhooks": (list, "a list of URLs (or env:NAME / file:PATH holding one)"),
    "command": (str, "a shell command"),
    "events": (list, "a list of: started, succeeded, failed, rolled back"),
    "timeout": (int, "seconds, an integer >= 1"),
}
EVENTS = ("started", "succeeded", "failed", "rolled back")
_HOST = {
    "host": (str, "a host name or address"),
    "name": (str, "a display name"),
    "port": (int, "a port number 1-65535"),
    "user": (str, "a user name"),
    "key": (str, "a path to a private key"),
    "roles": (list, "a list of role names"),
    "env": (dict, "a table of KEY = value"),
}
_TOP = {"app": dict, "build": dict, "ssh": dict, "stages": dict, "env": dict,
        **{name: dict for name in _PIPELINE_TABLES}}


class _Reported(ConfigError):
    """A section whose problems are already in the reader's list: stop reading that section."""


class _Reader:
    """Validates one file's tables, every message prefixed with the file name (and line).

    A problem stops the section it is in (a table, a host, a stage); `section` records it and
    the other sections are still read, so one run reports every problem of the file."""

    def __init__(self, path: Path, text: str = ""):
        self.path = path
        self.base = path.parent
        self.text = text
        self.problems: list[str] = []

    def fail(self, where: str, message: str) -> ConfigError:
        line = locate(self.text, where)
        return ConfigError(f"{self.path}:{line}: {where}: {message}" if line else f"{self.path}: {where}: {message}")

    def section(self, read, *args, default=None):
        """read(*args), or default once its problem is recorded."""
        try:
            return read(*args)
        except _Reported:
            return default
        except ConfigError as exc:
            self.problems.append(str(exc))
            return default

    def reported(self, read, *args):
        """read(*args) outside parse (hosts_command runs when its stage is used): its problems raised."""
        self.problems = []
        try:
            return read(*args)
        except _Reported:
            raise ConfigError("\n".join(self.problems)) from None

    def table(self, data: Any, where: str, schema: dict) -> dict:
        if not isinstance(data, dict):
            raise self.fail(where, "expected a table")
        bad = []
        for key, value in data.items():
            if key not in schema:
                hint = did_you_mean(key, schema) or f" (expected one of: {', '.join(schema)})"
                bad.append(self.fail(f"{where}.{key}", "unknown key" + hint))
                continue
            kind, expected = schema[key]
            ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)
            if not ok:
                bad.append(self.fail(f"{where}.{key}", f"expected {expected}, got {value!r}"))
        if bad:
            self.problems += [str(e) for e in bad]
            raise _Reported("")
        return data

    def resolve(self, value: str) -> str:
        path = Path(os.path.expanduser(value))
        return str(path if path.is_absolute() else (self.base / path).resolve())

    def rel_paths(self, values: list, where: str) -> tuple[str, ...]:
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

    def app(self, data: dict, where: str, base: AppSettings | None) -> AppSettings:
        data = self.table(data, where, _APP)
        if base is None:
            if "deploy_to" not in data:
                raise self.fail(f"{where}.deploy_to", "missing (expected an absolute path)")
            name = data.get("name") or "app"
            base = AppSettings(name=name, deploy_to="/")
        values: dict[str, Any] = {}
        if "name" in data:
            values["name"] = data["name"]
        if "deploy_to" in data:
            d = data["deploy_to"]
            if not d.startswith("/") or posixpath.normpath(d) != d.rstrip("/") or d.rstrip("/") == "":
                raise self.fail(f"{where}.deploy_to", f"expected an absolute, normalised path, got {d!r}")
            if "\n" in d or "\0" in d:
                raise self.fail(f"{where}.deploy_to", "must not contain newlines")
            values["deploy_to"] = d.rstrip("/")
        if "keep_releases" in data:
            if data["keep_releases"] < 1:
                raise self.fail(f"{where}.keep_releases", f"expected an integer >= 1, got {data['keep_releases']}")
            values["keep_releases"] = data["keep_releases"]
        if "lock_ttl" in data:
            if data["lock_ttl"] < 1:
                raise self.fail(f"{where}.lock_ttl", f"expected a whole number of seconds >= 1, got {data['lock_ttl']}")
            values["lock_ttl"] = data["lock_ttl"]
        if "recipe" in data:
            values["recipe"] = data["recipe"]
        if "env_file" in data:
            values["env_file"] = self.rel_paths([data["env_file"]], f"{where}.env_file")[0]
        if "run_as" in data:
            if data["run_as"] and not _NAME.match(data["run_as"]):
                raise self.fail(f"{where}.run_as", f"expected a user name, got {data['run_as']!r}")
            values["run_as"] = data["run_as"]
        for key in ("shared_dirs", "shared_files", "generated"):
            if key in data:
                values[key] = self.rel_paths(data[key], f"{where}.{key}")
        if "hardlink_releases" in data:
            values["hardlink_releases"] = data["hardlink_releases"]
        app = replace(base, **values)
        self.shared_apart(app, where)
        return app

    def shared_apart(self, app: AppSettings, where: str) -> None:
        """No shared path at or under another: linking the inner one would go through the outer
        one's link into shared/ (`log` and `log/app.log` made the file a link to itself)."""
        paths = [(p, "shared_dirs") for p in app.shared_dirs] + [(p, "shared_files") for p in app.shared_files]
        for i, (a, key_a) in enumerate(paths):
            for b, key_b in paths[i + 1:]:
                if a == b or b.startswith(a + "/") or a.startswith(b + "/"):
                    raise self.fail(f"{where}.{key_b}", f"{b!r} overlaps {key_a} {a!r} "
                                    "(shared paths must not contain one another)")
        env = app.env_file          # linked like a shared file; the same path as one is the same file
        for p, key in paths:
            if (env == p and key == "shared_dirs") or env.startswith(p + "/") or p.startswith(env + "/"):
                raise self.fail(f"{where}.env_file", f"{env!r} overlaps {key} {p!r} "
                                "(the env file is linked into releases like a shared file)")

    def ssh(self, data: dict, where: str, base: SSHSettings) -> SSHSettings:
        data = self.table(data, where, _SSH)
        values = dict(data)
        if "port" in values and not 1 <= values["port"] <= 65535:
            raise self.fail(f"{where}.port", f"expected a port number 1-65535, got {values['port']}")
        if "host_key_policy" in values and values["host_key_policy"] not in HOST_KEY_POLICIES:
            raise self.fail(f"{where}.host_key_policy",
                            f"expected one of {', '.join(HOST_KEY_POLICIES)}, got {values['host_key_policy']!r}"
                            " (a changed host key is never accepted)")
        for key in ("connect_timeout", "keepalive", "command_timeout"):
            if key in values and values[key] < 1:
                raise self.fail(f"{where}.{key}", f"expected seconds >= 1, got {values[key]}")
        if "persist" in values and not 0 <= values["persist"] <= MAX_PERSIST:
            raise self.fail(f"{where}.persist", f"expected seconds 0-{MAX_PERSIST} (0: off), got {values['persist']}")
        for key in ("key", "known_hosts", "config_file"):
            if key in values:
                values[key] = self.resolve(values[key])
        if values.get("gateway") and any(c.isspace() for c in values["gateway"]):
            raise self.fail(f"{where}.gateway", f"expected [user@]host[:port], got {values['gateway']!r}")
        return replace(base, **values)

    def env(self, data: Any, where: str) -> dict[str, EnvValue]:
        """KEY = "value" | KEY = { secret = "env:NAME" | "file:PATH" | "cmd:COMMAND", roles = [...] }."""
        if not isinstance(data, dict):
            raise self.fail(where, "expected a table of KEY = value")
        out = {}
        for key, value in data.items():
            at = f"{where}.{key}"
            if not _ENV_KEY.fullmatch(key):
                raise self.fail(at, "expected a variable name (letters, digits, _)")
            if isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
                out[key] = EnvValue(value=str(value))
                continue
            if not isinstance(value, dict):
                raise self.fail(at, f"expected a string or {{ secret = \"env:NAME\" }}, got {value!r}")
            self.table(value, at, {"secret": (str, "env:NAME, file:PATH or cmd:COMMAND"),
                                   "roles": (list, "a list of role names")})
            ref = value.get("secret", "")
            kind, _, rest = ref.partition(":")
            if kind not in SECRET_SOURCES or not rest:
                raise self.fail(f"{at}.secret", f"expected env:NAME, file:PATH or cmd:COMMAND, got {ref!r}")
            if kind == "file":
                ref = "file:" + self.resolve(rest)
            out[key] = EnvValue(secret=ref, roles=self.names(value.get("roles", []), f"{at}.roles"))
        return out

    def host(self, entry: Any, where: str, ssh: SSHSettings, env: dict | None = None,
             role_env: dict | None = None) -> Host:
        if isinstance(entry, str):
            entry = _parse_host_string(entry, lambda m: self.fail(where, m))
        data = self.table(entry, where, _HOST)
        address = data.get("host")
        if isinstance(address, str) and address.startswith("[") and address.endswith("]"):
            address = address[1:-1]
        if not address or any(c.isspace() for c in address) or address.startswith("-"):
            raise self.fail(f"{where}.host", f"expected a host name or address, got {address!r}")
        overrides = {k: data[k] for k in ("port", "user", "key") if k in data}
        host_ssh = self.ssh(overrides, where, ssh) if overrides else ssh
        roles = data.get("roles", [])
        if not all(isinstance(r, str) and r for r in roles):
            raise self.fail(f"{where}.roles", f"expected a list of role names, got {roles!r}")
        shown = f"[{address}]" if ":" in address else address
        default_name = address if host_ssh.port in (None, 22) else f"{shown}:{host_ssh.port}"
        merged = dict(env or {})
        for role in roles:
            merged.update((role_env or {}).get(role, {}))
        merged.update(self.env(data.get("env", {}), f"{where}.env"))
        merged = {k: v for k, v in merged.items() if not v.roles or set(v.roles) & set(roles)}
        return Host(name=data.get("name", default_name), address=address, ssh=host_ssh, roles=tuple(roles),
                    env=tuple(sorted(merged.items())))

    def pipeline(self, data: dict, where: str, base: PipelineSettings) -> PipelineSettings:
        """The [hooks] [migrate] [smoke] [verify] [restart] [notify] tables; each replaces base's."""
        values: dict[str, Any] = {}
        if "hooks" in data:
            values["hooks"] = self.hooks(data["hooks"], f"{where}hooks")
        if "migrate" in data:
            m = self.table(data["migrate"], f"{where}migrate", _MIGRATE)
            if not m.get("command"):
                raise self.fail(f"{where}migrate.command", "missing (expected a shell command)")
            values["migrate"] = MigrateSettings(**m)
        if "smoke" in data:
            values["smoke"] = self.table(data["smoke"], f"{where}smoke", _SMOKE).get("command", "")
        if "verify" in data:
            v = dict(self.table(data["verify"], f"{where}verify", _VERIFY))
            run_from = v.pop("from", "host")
            if run_from not in ("host", "local"):
                raise self.fail(f"{where}verify.from", f"expected host or local, got {run_from!r}")
            url = v.get("url", "")
            if url and not url.startswith(("http://", "https://")):
                raise self.fail(f"{where}verify.url", f"expected an http(s) URL, got {url!r}")
            for key in ("timeout", "retries"):
                if key in v and v[key] < 1:
                    raise self.fail(f"{where}verify.{key}", f"expected an integer >= 1, got {v[key]}")
            values["verify"] = VerifySettings(run_from=run_from, **v)
        if "restart" in data:
            r = self.table(data["restart"], f"{where}restart", _RESTART)
            values["restart"] = RestartSettings(command=r.get("command", ""), roles=self.names(r.get("roles", []),
                                                                                              f"{where}restart.roles"))
        if "notify" in data:
            n = self.table(data["notify"], f"{where}notify", _NOTIFY)
            events = tuple(n.get("events", EVENTS))
            for e in events:
                if e not in EVENTS:
                    raise self.fail(f"{where}notify.events", f"unknown event {e!r} (expected: {', '.join(EVENTS)})")
            hooks = []
            for url in n.get("webhooks", ()):
                kind, _, rest = url.partition(":") if isinstance(url, str) else ("", "", "")
                if kind in WEBHOOK_REFS and rest and not rest.startswith("//"):
                    url = "file:" + self.resolve(rest) if kind == "file" else url    # env:NAME, file:PATH
                elif not isinstance(url, str) or not url.startswith(("http://", "https://")):
                    shown = url.split(":", 1)[0] + ":…" if isinstance(url, str) else repr(url)   # may hold a token
                    raise self.fail(f"{where}notify.webhooks", f"expected http(s) URLs, env:NAME or file:PATH, "
                                                               f"got {shown}")
                hooks.append(url)
            hooks = tuple(hooks)
            values["notify"] = NotifySettings(webhooks=hooks, command=n.get("command", ""), events=events,
                                              timeout=n.get("timeout", 5))
        return replace(base, **values)

    def hooks(self, data: Any, where: str) -> tuple[Hook, ...]:
        if not isinstance(data, dict):
            raise self.fail(where, "expected a table of hook points")
        out = []
        for point, entries in data.items():
            if point not in HOOK_POINTS:
                raise self.fail(f"{where}.{point}", f"unknown hook point (expected one of: {', '.join(HOOK_POINTS)})")
            if isinstance(entries, dict):
                entries = [entries]
            if not isinstance(entries, list):
                raise self.fail(f"{where}.{point}", "expected a list of hook tables")
            for i, entry in enumerate(entries):
                at = f"{where}.{point}[{i}]"
                h = self.table(entry, at, _HOOK)
                kinds = [k for k in ("command", "local", "python") if h.get(k)]
                if len(kinds) != 1:
                    raise self.fail(at, "expected exactly one of command, local, python")
                if h.get("python") and ":" not in h["python"]:
                    raise self.fail(f"{at}.python", f"expected module:function, got {h['python']!r}")
                out.append(Hook(point=point, command=h.get("command", ""), local=h.get("local", ""),
                                python=h.get("python", ""), roles=self.names(h.get("roles", []), f"{at}.roles"),
                                once=h.get("once", False)))
        return tuple(out)

    def discover(self, command: str, where: str) -> list:
        """Hosts from a local command printing JSON: a list of host entries, or {"hosts": [...]}."""
        try:
            proc = subprocess.run(command, shell=True, cwd=self.base, capture_output=True, text=True, timeout=60,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise self.fail(where, f"{command!r} did not finish within 60s") from None
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise self.fail(where, f"{command!r} exited {proc.returncode}: {tail}")
        try:
            data = json.loads(proc.stdout)
        except ValueError as exc:
            raise self.fail(where, f"{command!r} did not print JSON: {exc}") from None
        if isinstance(data, dict):
            data = data.get("hosts")
        if not isinstance(data, list):
            raise self.fail(where, f"{command!r} must print a JSON list of hosts (or {{\"hosts\": [...]}})")
        return data

    def names(self, values: list, where: str) -> tuple[str, ...]:
        if not all(isinstance(v, str) and v for v in values):
            raise self.fail(where, f"expected a list of names, got {values!r}")
        return tuple(values)

    def stage(self, name: str, data: Any, app: AppSettings, ssh: SSHSettings,
              pipeline: PipelineSettings, env: dict | None = None) -> Stage:
        where = f"stages.{name}"
        data = self.table(data, where, _STAGE)
        known = len(self.problems)
        stage_app = self.section(self.app, data["app"], f"{where}.app", app, default=app) if "app" in data else app
        stage_ssh = self.section(self.ssh, data["ssh"], f"{where}.ssh", ssh, default=ssh) if "ssh" in data else ssh
        stage_env = {**(env or {}), **self.section(self.env, data.get("env", {}), f"{where}.env", default={})}
        role_env = data.get("role_env", {})
        role_env = {role: self.section(self.env, body, f"{where}.role_env.{role}", default={})
                    for role, body in role_env.items()}
        entries = data.get("hosts")

        def build(items: list) -> tuple[Host, ...]:
            if not items:
                raise self.fail(f"{where}.hosts", "missing or empty (expected a list of hosts)")
            hosts = tuple(self.section(self.host, e, f"{where}.hosts[{i}]", stage_ssh, stage_env, role_env)
                          for i, e in enumerate(items))
            if None in hosts:
                raise _Reported("")
            seen: set[str] = set()
            for h in hosts:
                if h.name in seen:
                    raise self.fail(f"{where}.hosts", f"host {h.name!r} listed twice")
                seen.add(h.name)
            return hosts

        command = data.get("hosts_command", "")
        discover = None
        if command:
            if entries:
                raise self.fail(f"{where}.hosts_command", "give either hosts or hosts_command, not both")
            hosts: tuple[Host, ...] = ()
            discover = lambda: self.reported(build, self.discover(command, f"{where}.hosts_command"))  # noqa: E731
        else:
            hosts = self.section(build, entries, default=())
        stage_pipeline = pipeline
        for table in _PIPELINE_TABLES:
            if table in data:
                stage_pipeline = self.section(self.pipeline, {table: data[table]}, f"{where}.", stage_pipeline,
                                              default=stage_pipeline)
        if len(self.problems) > known:
            raise _Reported("")
        requires = data.get("requires", [])
        requires = (requires,) if isinstance(requires, str) else tuple(self.names(requires, f"{where}.requires"))
        return Stage(name=name, app=stage_app, hosts=hosts, pipeline=stage_pipeline, requires=requires,
                     hosts_command=command, discover=discover)


def _parse_host_string(text: str, fail) -> dict:
    """'[user@]host[:port]' → host table. An IPv6 address takes brackets to carry a port
    ('[::1]:2200', 'deploy@[2001:db8::1]:22'); without them ('::1') it is the whole address."""
    out: dict[str, Any] = {}
    given = text
    if "@" in text:
        out["user"], text = text.rsplit("@", 1)
    port = None
    if text.startswith("["):
        text, bracket, rest = text[1:].partition("]")
        if not bracket or not text or (rest and not rest.startswith(":")):
            raise fail(f"expected [user@]host[:port] or [user@][ipv6]:port, got {given!r}")
        port = rest[1:] if rest else None
    elif text.count(":") == 1:
        text, port = text.split(":")
    if port is not None:
        if not port.isdigit():
            raise fail(f"bad port {port!r} in host {given!r}")
        out["port"] = int(port)
    out["host"] = text
    return out


def locate(text: str, where: str) -> int | None:
    """Best effort: the line of `where` (e.g. stages.prod.hosts[1].port) in a TOML text: the line
    that sets that key, else the closest enclosing table or key. tomllib gives no positions."""
    parts = [p for p in re.sub(r"\[\d+\]", "", where).split(".") if p]
    header: list[str] = []
    last_key: list[str] = []
    best, best_line = 0, None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        table = re.match(r"^\[\[?\s*([^\]]+?)\s*\]\]?", line)
        key = re.match(r"^([A-Za-z0-9_.\"' -]+?)\s*=", line)
        if table:
            path = header = _keys(table.group(1))
        elif key:
            path = last_key = header + _keys(key.group(1))
        else:
            path = last_key
        score = len(path) if path == parts[:len(path)] else 0
        if 0 < score < len(parts) and re.search(r"[{,]\s*" + re.escape(parts[-1]) + r"\s*=", line):
            score = len(parts)         # set in an inline table on this line
        if (table or key or score == len(parts)) and score > best:
            best, best_line = score, number
    return best_line


def _keys(dotted: str) -> list[str]:
    return [k.strip().strip("\"'") for k in dotted.split(".")]


def with_recipe(data: dict, name: Any, reader: _Reader) -> dict:
    """The recipe's DEFAULTS under the user's document: user keys win, hook lists are appended to."""
    import importlib
    import pkgutil

    from deployer import recipes
    known = sorted(m.name for m in pkgutil.iter_modules(recipes.__path__) if not m.name.startswith("_"))
    if not isinstance(name, str) or name not in known:
        raise reader.fail("app.recipe", f"unknown recipe {name!r} (recipes: {', '.join(known)})")
    defaults = getattr(importlib.import_module(f"deployer.recipes.{name}"), "DEFAULTS", {})
    return _merge(defaults, data)


def _merge(base: dict, over: dict, path: str = "") -> dict:
    out = dict(base)
    for key, value in over.items():
        if path == "hooks" and isinstance(out.get(key), list) and isinstance(value, list):
            out[key] = out[key] + value
        elif isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = _merge(out[key], value, key if not path else f"{path}.{key}")
        else:
            out[key] = value
    return out


def find_config_path(explicit: str | None = None) -> Path:
    """--config PATH, else $DEPLOYER_CONFIG, else ./hosts.toml."""
    chosen = explicit or os.environ.get(ENV_VAR) or DEFAULT_FILE
    path = Path(chosen).expanduser()
    if not path.is_file():
        how = "--config" if explicit else (ENV_VAR if os.environ.get(ENV_VAR) else "default")
        raise ConfigError(f"config file {path} not found ({how}; pass --config PATH or set {ENV_VAR})")
    return path


def parse(text: str, path: Path) -> Config:
    """Validate a hosts.toml document's text."""
    reader = _Reader(path, text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        at = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        raise ConfigError(f"{path}:{at.group(1) + ':' if at else ''} invalid TOML: {exc}") from None
    for key, value in list(data.items()):
        if key not in _TOP:
            hint = did_you_mean(key, _TOP) or f" (expected one of: {', '.join(_TOP)})"
            reader.problems.append(str(reader.fail(key, "unknown table" + hint)))
            del data[key]
        elif not isinstance(value, dict):
            reader.problems.append(str(reader.fail(key, "expected a table")))
            del data[key]
    if "app" not in data:
        reader.problems.append(str(reader.fail("app", "missing table (needs at least deploy_to)")))
        data["app"] = {"deploy_to": "/unset"}      # read on, to report the other problems too
    recipe = data["app"].get("recipe")
    if recipe:
        data = reader.section(with_recipe, data, recipe, reader, default=data)
    app = reader.section(reader.app, data["app"], "app", None, default=AppSettings(name="app", deploy_to="/unset"))
    build = reader.section(_build, reader, data.get("build", {}), default=BuildSettings(source=Path(".")))
    ssh = reader.section(reader.ssh, data.get("ssh", {}), "ssh", SSHSettings(), default=SSHSettings())
    pipeline = PipelineSettings()
    for name in _PIPELINE_TABLES:
        if name in data:
            pipeline = reader.section(reader.pipeline, {name: data[name]}, "", pipeline, default=pipeline)
    env = reader.section(reader.env, data.get("env", {}), "env", default={})
    stages = {}
    for name, body in data.get("stages", {}).items():
        stage = reader.section(reader.stage, name, body, app, ssh, pipeline, env)
        if stage is not None:
            stages[name] = stage
    if not data.get("stages"):
        reader.problems.append(str(reader.fail("stages", "no stage defined (expected [stages.NAME] with hosts)")))
    declared = data.get("stages", {})
    for name, body in declared.items():
        requires = body.get("requires", []) if isinstance(body, dict) else []
        for req in [requires] if isinstance(requires, str) else requires:
            if isinstance(req, str) and (req not in declared or req == name):
                reader.problems.append(str(reader.fail(
                    f"stages.{name}.requires", f"{req!r} is not another stage{did_you_mean(req, declared)} "
                                               f"(stages: {', '.join(declared)})")))
    if reader.problems:
        raise ConfigError("\n".join(reader.problems))
    return Config(path=path, app=app, build=build, ssh=ssh, stages=stages, pipeline=pipeline)


def _build(reader: _Reader, data: dict) -> BuildSettings:
    data = reader.table(data, "build", _BUILD)
    return BuildSettings(
        source=Path(reader.resolve(data.get("source", "."))),
        command=data.get("command", ""),
        include=reader.rel_paths(data.get("include", []), "build.include"),
        output=Path(reader.resolve(data.get("output", "artifacts"))),
    )


def load(explicit: str | None = None) -> Config:
    path = find_config_path(explicit)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse(text, path)
