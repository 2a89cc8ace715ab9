"""Every hosts.toml key, declared once: its TOML type, range or choices, default and one-line doc.

The loader checks types, ranges and choices from here, the settings dataclasses take their defaults
from here, `config.keys` prints it, and a test holds hosts.example.toml to it. Defaults are in TOML
shape (a list, not a tuple); None means no value is written for the key: it is required (`required`)
or worked out at run time (the doc says how).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Kind = type | tuple[type, ...]


@dataclass(frozen=True)
class Key:
    kind: Kind  # accepted TOML value type(s); bool is never an int here
    expected: str  # what a good value is, as messages say it
    doc: str  # one line for `config.keys` and the reader of this file
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()  # for a string: its value; for a list: each item
    required: bool = False

    def problem(self, value: object) -> str | None:
        """What is wrong with value for this key (type, range, choices), or None."""
        if not isinstance(value, self.kind) or (isinstance(value, bool) and self.kind is not bool):
            return f"expected {self.expected}, got {value!r}"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if (self.minimum is not None and value < self.minimum) or (
                self.maximum is not None and value > self.maximum
            ):
                return f"expected {self.expected}, got {value!r}"
        if self.choices and isinstance(value, str) and value not in self.choices:
            return f"expected {self.expected}, got {value!r}"
        return None

    def type_name(self) -> str:
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        names = {str: "string", int: "integer", float: "number", bool: "boolean", list: "list", dict: "table"}
        return " or ".join(names[k] for k in kinds)


Table = Mapping[str, Key]

SECONDS = "seconds, an integer >= 1"
PORT = Key(int, "a port number 1-65535", "SSH port", minimum=1, maximum=65535)
EVENTS = ("started", "succeeded", "failed", "rolled back")
HOST_KEY_POLICIES = ("strict", "accept-new")
MAX_PERSIST = 86400
TRANSFERS = ("push", "pull")
MAX_URL_LIFETIME = 604800  # the longest a SigV4 presigned URL can live (7 days)
HOOK_POINTS = tuple(
    f"{when}_{step}"
    for step in ("prepare", "migrate", "smoke", "switch", "verify", "finish", "rollback")
    for when in ("before", "after")
)
PIPELINE_TABLES = ("hooks", "migrate", "smoke", "verify", "restart", "notify")

APP: Table = {
    "name": Key(
        str, "letters, digits, ., _ or -", "names artifacts, notifications and the systemd unit (setup)", "app"
    ),
    "deploy_to": Key(str, "an absolute path", "releases/, shared/, current, .deployer/ live here", required=True),
    "keep_releases": Key(
        int,
        "an integer >= 1",
        "complete releases kept per host (current and its predecessor always kept)",
        5,
        minimum=1,
    ),
    "shared_dirs": Key(
        list, "a list of relative paths", "created in shared/ if missing, linked into every release", []
    ),
    "shared_files": Key(list, "a list of relative paths", "must exist in shared/, linked into every release", []),
    "recipe": Key(str, "a recipe name (deployer.recipes.<name>)", "defaults and hooks for a kind of app", ""),
    "env_file": Key(str, "a relative path", "where each release links to the env rendered from [env]", ".env"),
    "run_as": Key(str, "a user name", "run hooks, migrate, smoke, restart via `sudo -n -u` this user", ""),
    "generated": Key(
        list,
        "a list of relative paths created in the release by hooks",
        "paths hooks create in releases (e.g. venv): not drift",
        [],
    ),
    "hardlink_releases": Key(bool, "true or false", "a redeploy hard-links an unchanged earlier release", False),
    "lock_ttl": Key(
        int,
        "a whole number of seconds >= 1",
        "seconds unrenewed after which a lock is stale (taken over)",
        120,
        minimum=1,
    ),
}
BUILD: Table = {
    "source": Key(str, "a path to a git work tree", "git work tree whose tracked files of HEAD are packed", "."),
    "command": Key(str, "a shell command", "build command run in a clean export before packing", ""),
    "include": Key(list, "a list of relative paths", "with a command: paths packed besides tracked files", []),
    "output": Key(str, "a directory path", "where artifacts (.tar.gz and .json) go", "artifacts"),
}
SSH: Table = {
    "user": Key(str, "a user name", "default: ~/.ssh/config's User, else your local user"),
    "port": Key(int, "a port number 1-65535", "default: ~/.ssh/config's Port, else 22", minimum=1, maximum=65535),
    "key": Key(str, "a path to a private key", "default: ssh-agent and ~/.ssh/id_* keys"),
    "known_hosts": Key(str, "a path to a known_hosts file", "known host keys", "~/.ssh/known_hosts"),
    "host_key_policy": Key(
        str,
        "one of " + ", ".join(HOST_KEY_POLICIES) + " (a changed host key is never accepted)",
        "strict: unknown keys refused; accept-new: recorded",
        "strict",
        choices=HOST_KEY_POLICIES,
    ),
    "connect_timeout": Key(int, SECONDS, "seconds to connect and authenticate", 10, minimum=1),
    "keepalive": Key(int, SECONDS, "seconds between keepalives", 10, minimum=1),
    "command_timeout": Key(int, SECONDS, "seconds any one remote command may run", 900, minimum=1),
    "config": Key(
        bool, "true or false", "honour ~/.ssh/config (Host aliases, User, Port, IdentityFile, ProxyJump)", True
    ),
    "config_file": Key(str, "a path to an ssh config file", "the ssh config file honoured", "~/.ssh/config"),
    "gateway": Key(str, "[user@]host[:port] of a jump host", "jump host (bastion); host keys checked there too", ""),
    "forward_agent": Key(bool, "true or false", "forward the local ssh-agent", False),
    "persist": Key(
        int,
        f"seconds, an integer 0-{MAX_PERSIST} (0: off)",
        "seconds a local agent keeps connections open after a run (0: off)",
        0,
        minimum=0,
        maximum=MAX_PERSIST,
    ),
}
HOOK: Table = {
    "command": Key(
        str, "a shell command run on the hosts in the release dir", "remote command, in the release dir", ""
    ),
    "local": Key(str, "a shell command run on this machine", "command run on this machine", ""),
    "python": Key(str, "module:function", "a Python callable, called with a HookContext", ""),
    "roles": Key(list, "a list of role names", "only hosts with one of these roles (default: all)", []),
    "once": Key(bool, "true or false", "only the first matching host", False),
}
MIGRATE: Table = {
    "command": Key(str, "a shell command", "run once per deploy on one host with the role", "", required=True),
    "role": Key(str, "a role name", "the role of the host that migrates", "migrate"),
    "rollback_command": Key(str, "a shell command", "run by rollback --with-migrations", ""),
}
SMOKE: Table = {
    "command": Key(str, "a shell command", "run on every host in the new release before any switch", ""),
}
VERIFY: Table = {
    "url": Key(str, "an http(s) URL", "fetched after the switch; failure rolls back", ""),
    "status": Key(int, "an HTTP status code 100-599", "the status the URL must answer", 200, minimum=100, maximum=599),
    "body": Key(str, "a substring the body must contain", "a substring the body must contain", ""),
    "timeout": Key(int, SECONDS, "seconds per attempt", 5, minimum=1),
    "retries": Key(int, "an integer >= 1", "attempts before the check fails", 3, minimum=1),
    "interval": Key((int, float), "seconds >= 0", "seconds between attempts", 2.0, minimum=0),
    "command": Key(str, "a shell command", "a command run in the release dir", ""),
    "from": Key(
        str, "host or local", "host: fetched on the host; local: from this machine", "host", choices=("host", "local")
    ),
}
RESTART: Table = {
    "command": Key(str, "a shell command", "run after each switch and each rollback", ""),
    "roles": Key(list, "a list of role names", "only hosts with one of these roles (default: all)", []),
}
NOTIFY: Table = {
    "webhooks": Key(list, "a list of URLs (or env:NAME / file:PATH holding one)", "JSON POST, Slack-compatible", []),
    "command": Key(str, "a shell command", "a local command given the same JSON on stdin", ""),
    "events": Key(
        list, "a list of: " + ", ".join(EVENTS), "events sent (failures always are)", list(EVENTS), choices=EVENTS
    ),
    "timeout": Key(int, SECONDS, "seconds per notification", 5, minimum=1),
}
STORE: Table = {
    "url": Key(str, "s3://bucket or s3://bucket/prefix", "where published artifacts live", required=True),
    "endpoint": Key(str, "an http(s) URL", "the S3 endpoint as this machine reaches it (default: AWS's)", ""),
    "host_endpoint": Key(str, "an http(s) URL", "the S3 endpoint as the hosts reach it (default: endpoint)", ""),
    "region": Key(str, "a region name", "signing region (default: the AWS chain's, else us-east-1)", ""),
    "transfer": Key(
        str,
        "one of " + ", ".join(TRANSFERS),
        "push: over SSH from here; pull: hosts fetch from the store",
        "push",
        choices=TRANSFERS,
    ),
    "url_lifetime": Key(
        int,
        f"seconds, an integer 1-{MAX_URL_LIFETIME}",
        "seconds a presigned download URL is valid (must cover the prepare step)",
        900,
        minimum=1,
        maximum=MAX_URL_LIFETIME,
    ),
    "signing_key": Key(
        str,
        "a path to an Ed25519 private key (ssh-keygen -t ed25519)",
        "publish signs each artifact's .json with this key (a path: never the key itself)",
        "",
    ),
    "trusted_keys": Key(
        list,
        "a list of ssh-ed25519 public key lines or .pub file paths",
        "a deploy from the store takes only a .json signed by one of these",
        [],
    ),
    "stall_timeout": Key(
        int,
        SECONDS,
        "seconds the store may stall: no answer here, a host's download under 1 KiB/s",
        30,
        minimum=1,
    ),
}
CANARY: Table = {
    "steps": Key(
        list,
        "a list of whole percents 1-99, strictly increasing",
        "with hosts of role lb: the canary's share of requests at each step (nginx weights)",
        [],
    ),
    "upstream": Key(
        str, "host:port with {name} or {address}", "each app host as the lb's nginx reaches it", "{address}:80"
    ),
    "weights_dir": Key(
        str,
        "an absolute directory path",
        "on each lb host: <dir>/<app>-weights.conf, writable by the deploy user",
        "/etc/nginx/deployer",
    ),
}
PROVIDERS = ("access_log", "prometheus", "http", "command")
MEASURES = ("success_rate", "p50_ms", "p99_ms", "requests")
LOG_FORMATS = ("deployer", "combined")  # deployer: combined + $request_time $upstream_response_time
INCONCLUSIVE = ("fail", "extend", "pass")
ANALYSIS: Table = {
    "interval": Key(int, SECONDS, "seconds between checks", 10, minimum=1),
    "checks": Key(int, "an integer >= 1", "checks a canary must pass (the bake is interval x checks)", 6, minimum=1),
    "failure_limit": Key(int, "an integer >= 1", "failed checks that end it (put back, marked bad)", 1, minimum=1),
    "min_requests": Key(
        int, "an integer >= 0", "fewer requests in a check (access_log): inconclusive, not passed", 50, minimum=0
    ),
    "inconclusive": Key(
        str,
        "one of " + ", ".join(INCONCLUSIVE),
        "an inconclusive check: fail, extend (one more, at most `checks` more) or pass",
        "fail",
        choices=INCONCLUSIVE,
    ),
    "metrics": Key(list, "a list of [[analysis.metrics]] tables", "what each check measures", required=True),
}
NUMBER = (int, float)
METRIC: Table = {
    "name": Key(str, "a short name", "the metric's name in output, notifications and the ledger", required=True),
    "provider": Key(
        str,
        "one of " + ", ".join(PROVIDERS),
        "where the number comes from",
        "access_log",
        choices=PROVIDERS,
    ),
    "path": Key(str, "an absolute path", "access_log: the web server's log on each host", "/var/log/nginx/access.log"),
    "log_format": Key(
        str,
        "one of " + ", ".join(LOG_FORMATS),
        "access_log: deployer (combined + request and upstream times) or combined (no latency)",
        "deployer",
        choices=LOG_FORMATS,
    ),
    "measure": Key(
        str,
        "one of " + ", ".join(MEASURES),
        "access_log: non-5xx % | median ms | 99th percentile ms | requests in the window",
        "success_rate",
        choices=MEASURES,
    ),
    "min": Key(NUMBER, "a number", "absolute bound: the value must be >= this"),
    "max": Key(NUMBER, "a number", "absolute bound: the value must be <= this"),
    "max_vs_baseline": Key(
        NUMBER, "a number >= 0", "canary at most this much worse than the baseline hosts", minimum=0
    ),
    "max_ratio_vs_baseline": Key(
        NUMBER, "a number >= 1", "canary at most this many times worse than the baseline hosts", minimum=1
    ),
    "url": Key(str, "an http(s) URL", "prometheus, http: fetched from this machine ({host} {stage} {release})", ""),
    "query": Key(str, "a PromQL expression", "prometheus: an instant query ({host} {stage} {release})", ""),
    "json_path": Key(str, "a dotted path, e.g. data.error_rate", "http: where the number is in the JSON answer", ""),
    "command": Key(str, "a shell command", "command: run on each host (its stdout is the number)", ""),
    "local": Key(bool, "true or false", "command: run on this machine instead ({host} {stage} {release})", False),
}
HOST: Table = {
    "host": Key(str, "a host name or address", "the address to connect to", required=True),
    "name": Key(str, "a display name", "the name in output (default: host, with :port if not 22)"),
    "port": SSH["port"],
    "user": SSH["user"],
    "key": SSH["key"],
    "roles": Key(list, "a list of role names", "roles select hooks, migrate, restart, env", []),
    "env": Key(dict, "a table of KEY = value", "env values for this host only", {}),
}
SECRET: Table = {
    "secret": Key(str, "env:NAME, file:PATH or cmd:COMMAND", "where the secret is read at deploy time", required=True),
    "roles": Key(list, "a list of role names", "only hosts with one of these roles receive it", []),
}
STAGE: Table = {
    "hosts": Key(list, "a list of host names or host tables", '"[user@]host[:port]" strings or host tables'),
    "requires": Key(
        (str, list),
        "a stage name or a list of stage names",
        "stages an artifact must have passed first (promotion gate)",
        [],
    ),
    "hosts_command": Key(
        str, "a local command printing the hosts as JSON", "instead of hosts: a command printing them", ""
    ),
    "env": Key(dict, 'a table of KEY = value or KEY = { secret = "env:NAME" }', "env values for this stage", {}),
    "role_env": Key(dict, "a table of role = { KEY = value }", "env values for hosts with a role", {}),
    "app": Key(dict, "a table of [app] keys to override", "[app] keys overridden for this stage"),
    "ssh": Key(dict, "a table of [ssh] keys to override", "[ssh] keys overridden for this stage"),
    **{
        name: Key(
            dict,
            f"a [{name}] table replacing the global one for this stage",
            f"replaces the global [{name}] for this stage",
        )
        for name in PIPELINE_TABLES
    },
}

# Where each table sits in the file (NAME and POINT stand for any stage name and hook point).
TABLES: dict[str, Table] = {
    "app": APP,
    "build": BUILD,
    "ssh": SSH,
    "migrate": MIGRATE,
    "smoke": SMOKE,
    "verify": VERIFY,
    "restart": RESTART,
    "notify": NOTIFY,
    "store": STORE,
    "canary": CANARY,
    "analysis": ANALYSIS,
    "analysis.metrics": METRIC,
    "hooks.POINT": HOOK,
    "stages.NAME": STAGE,
    "stages.NAME.hosts": HOST,
}
TOP = ("app", "build", "ssh", "stages", "env", "store", "canary", "analysis", *PIPELINE_TABLES)


def default(table: Table, key: str) -> Any:
    """A key's default as the settings hold it: tuples for lists."""
    value = table[key].default
    return tuple(value) if isinstance(value, list) else value


def rows() -> list[dict[str, str]]:
    """One row per key, for `config.keys`."""
    out = []
    for where, table in TABLES.items():
        for name, key in table.items():
            shown = "(required)" if key.required else "-" if key.default is None else toml_value(key.default)
            out.append({"key": f"{where}.{name}", "type": key.type_name(), "default": shown, "doc": key.doc})
    return out


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return repr(value)
