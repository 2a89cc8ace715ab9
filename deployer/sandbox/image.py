"""The sandbox image: Debian with sshd, built locally and tagged by a hash of its definition.

No image can be pulled here, so the image is built locally: ``debootstrap`` a minimal Debian root
file system, configure it in a chroot, ``docker import`` it. The tag carries a hash of the image
definition below, so editing the definition forces a rebuild and unchanged definitions skip it.
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
from pathlib import Path
from typing import Any

from deployer.errors import DeployerError

# --- image definition: everything here goes into the tag's hash -------------

SUITE = "bookworm"
PACKAGES = ["openssh-server", "python3", "python3-venv", "sudo", "procps", "nginx-light", "gunicorn", "curl"]
ENTRYPOINT = "/usr/local/sbin/sandbox-init"
NEEDPW_PASSWORD = "needpw-secret"

# Files written into the root file system (path -> (mode, content)).
FILES: dict[str, tuple[int, str]] = {
    # Included at the top of Debian's sshd_config: the first value obtained wins.
    "/etc/ssh/sshd_config.d/sandbox.conf": (
        0o644,
        """\
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UseDNS no
MaxStartups 200
MaxSessions 100
LogLevel VERBOSE
PrintMotd no
""",
    ),
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
}

# Run inside the chroot after debootstrap and after FILES are written.
SETUP = f"""\
set -eu
useradd --uid 1000 --user-group --create-home --home-dir /home/deploy --shell /bin/bash deploy
useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app
useradd --user-group --create-home --shell /bin/bash needpw
echo 'needpw:{NEEDPW_PASSWORD}' | chpasswd
install -d -o deploy -g deploy -m 0755 /srv
visudo -c -q
# pam_loginuid cannot write /proc/self/loginuid in an unprivileged container.
sed -i 's/^session\\s\\+required\\s\\+pam_loginuid.so/session optional pam_loginuid.so/' /etc/pam.d/sshd
rm -f /etc/ssh/ssh_host_*
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log
"""

IMAGE_CHANGES = [f'CMD ["{ENTRYPOINT}"]', "EXPOSE 22"]
IMAGE_NAME = "deployer-sandbox"


class SandboxError(DeployerError):
    """The sandbox cannot be built or started; the message says why in one line."""


def image_tag() -> str:
    """``deployer-sandbox:<12 hex>``: the hash of the whole image definition."""
    definition = json.dumps(
        {"suite": SUITE, "packages": PACKAGES, "files": FILES, "setup": SETUP, "changes": IMAGE_CHANGES},
        sort_keys=True,
    )
    return f"{IMAGE_NAME}:{hashlib.sha256(definition.encode()).hexdigest()[:12]}"


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


def ensure_image(log: Callable[[str], Any] = print) -> str:
    """Return the image tag, building the image first if Docker does not have it."""
    tag = image_tag()
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
            _build(tag, log)
    _present.add(tag)
    return tag


_present: set[str] = set()  # tags seen in this process: skip asking Docker again


def _build(tag: str, log: Callable[[str], Any]) -> None:
    started = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="deployer-sandbox-", dir="/var/tmp")
    root = os.path.join(workdir, "rootfs")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
    try:
        log(f"building {tag}: debootstrap {SUITE} (about a minute)")
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, root], env)
        for path, (mode, content) in FILES.items():
            target = Path(root + path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
            target.chmod(mode)
        _run(["chroot", root, "/bin/sh", "-c", SETUP], env)
        log(f"building {tag}: docker import")
        tar = subprocess.Popen(["tar", "--numeric-owner", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        changes = [arg for change in IMAGE_CHANGES for arg in ("--change", change)]
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
