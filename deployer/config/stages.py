"""[stages.NAME] tables: their hosts (listed, or printed by hosts_command) with merged ssh and env."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

from deployer.config import schema
from deployer.config.reader import Doc, Reader, Reported
from deployer.config.settings import AppSettings, EnvValue, Host, PipelineSettings, SSHSettings, Stage
from deployer.errors import ConfigError

DISCOVER_TIMEOUT = 60  # seconds a hosts_command may run


def stage(
    reader: Reader,
    name: str,
    data: object,
    app: AppSettings,
    ssh: SSHSettings,
    pipeline: PipelineSettings,
    env: dict[str, EnvValue],
) -> Stage:
    where = f"stages.{name}"
    given = reader.table(data, where, schema.STAGE)
    known = len(reader.problems)
    stage_app = reader.section(reader.app, given["app"], f"{where}.app", app, default=app) if "app" in given else app
    stage_ssh = reader.section(reader.ssh, given["ssh"], f"{where}.ssh", ssh, default=ssh) if "ssh" in given else ssh
    stage_env = {**env, **reader.section(reader.env, given.get("env", {}), f"{where}.env", default={})}
    role_env = {
        role: reader.section(reader.env, body, f"{where}.role_env.{role}", default={})
        for role, body in given.get("role_env", {}).items()
    }

    def build(items: list[object]) -> tuple[Host, ...]:
        if not items:
            raise reader.fail(f"{where}.hosts", "missing or empty (expected a list of hosts)")
        read = [
            reader.section(host, reader, e, f"{where}.hosts[{i}]", stage_ssh, stage_env, role_env, default=None)
            for i, e in enumerate(items)
        ]
        hosts = tuple(h for h in read if h is not None)
        if len(hosts) < len(read):
            raise Reported("")
        seen: set[str] = set()
        for h in hosts:
            if h.name in seen:
                raise reader.fail(f"{where}.hosts", f"host {h.name!r} listed twice")
            seen.add(h.name)
        return hosts

    command = given.get("hosts_command", "")
    discover: Callable[[], tuple[Host, ...]] | None = None
    hosts: tuple[Host, ...] = ()
    if command:
        if given.get("hosts"):
            raise reader.fail(f"{where}.hosts_command", "give either hosts or hosts_command, not both")

        def discover() -> tuple[Host, ...]:
            return reader.reported(build, run_hosts_command(reader, command, f"{where}.hosts_command"))
    else:
        hosts = reader.section(build, given.get("hosts"), default=())
    stage_pipeline = pipeline
    for table in schema.PIPELINE_TABLES:
        if table in given:
            stage_pipeline = reader.section(
                reader.pipeline, {table: given[table]}, f"{where}.", stage_pipeline, default=stage_pipeline
            )
    if len(reader.problems) > known:
        raise Reported("")
    requires = given.get("requires", [])
    requires = (requires,) if isinstance(requires, str) else reader.names(requires, f"{where}.requires")
    return Stage(
        name=name,
        app=stage_app,
        hosts=hosts,
        pipeline=stage_pipeline,
        requires=requires,
        hosts_command=command,
        discover=discover,
    )


def host(
    reader: Reader,
    entry: object,
    where: str,
    ssh: SSHSettings,
    env: dict[str, EnvValue],
    role_env: dict[str, dict[str, EnvValue]],
) -> Host:
    if isinstance(entry, str):
        entry = parse_host_string(entry, lambda m: reader.fail(where, m))
    data = reader.table(entry, where, schema.HOST)
    address: str | None = data.get("host")
    if isinstance(address, str) and address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    if not address or any(c.isspace() for c in address) or address.startswith("-"):
        raise reader.fail(f"{where}.host", f"expected a host name or address, got {address!r}")
    overrides = {k: data[k] for k in ("port", "user", "key") if k in data}
    host_ssh = reader.ssh(overrides, where, ssh) if overrides else ssh
    roles = reader.names(data.get("roles", []), f"{where}.roles")
    shown = f"[{address}]" if ":" in address else address
    default_name = address if host_ssh.port in (None, 22) else f"{shown}:{host_ssh.port}"
    merged = dict(env)
    for role in roles:
        merged.update(role_env.get(role, {}))
    merged.update(reader.env(data.get("env", {}), f"{where}.env"))
    merged = {k: v for k, v in merged.items() if not v.roles or set(v.roles) & set(roles)}
    return Host(
        name=data.get("name", default_name),
        address=address,
        ssh=host_ssh,
        roles=roles,
        env=tuple(sorted(merged.items())),
    )


def run_hosts_command(reader: Reader, command: str, where: str) -> list[object]:
    """Hosts from a local command printing JSON: a list of host entries, or {"hosts": [...]}."""
    try:
        proc = subprocess.run(
            command,
            shell=True,
            cwd=reader.base,
            capture_output=True,
            text=True,
            timeout=DISCOVER_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise reader.fail(where, f"{command!r} did not finish within {DISCOVER_TIMEOUT}s") from None
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise reader.fail(where, f"{command!r} exited {proc.returncode}: {tail}")
    try:
        data = json.loads(proc.stdout)
    except ValueError as exc:
        raise reader.fail(where, f"{command!r} did not print JSON: {exc}") from None
    if isinstance(data, dict):
        data = data.get("hosts")
    if not isinstance(data, list):
        raise reader.fail(where, f'{command!r} must print a JSON list of hosts (or {{"hosts": [...]}})')
    return data


def parse_host_string(text: str, fail: Callable[[str], ConfigError]) -> Doc:
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
