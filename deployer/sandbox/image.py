"""The sandbox images: Debian with sshd, built locally and tagged by a hash of their definition.

No image can be pulled here, so the image is built locally: ``debootstrap`` a minimal Debian root
file system, configure it in a chroot, ``docker import`` it. The tag carries a hash of the image
definition below, so editing the definition forces a rebuild and unchanged definitions skip it.
Two definitions (flavours) go through the same builder: ``BASE`` (sshd as PID 1, what most tests
use) and ``SYSTEMD`` (systemd as PID 1 running sshd and nginx, as on a production server).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deployer.errors import DeployerError
from deployer.report.output import note

# --- image definitions: everything in one goes into its tag's hash ------------


@dataclass(frozen=True)
class Flavour:
    """One image definition: debootstrap's packages, files written into the root file system
    (path -> (mode, content)), a script run in the chroot after both, and ``docker import``'s
    ``--change`` instructions."""

    name: str
    packages: tuple[str, ...]
    files: dict[str, tuple[int, str]]
    setup: str
    changes: tuple[str, ...]
    suite: str = "bookworm"

    def tag(self) -> str:
        """``deployer-sandbox[-flavour]:<12 hex>``: the hash of the whole definition."""
        definition = json.dumps(
            {
                "suite": self.suite,
                "packages": list(self.packages),
                "files": self.files,
                "setup": self.setup,
                "changes": list(self.changes),
            },
            sort_keys=True,
        )
        return f"{self.name}:{hashlib.sha256(definition.encode()).hexdigest()[:12]}"


PACKAGES = ("openssh-server", "python3", "python3-venv", "sudo", "procps", "nginx-light", "gunicorn", "curl")
ENTRYPOINT = "/usr/local/sbin/sandbox-init"
NEEDPW_PASSWORD = "needpw-secret"


def _sshd_config(permit_root_login: str) -> str:
    # Included at the top of Debian's sshd_config: the first value obtained wins.
    return f"""\
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin {permit_root_login}
UseDNS no
MaxStartups 200
MaxSessions 100
LogLevel VERBOSE
PrintMotd no
"""


# Both flavours: the users, then what cannot work in an unprivileged container, then a small image.
_USERS = """\
useradd --uid 1000 --user-group --create-home --home-dir /home/deploy --shell /bin/bash deploy
useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app
"""
_CLEAN = """\
# pam_loginuid cannot write /proc/self/loginuid in an unprivileged container.
sed -i 's/^session\\s\\+required\\s\\+pam_loginuid.so/session optional pam_loginuid.so/' /etc/pam.d/sshd
rm -f /etc/ssh/ssh_host_*
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log
"""

# The default image: sshd as PID 1 in the foreground, logging to stderr (docker logs); the deploy
# user may sudo as `app`, `needpw` only with a password; /srv belongs to deploy.
BASE = Flavour(
    name="deployer-sandbox",
    packages=PACKAGES,
    files={
        "/etc/ssh/sshd_config.d/sandbox.conf": (0o644, _sshd_config("no")),
        "/etc/sudoers.d/sandbox": (
            0o440,
            """\
deploy ALL=(app) NOPASSWD: ALL
needpw ALL=(ALL) ALL
""",
        ),
        # Runs as PID 1: a fresh host key per container, the client key authorized,
        # then sshd in the foreground logging to stderr (docker logs).
        ENTRYPOINT: (
            0o755,
            """\
#!/bin/sh
set -eu
rm -f /etc/ssh/ssh_host_*
ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
for user in deploy needpw; do
    home=$(getent passwd "$user" | cut -d: -f6)
    install -d -o "$user" -g "$user" -m 0700 "$home/.ssh"
    printf '%s\\n' "${AUTHORIZED_KEY:-}" > "$home/.ssh/authorized_keys"
    chown "$user:$user" "$home/.ssh/authorized_keys"
    chmod 0600 "$home/.ssh/authorized_keys"
done
install -d -m 0755 /run/sshd
exec /usr/sbin/sshd -D -e
""",
        ),
    },
    setup=f"""\
set -eu
{_USERS}useradd --user-group --create-home --shell /bin/bash needpw
echo 'needpw:{NEEDPW_PASSWORD}' | chpasswd
install -d -o deploy -g deploy -m 0755 /srv
visudo -c -q
{_CLEAN}""",
    changes=(f'CMD ["{ENTRYPOINT}"]', "EXPOSE 22"),
)

FIRSTBOOT = "/usr/local/sbin/sandbox-firstboot"

# A production-shaped host: systemd is PID 1 and runs sshd, nginx and (later) the app. The deploy
# user has no sudo rule at all; root logs in with the key only. /srv/app belongs to deploy. Debian's
# Django is there for the django recipe's real migrate and collectstatic.
# Start it as hosts.py does (SYSTEMD_RUN): /run tmpfs, the cgroup tree read-only, container=docker.
SYSTEMD = Flavour(
    name="deployer-sandbox-systemd",
    packages=(*PACKAGES, "systemd", "systemd-sysv", "dbus", "python3-django"),
    files={
        "/etc/ssh/sshd_config.d/sandbox.conf": (0o644, _sshd_config("prohibit-password")),
        # Before sshd on every boot: a host key if the container has none yet (so it is fresh per
        # container and kept across restarts), and the client key (docker run -e AUTHORIZED_KEY,
        # which systemd keeps from its services: read from PID 1's environment) for deploy and root.
        FIRSTBOOT: (
            0o755,
            """\
