"""The frozen settings hosts.toml is read into (deployer.config.load builds them); nothing else reads the file."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from deployer.errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class AppSettings:
    name: str
    deploy_to: str
    keep_releases: int = 5
    shared_dirs: tuple[str, ...] = ()
    shared_files: tuple[str, ...] = ()
    recipe: str = ""
    env_file: str = ".env"          # where each release (and shared/) links to its env rendered from [env]
    run_as: str = ""                # run release commands (hooks, migrate, smoke, restart) via sudo -n -u
    generated: tuple[str, ...] = ()  # paths hooks create in the release (e.g. venv): not drift
    hardlink_releases: bool = False  # a redeploy links an unchanged earlier release of the artifact
    lock_ttl: int = 120             # seconds without renewal after which a lock is stale (taken over)


@dataclass(frozen=True)
class BuildSettings:
    source: Path
    command: str = ""
    include: tuple[str, ...] = ()
    output: Path = Path("artifacts")


@dataclass(frozen=True)
class SSHSettings:
    user: str | None = None
    port: int | None = None            # None: ~/.ssh/config's Port, else 22
    key: str | None = None
    known_hosts: str = "~/.ssh/known_hosts"
    host_key_policy: str = "strict"
    connect_timeout: int = 10
    keepalive: int = 10
    command_timeout: int = 900
    config: bool = True                # honour ~/.ssh/config (Host aliases, User, Port, IdentityFile, ProxyJump)
    config_file: str = "~/.ssh/config"
    gateway: str = ""                  # jump host: [user@]host[:port]
    forward_agent: bool = False
    persist: int = 0                   # keep connections open this long after a run, via the agent (0: off)


@dataclass(frozen=True)
class EnvValue:
    """One [env] value: plain text from hosts.toml, or a reference to a secret kept elsewhere."""

    value: str = ""
    secret: str = ""                # env:NAME | file:PATH | cmd:COMMAND
    roles: tuple[str, ...] = ()     # only hosts with one of these roles receive it


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    ssh: SSHSettings
    roles: tuple[str, ...] = ()
    env: tuple[tuple[str, EnvValue], ...] = ()     # merged: global < stage < role < host; role-filtered

    @property
    def port(self) -> int:
        return self.ssh.port or 22

    @property
    def user(self) -> str | None:
        return self.ssh.user


@dataclass(frozen=True)
class Hook:
    """One hook: a remote command (in the release dir), a local command, or a Python callable."""

    point: str
    command: str = ""
    local: str = ""
    python: str = ""
    roles: tuple[str, ...] = ()
    once: bool = False

    @property
    def label(self) -> str:
        return self.command or self.local or self.python


@dataclass(frozen=True)
class MigrateSettings:
    command: str = ""
    role: str = "migrate"
    rollback_command: str = ""


@dataclass(frozen=True)
class VerifySettings:
    url: str = ""
    status: int = 200
    body: str = ""
    timeout: int = 5
    retries: int = 3
    interval: float = 2.0
    command: str = ""
    run_from: str = "host"          # host: curl on the host itself; local: from this machine

    @property
    def enabled(self) -> bool:
        return bool(self.url or self.command)


@dataclass(frozen=True)
class RestartSettings:
    command: str = ""
    roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class NotifySettings:
    webhooks: tuple[str, ...] = ()
    command: str = ""
    events: tuple[str, ...] = ("started", "succeeded", "failed", "rolled back")
    timeout: int = 5


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
    requires: tuple[str, ...] = ()      # stages an artifact must have passed first (promotion gate)
    hosts_command: str = ""             # hosts come from this local command, run when the stage is used
    discover: Any = field(default=None, compare=False, repr=False)

    def select(self, names: list[str] | None = None, roles: list[str] | None = None) -> tuple[Host, ...]:
        """Hosts filtered by --hosts and --roles; an unknown name is bad input."""
        hosts = self.hosts
        if names:
            known = {h.name for h in hosts} | {h.address for h in hosts}
            unknown = [n for n in names if n not in known]
            if unknown:
                raise ConfigError(f"stage {self.name}: no host {', '.join(unknown)} "
                                  f"(hosts: {', '.join(h.name for h in self.hosts)})")
            hosts = tuple(h for h in hosts if h.name in names or h.address in names)
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

    def stage(self, name: str | None) -> Stage:
        if not name and len(self.stages) == 1:
            name = next(iter(self.stages))
        if not name:
            raise ConfigError(f"{self.path}: say which stage with --stage "
                              f"(stages: {', '.join(self.stages)})")
        if name not in self.stages:
            raise ConfigError(f"{self.path}: no stage {name!r}{did_you_mean(name, self.stages)} "
                              f"(stages: {', '.join(self.stages) or 'none'})")
        stage = self.stages[name]
        if stage.discover is not None:
            stage = replace(stage, hosts=stage.discover(), discover=None)
            self.stages[name] = stage
        return stage
