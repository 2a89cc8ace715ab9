"""What `deployer setup` writes on a host, rendered here and nowhere else (pure): the recipe's
systemd unit and nginx site, and the sudoers drop-in letting the deploy user run exactly the
commands a deploy needs as root. `check` probes the same commands (`sudo_commands`)."""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from typing import Any

from deployer.config.canary import LB_ROLE as LB_ROLE  # these hosts may also check and reload nginx

SYSTEMCTL = "/usr/bin/systemctl"
NGINX = "/usr/sbin/nginx"
UNIT_DIR = "/etc/systemd/system"
SUDOERS_DIR = "/etc/sudoers.d"
SITES = "/etc/nginx/sites-available"
SITES_ENABLED = "/etc/nginx/sites-enabled"
DEFAULT_SITE = f"{SITES_ENABLED}/default"  # Debian's own site, also default_server on port 80


@dataclass(frozen=True)
class File:
    """One file setup keeps in place (owned by root), with its mode."""

    path: str
    content: str
    mode: str


@dataclass(frozen=True)
class HostSetup:
    """Everything setup does on one host."""

    app: str
    user: str  # the deploy user: owns deploy_to, gets the sudo rule
    create_user: bool
    deploy_to: str
    dirs: tuple[str, ...]  # deploy_to, releases, shared and the shared dirs: owned by user
    unit: File | None
    sudoers: File | None
    site: File | None
    site_link: str  # sites-enabled/<app> -> site.path ("" without a site)

    @property
    def files(self) -> tuple[File, ...]:
        return tuple(f for f in (self.unit, self.sudoers, self.site) if f is not None)

    @property
    def readable(self) -> tuple[File, ...]:
        """The files the deploy user can read back (`check` compares them): the unit and the site.
        The sudoers drop-in is root's alone (0440); check probes what it allows instead."""
        return tuple(f for f in (self.unit, self.site) if f is not None)


def unit_name(app: str) -> str:
    return f"{app}.service"


def unit_path(app: str) -> str:
    return f"{UNIT_DIR}/{unit_name(app)}"


def sudoers_path(app: str) -> str:
    """sudo skips files in sudoers.d whose name holds a '.': an app's dots become '_'."""
    return f"{SUDOERS_DIR}/deployer-{app.replace('.', '_')}"


def sudo_commands(app: str, *, unit: bool, lb: bool) -> tuple[str, ...]:
    """The command lines the deploy user may run as root (sudo compares arguments literally)."""
    cmds: list[str] = []
    if unit:
        cmds += [f"{SYSTEMCTL} {verb} {unit_name(app)}" for verb in ("start", "reload", "restart")]
    if lb:
        cmds += [f"{NGINX} -t", f"{SYSTEMCTL} reload nginx.service"]
    return tuple(cmds)


def sudo_rule(user: str, commands: tuple[str, ...]) -> str:
    """The one sudoers line: these commands, as root, without a password, nothing else."""
    return f"{user} ALL=(root) NOPASSWD: {', '.join(commands)}"


def sudoers(app: str, user: str, commands: tuple[str, ...]) -> str:
    return (
        f"# Written by `deployer setup` for {app}: {user} may run exactly these commands as root.\n"
        f"# Changes here are overwritten by the next setup; remove the file to take the rule away.\n"
        f"{sudo_rule(user, commands)}\n"
    )


def recipe_module(recipe: str) -> Any:
    """The recipe's module (deployer.recipes.<name>), or None without a recipe."""
    return importlib.import_module(f"deployer.recipes.{recipe}") if recipe else None


def has_unit(recipe: str) -> bool:
    return hasattr(recipe_module(recipe), "systemd_unit")


def plan(
    app: str,
    recipe: str,
    deploy_to: str,
    shared_dirs: tuple[str, ...],
    user: str,
    roles: tuple[str, ...] = (),
    create_user: bool = False,
) -> HostSetup:
    """What setup makes true on one host with these roles."""
    module = recipe_module(recipe)
    unit = site = sudo = None
    if hasattr(module, "systemd_unit"):
        unit = File(unit_path(app), module.systemd_unit(name=app, deploy_to=deploy_to, user=user), "644")
    if hasattr(module, "nginx_site"):
        site = File(f"{SITES}/{app}", module.nginx_site(deploy_to=deploy_to), "644")
    commands = sudo_commands(app, unit=unit is not None, lb=LB_ROLE in roles)
    if commands:
        sudo = File(sudoers_path(app), sudoers(app, user, commands), "440")
    dirs = [deploy_to, f"{deploy_to}/releases", f"{deploy_to}/shared"]
    for d in shared_dirs:  # tmp/pids: shared/tmp too, so the deploy user owns every level
        parts = d.split("/")
        dirs += [f"{deploy_to}/shared/{'/'.join(parts[: i + 1])}" for i in range(len(parts))]
    return HostSetup(
        app=app,
        user=user,
        create_user=create_user,
        deploy_to=deploy_to,
        dirs=tuple(dict.fromkeys(dirs)),
        unit=unit,
        sudoers=sudo,
        site=site,
        site_link=f"{SITES_ENABLED}/{app}" if site else "",
    )


def seen(digest: str, mode_owner: str) -> str:
    """How `check` sees a file on a host (inspect.sh's setup_file line): sha256 and mode:owner:group."""
    return f"{digest} {mode_owner}"


def expected(f: File) -> str:
    return seen(hashlib.sha256(f.content.encode()).hexdigest(), f"{f.mode}:root:root")


def drift(files: tuple[File, ...], found: dict[str, str]) -> tuple[str, ...]:
    """The paths among files that are on the host (found: path -> `seen`) with other bytes, mode or
    owner than setup writes. A file that is not there is no drift: setup has not run there."""
    return tuple(f.path for f in files if f.path in found and found[f.path] != expected(f))


def drift_note(path: str) -> str:
    what = "unit" if path.startswith(UNIT_DIR + "/") else "nginx site" if path.startswith(SITES + "/") else "file"
    return f"{what} {path} differs from what setup writes (changed by hand?)"