#!/bin/sh
set -eu
[ -s /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
key=$(tr '\\0' '\\n' < /proc/1/environ | sed -n 's/^AUTHORIZED_KEY=//p')
for user in deploy root; do
    home=$(getent passwd "$user" | cut -d: -f6)
    install -d -o "$user" -g "$user" -m 0700 "$home/.ssh"
    printf '%s\\n' "$key" > "$home/.ssh/authorized_keys"
    chown "$user:$user" "$home/.ssh/authorized_keys"
    chmod 0600 "$home/.ssh/authorized_keys"
done
""",
        ),
        "/etc/systemd/system/sandbox-firstboot.service": (
            0o644,
            f"""\
[Unit]
Description=sandbox host key and authorized keys
Before=ssh.service

[Service]
Type=oneshot
ExecStart={FIRSTBOOT}
RemainAfterExit=yes

[Install]
RequiredBy=ssh.service
""",
        ),
    },
    setup=f"""\
set -eu
{_USERS}install -d -o deploy -g deploy -m 0755 /srv/app
systemctl enable sandbox-firstboot.service ssh.service nginx.service
# Nothing to do in a container, and each would fail (a degraded system) or slow the boot.
systemctl mask systemd-logind.service getty.target console-getty.service systemd-udevd.service \\
    systemd-udev-trigger.service systemd-tmpfiles-setup-dev.service sys-kernel-config.mount \\
    apt-daily.timer apt-daily-upgrade.timer
{_CLEAN}""",
    changes=('CMD ["/sbin/init"]', "EXPOSE 22 80"),
)

FLAVOURS = {"default": BASE, "systemd": SYSTEMD}


class SandboxError(DeployerError):
    """The sandbox cannot be built or started; the message says why in one line."""


def image_tag(flavour: Flavour = BASE) -> str:
    """The flavour's tag, e.g. ``deployer-sandbox:<12 hex>``."""
    return flavour.tag()


# --- building ----------------------------------------------------------------


def require(tool: str, hint: str) -> None:
    """SandboxError naming the tool and how to get it, unless it is on PATH."""
    if shutil.which(tool) is None:
        raise SandboxError(f"{tool} not found: {hint}")


def _docker_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True)


def check_docker() -> None:
    """Raise SandboxError unless a Docker engine answers."""
    require("docker", "install docker.io")
    r = _docker_cli("info", "--format", "{{.ServerVersion}}")
    if r.returncode != 0:
        reason = (r.stderr.strip().splitlines() or ["no answer"])[-1]
        raise SandboxError(f"no Docker engine answers ({reason})")


def ensure_image(log: Callable[[str], Any] = note, flavour: Flavour = BASE) -> str:
    """Return the flavour's image tag, building the image first if Docker does not have it."""
    tag = flavour.tag()
    if tag in _present:
        return tag
    check_docker()
    if _docker_cli("image", "inspect", tag).returncode == 0:
        _present.add(tag)
        return tag
    require("debootstrap", "install debootstrap")
    if os.geteuid() != 0:
        raise SandboxError("building the sandbox image needs root (debootstrap, chroot)")
    # One build at a time; a concurrent builder may have finished while we waited.
    with open(os.path.join(tempfile.gettempdir(), "deployer-sandbox-build.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _docker_cli("image", "inspect", tag).returncode != 0:
            _build(tag, flavour, log)
    _present.add(tag)
    return tag


DEB_CACHE = "/var/cache/deployer-sandbox/debs"
_present: set[str] = set()  # tags seen in this process: skip asking Docker again


def _build(tag: str, flavour: Flavour, log: Callable[[str], Any]) -> None:
    started = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="deployer-sandbox-", dir="/var/tmp")
    root = os.path.join(workdir, "rootfs")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
    try:
        log(f"building {tag}: debootstrap {flavour.suite} (one to a few minutes)")
        packages = ",".join(flavour.packages)
        os.makedirs(DEB_CACHE, exist_ok=True)  # the flavours share most packages: fetched once
        debootstrap = ["debootstrap", "--variant=minbase", f"--cache-dir={DEB_CACHE}", f"--include={packages}"]
        _run([*debootstrap, flavour.suite, root], env)
        for path, (mode, content) in flavour.files.items():
            target = Path(root + path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
            target.chmod(mode)
        _run(["chroot", root, "/bin/sh", "-c", flavour.setup], env)
        log(f"building {tag}: docker import")
        tar = subprocess.Popen(["tar", "--numeric-owner", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        changes = [arg for change in flavour.changes for arg in ("--change", change)]
        imp = subprocess.run(["docker", "import", *changes, "-", tag], stdin=tar.stdout, capture_output=True, text=True)
        if tar.stdout is not None:
            tar.stdout.close()
        if tar.wait() != 0 or imp.returncode != 0:
            raise SandboxError(f"docker import failed: {imp.stderr.strip()}")
        log(f"built {tag} in {time.monotonic() - started:.0f}s")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run(cmd: list[str], env: dict[str, str]) -> None:
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-20:])
        raise SandboxError(f"{cmd[0]} failed (exit {r.returncode}):\n{tail}")
