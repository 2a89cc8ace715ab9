"""The frozen settings hosts.toml is read into (deployer.config.load builds them); nothing else reads the file.

Defaults come from deployer.config.schema, where each key is declared once."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from deployer.config.schema import APP, BUILD, CANARY, HOOK, MIGRATE, NOTIFY, RESTART, SSH, STORE, VERIFY, default
from deployer.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from deployer.config.analysis import AnalysisSettings


@dataclass(frozen=True)
class AppSettings:
    name: str
    deploy_to: str
    keep_releases: int = default(APP, "keep_releases")
    shared_dirs: tuple[str, ...] = default(APP, "shared_dirs")
    shared_files: tuple[str, ...] = default(APP, "shared_files")
    recipe: str = default(APP, "recipe")
    env_file: str = default(APP, "env_file")
    run_as: str = default(APP, "run_as")
    generated: tuple[str, ...] = default(APP, "generated")
    hardlink_releases: bool = default(APP, "hardlink_releases")
    lock_ttl: int = default(APP, "lock_ttl")


@dataclass(frozen=True)
class BuildSettings:
    source: Path
    command: str = default(BUILD, "command")
    include: tuple[str, ...] = default(BUILD, "include")
    output: Path = Path(default(BUILD, "output"))


@dataclass(frozen=True)
class SSHSettings:
    user: str | None = default(SSH, "user")  # None: worked out when connecting (schema.SSH says how)
    port: int | None = default(SSH, "port")
    key: str | None = default(SSH, "key")
    known_hosts: str = default(SSH, "known_hosts")
    host_key_policy: str = default(SSH, "host_key_policy")
    connect_timeout: int = default(SSH, "connect_timeout")
    keepalive: int = default(SSH, "keepalive")
    command_timeout: int = default(SSH, "command_timeout")
    config: bool = default(SSH, "config")
    config_file: str = default(SSH, "config_file")
    gateway: str = default(SSH, "gateway")
    forward_agent: bool = default(SSH, "forward_agent")
    persist: int = default(SSH, "persist")


@dataclass(frozen=True)
class StoreSettings:
    """[store]: an S3-compatible bucket holding published artifacts. Credentials come from the AWS
    chain (environment, profile), never from hosts.toml."""

    bucket: str
    prefix: str = ""  # "" or "path/" (always ending in a slash)
    endpoint: str = default(STORE, "endpoint")
    host_endpoint: str = default(STORE, "host_endpoint")
    region: str = default(STORE, "region")
    transfer: str = default(STORE, "transfer")
    url_lifetime: int = default(STORE, "url_lifetime")
    signing_key: str = default(STORE, "signing_key")  # a path ("" none): the key never sits here
    trusted_keys: tuple[str, ...] = ()  # ssh-ed25519 lines, or paths of files holding them
    stall_timeout: int = default(STORE, "stall_timeout")  # a stalled store (hosts' downloads, boto3's reads)

    @property
    def hosts_reach(self) -> str:
        """The endpoint the hosts fetch from ("" is AWS's own)."""
        return self.host_endpoint or self.endpoint


# What an [env] key, and any name a command's environment gets, must be: a shell variable name.
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class CanarySettings:
    steps: tuple[int, ...] = default(CANARY, "steps")  # percents of requests; () keeps a share of hosts
    upstream: str = default(CANARY, "upstream")  # each app host as the lb reaches it: {name}, {address}
    weights_dir: str = default(CANARY, "weights_dir")  # on the lb: <dir>/<app>-weights.conf

    def weights_file(self, app: str) -> str:
        return f"{self.weights_dir.rstrip('/')}/{app}-weights.conf"


@dataclass(frozen=True)
class EnvValue:
    """One [env] value: plain text from hosts.toml, or a reference to a secret kept elsewhere."""

    value: str = ""
    secret: str = ""  # env:NAME | file:PATH | cmd:COMMAND
    roles: tuple[str, ...] = ()  # only hosts with one of these roles receive it


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    ssh: SSHSettings
    roles: tuple[str, ...] = ()
    env: tuple[tuple[str, EnvValue], ...] = ()  # merged: global < stage < role < host; role-filtered

    @property
    def port(self) -> int:
        return self.ssh.port or 22

    @property
    def user(self) -> str | None:
        return self.ssh.user

    @property
    def endpoint(self) -> str:
        """address:port ([address]:port for an IPv6 address), as --hosts may name it."""
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"

    def named(self, names: list[str]) -> bool:
        return self.name in names or self.address in names or self.endpoint in names


@dataclass(frozen=True)
class Hook:
    """One hook: a remote command (in the release dir), a local command, or a Python callable."""

    point: str
    command: str = default(HOOK, "command")
    local: str = default(HOOK, "local")
    python: str = default(HOOK, "python")
    roles: tuple[str, ...] = default(HOOK, "roles")
    once: bool = default(HOOK, "once")

    @property
    def label(self) -> str:
        return self.command or self.local or self.python


@dataclass(frozen=True)
class MigrateSettings:
    command: str = default(MIGRATE, "command")
    role: str = default(MIGRATE, "role")
    rollback_command: str = default(MIGRATE, "rollback_command")


@dataclass(frozen=True)
class VerifySettings:
    url: str = default(VERIFY, "url")
    status: int = default(VERIFY, "status")
    body: str = default(VERIFY, "body")
    timeout: int = default(VERIFY, "timeout")
    retries: int = default(VERIFY, "retries")
    interval: float = default(VERIFY, "interval")
    command: str = default(VERIFY, "command")
    run_from: str = default(VERIFY, "from")

    @property
    def enabled(self) -> bool:
        return bool(self.url or self.command)


@dataclass(frozen=True)
class RestartSettings:
    command: str = default(RESTART, "command")
    roles: tuple[str, ...] = default(RESTART, "roles")


@dataclass(frozen=True)
class NotifySettings:
    webhooks: tuple[str, ...] = default(NOTIFY, "webhooks")
    command: str = default(NOTIFY, "command")
    events: tuple[str, ...] = default(NOTIFY, "events")
    timeout: int = default(NOTIFY, "timeout")


@dataclass(frozen=True)
class PipelineSettings:
    hooks: tuple[Hook, ...] = ()
    migrate: MigrateSettings = MigrateSettings()
    smoke: str = ""
    verify: VerifySettings = VerifySettings()
    restart: RestartSettings = RestartSettings()
    notify: NotifySettings = NotifySettings()

    def hooks_at(self, point: str) -> tuple[Hook, ...]:
        return tuple(h for h in self.hooks if h.point == point)


@dataclass(frozen=True)
class Stage:
    name: str
    app: AppSettings
    hosts: tuple[Host, ...]
    pipeline: PipelineSettings = PipelineSettings()
    requires: tuple[str, ...] = ()  # stages an artifact must have passed first (promotion gate)
    hosts_command: str = ""  # hosts come from this local command, run when the stage is used
    discover: Callable[[], tuple[Host, ...]] | None = field(default=None, compare=False, repr=False)  # hosts_command

    def select(self, names: list[str] | None = None, roles: list[str] | None = None) -> tuple[Host, ...]:
        """Hosts filtered by --hosts and --roles; an unknown name is bad input."""
        hosts = self.hosts
        if names:
            unknown = [n for n in names if not any(h.named([n]) for h in hosts)]
            if unknown:
                raise ConfigError(
                    f"stage {self.name}: no host {', '.join(unknown)} (hosts: {', '.join(h.name for h in self.hosts)})"
                )
            hosts = tuple(h for h in hosts if h.named(names))
        if roles:
            hosts = tuple(h for h in hosts if set(roles) & set(h.roles))
            if not hosts:
                raise ConfigError(f"stage {self.name}: no host has role {', '.join(roles)}")
        return hosts


@dataclass(frozen=True)
class Config:
    path: Path
    app: AppSettings
    build: BuildSettings
    ssh: SSHSettings
    stages: dict[str, Stage] = field(default_factory=dict)
    pipeline: PipelineSettings = PipelineSettings()
    store: StoreSettings | None = None
    canary: CanarySettings = CanarySettings()
    analysis: AnalysisSettings | None = None  # [analysis]: deployer.config.analysis

    def stage(self, name: str | None) -> Stage:
        if not name and len(self.stages) == 1:
            name = next(iter(self.stages))
        if not name:
            raise ConfigError(f"{self.path}: say which stage with --stage (stages: {', '.join(self.stages)})")
        if name not in self.stages:
            raise ConfigError(
                f"{self.path}: no stage {name!r}{did_you_mean(name, self.stages)} "
                f"(stages: {', '.join(self.stages) or 'none'})"
            )
        stage = self.stages[name]
        if stage.discover is not None:
            stage = replace(stage, hosts=stage.discover(), discover=None)
            self.stages[name] = stage
        return stage
