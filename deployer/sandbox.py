"""Real-SSH sandbox hosts: Debian containers running sshd, for tests and the demo.

No image can be pulled here, so the image is built locally: ``debootstrap`` a
minimal Debian root file system, configure it in a chroot, ``docker import`` it.
The tag carries a hash of the image definition below, so editing the
definition forces a rebuild and unchanged definitions skip it.

Containers are started with testcontainers (an optional extra,
``deployer[sandbox]``; imported lazily) without its reaper, so hosts started by
``up()`` outlive the process until ``down()`` removes them by label.

Each container generates its own ed25519 host key when it starts and serves
only that key, so a known_hosts file pinning it is unambiguous. sshd logs to
the container's stderr with ``LogLevel VERBOSE``: every exec'd remote command
shows up in ``docker logs`` as a line containing ``Starting session: command``
(the command text itself is not logged).
"""

from __future__ import annotations

import concurrent.futures
import copy
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import toml

# --- image definition: everything here goes into the tag's hash -------------

SUITE = "bookworm"
PACKAGES = ["openssh-server", "python3", "sudo", "procps", "nginx-light", "gunicorn", "curl"]
ENTRYPOINT = "/usr/local/sbin/sandbox-init"
NEEDPW_PASSWORD = "needpw-secret"

# Files written into the root file system (path -> (mode, content)).
FILES: dict[str, tuple[int, str]] = {
    # Included at the top of Debian's sshd_config: the first value obtained wins.
    "/etc/ssh/sshd_config.d/sandbox.conf": (0o644, """\
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UseDNS no
MaxStartups 200
MaxSessions 100
LogLevel VERBOSE
PrintMotd no
"""),
    "/etc/sudoers.d/sandbox": (0o440, """\
deploy ALL=(app) NOPASSWD: ALL
needpw ALL=(ALL) ALL
"""),
    # Runs as PID 1: a fresh host key per container, the client key authorized,
    # then sshd in the foreground logging to stderr (docker logs).
    ENTRYPOINT: (0o755, """\
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
"""),
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
DEFAULT_LABEL = "deployer-sandbox"
READY_TIMEOUT = 30.0


class SandboxError(Exception):
    """The sandbox cannot be built or started; the message says why in one line."""


def image_tag() -> str:
    """``deployer-sandbox:<12 hex>``: the hash of the whole image definition."""
    definition = json.dumps(
        {"suite": SUITE, "packages": PACKAGES, "files": FILES, "setup": SETUP, "changes": IMAGE_CHANGES},
        sort_keys=True,
    )
    return f"{IMAGE_NAME}:{hashlib.sha256(definition.encode()).hexdigest()[:12]}"


# --- building ----------------------------------------------------------------


def _require(tool: str, hint: str) -> None:
    if shutil.which(tool) is None:
        raise SandboxError(f"{tool} not found: {hint}")


def _docker_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True)


def check_docker() -> None:
    """Raise SandboxError unless a Docker engine answers."""
    _require("docker", "install docker.io")
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
    _require("debootstrap", "install debootstrap")
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


def ensure_client_key(directory: Path) -> Path:
    """Create (once) an ed25519 key pair ``id_ed25519[.pub]`` in directory; return the private key path."""
    directory = Path(directory)
    key = directory / "id_ed25519"
    if not (key.exists() and key.with_suffix(".pub").exists()):
        _require("ssh-keygen", "install openssh-client")
        directory.mkdir(parents=True, exist_ok=True)
        key.unlink(missing_ok=True)
        key.with_suffix(".pub").unlink(missing_ok=True)
        subprocess.run(["ssh-keygen", "-t", "ed25519", "-N", "", "-q", "-C", "deployer-sandbox", "-f", str(key)],
                       check=True, capture_output=True)
    key.chmod(0o600)
    return key


# --- running hosts -----------------------------------------------------------


@dataclass
class SandboxHost:
    """One running sandbox container, reachable over SSH at host:port."""

    name: str
    host: str
    port: int
    container_id: str
    label: str = DEFAULT_LABEL


def _docker_client():
    import docker  # a dependency of testcontainers

    try:
        return docker.from_env()
    except docker.errors.DockerException as e:
        raise SandboxError(f"no Docker engine answers ({e})") from None


def container(h: SandboxHost):
    """The docker SDK Container of a host (to kill, pause, read logs...)."""
    return _docker_client().containers.get(h.container_id)


def exec_root(h: SandboxHost, cmd: str) -> tuple[int, str]:
    """Run a shell command as root inside the container; return (exit code, stdout+stderr)."""
    result = container(h).exec_run(["sh", "-c", cmd], user="root")
    return result.exit_code, result.output.decode(errors="replace")


def logs(h: SandboxHost) -> str:
    """The container's output: sshd's log (one ``Starting session: command`` line per exec)."""
    return container(h).logs().decode(errors="replace")


def host_key_line(h: SandboxHost) -> str:
    """A known_hosts line pinning the host key the container generated, e.g. ``[127.0.0.1]:32771 ssh-ed25519 AAAA...``."""
    code, out = exec_root(h, "cat /etc/ssh/ssh_host_ed25519_key.pub")
    if code != 0:
        raise SandboxError(f"{h.name}: cannot read host key: {out.strip()}")
    keytype, blob = out.split()[:2]
    return f"[{h.host}]:{h.port} {keytype} {blob}"


def served_host_key(h: SandboxHost, timeout: float = 5.0) -> str:
    """``TYPE BASE64`` of the key sshd serves right now (an SSH handshake, no authentication)."""
    import paramiko

    with socket.create_connection((h.host, h.port), timeout=timeout) as sock:
        transport = paramiko.Transport(sock)
        transport.set_log_channel(_PROBE_LOG)  # failed probes are expected while sshd starts
        try:
            transport.start_client(timeout=timeout)
            key = transport.get_remote_server_key()
            return f"{key.get_name()} {key.get_base64()}"
        finally:
            transport.close()


_PROBE_LOG = "deployer.sandbox.probe"
logging.getLogger(_PROBE_LOG).setLevel(logging.CRITICAL + 1)


def _banner(h: SandboxHost, timeout: float) -> bytes:
    """The first line sshd sends; docker's port proxy accepts and then drops connections until sshd listens."""
    with socket.create_connection((h.host, h.port), timeout=timeout) as sock:
        data = b""
        while b"\n" not in data:
            chunk = sock.recv(256)
            if not chunk:
                break
            data += chunk
        return data.split(b"\n")[0]


def _wait_ready(h: SandboxHost, timeout: float = READY_TIMEOUT, not_key: str | None = None) -> str:
    """Wait until sshd completes a handshake (serving a key other than not_key); return the key."""
    deadline = time.monotonic() + timeout
    last: Exception | str = "no attempt"
    while time.monotonic() < deadline:
        try:
            if not _banner(h, timeout=3).startswith(b"SSH-2.0-"):
                raise ConnectionError("no SSH banner")
            key = served_host_key(h, timeout=3)
            if key != not_key:
                return key
            last = "still serving the old host key"
        except Exception as e:  # refused, reset, banner timeout while sshd starts
            last = e
        time.sleep(0.05)
    try:
        tail = "\n".join(logs(h).splitlines()[-20:])
    except Exception as e:
        tail = f"(no logs: {e})"
    raise SandboxError(f"{h.name}: sshd not ready on {h.host}:{h.port} after {timeout:.0f}s ({last!r}); container log:\n{tail}")


def _start_one(image: str, name: str, pubkey: str, label: str, docker_kwargs: dict) -> SandboxHost:
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    from testcontainers.core.config import testcontainers_config
    from testcontainers.core.container import DockerContainer

    testcontainers_config.ryuk_disabled = True  # the reaper image cannot be pulled; down() cleans up
    kwargs = dict(docker_kwargs)
    kwargs["labels"] = {**kwargs.get("labels", {}), label: name}
    c = DockerContainer(image)
    c.tmpfs.update(kwargs.pop("tmpfs", {}))  # testcontainers passes these two to docker itself
    c.with_envs(**kwargs.pop("environment", {}), AUTHORIZED_KEY=pubkey.strip())
    c.with_kwargs(**kwargs)
    c.ports["22/tcp"] = ("127.0.0.1", None)  # a random port, on loopback only
    c.start()
    wrapped = c.get_wrapped_container()
    try:
        wrapped.reload()
        port = int(wrapped.attrs["NetworkSettings"]["Ports"]["22/tcp"][0]["HostPort"])
        h = SandboxHost(name=name, host="127.0.0.1", port=port, container_id=wrapped.id, label=label)
        _wait_ready(h)
    except BaseException:
        wrapped.remove(force=True)
        raise
    return h


def start_hosts(n: int, pubkey: str, *, label: str = DEFAULT_LABEL, prefix: str = "host",
                **docker_kwargs: Any) -> list[SandboxHost]:
    """Start n hosts in parallel (``host-1``..``host-n``), each accepting SSH when this returns.

    docker_kwargs go to ``docker run``, e.g. a tiny /srv for disk-full tests:
    ``tmpfs={"/srv": "size=1m,uid=1000,gid=1000"}``.
    """
    image = ensure_image()
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(n, 16) or 1) as pool:
        futures = [pool.submit(_start_one, image, f"{prefix}-{i}", pubkey, label, docker_kwargs)
                   for i in range(1, n + 1)]
        concurrent.futures.wait(futures)
    hosts = [f.result() for f in futures if f.exception() is None]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        stop_hosts(hosts)
        raise errors[0]
    return hosts


def stop_hosts(hosts: Iterable[SandboxHost]) -> None:
    """Force-remove the hosts' containers (already gone is fine)."""
    import docker

    client = _docker_client()

    def remove(h: SandboxHost) -> None:
        try:
            client.containers.get(h.container_id).remove(force=True, v=True)
        except docker.errors.NotFound:
            pass

    hosts = list(hosts)
    if hosts:
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(hosts), 16)) as pool:
            list(pool.map(remove, hosts))


def stop_all(label: str = DEFAULT_LABEL) -> int:
    """Force-remove every container carrying the label; return how many."""
    import docker

    client = _docker_client()
    found = client.containers.list(all=True, filters={"label": label})
    for c in found:
        try:
            c.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass
    return len(found)


def regenerate_host_key(h: SandboxHost) -> str:
    """Give the host a new host key and make sshd serve it; return the new known_hosts line."""
    old = served_host_key(h)
    code, out = exec_root(h, "rm -f /etc/ssh/ssh_host_* && "
                             "ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key && kill -HUP 1")
    if code != 0:
        raise SandboxError(f"{h.name}: cannot regenerate host key: {out.strip()}")
    new = _wait_ready(h, not_key=old)  # sshd re-executes itself on SIGHUP
    line = host_key_line(h)
    if not line.endswith(" " + new):
        raise SandboxError(f"{h.name}: sshd serves {new!r}, not the regenerated key")
    return line


# --- files for the deployer --------------------------------------------------


def write_known_hosts(path: Path, hosts: Iterable[SandboxHost]) -> Path:
    """Write a known_hosts file pinning each host's key."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(host_key_line(h) + "\n" for h in hosts))
    return path


def _deep_merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def write_config(path: Path, hosts: list[SandboxHost], key_path: Path, known_hosts_path: Path, *,
                 stage: str = "sandbox", deploy_to: str = "/srv/app", app_name: str = "sample",
                 source: str, extra: dict | None = None) -> Path:
    """Write a hosts.toml for the hosts; the first host has roles web+migrate, the others web."""
    doc: dict[str, Any] = {
        "app": {"name": app_name, "deploy_to": deploy_to, "keep_releases": 5,
                "shared_dirs": ["log"], "shared_files": []},
        "build": {"source": str(source)},
        "ssh": {"user": "deploy", "key": str(Path(key_path).resolve()),
                "known_hosts": str(Path(known_hosts_path).resolve()),
                "host_key_policy": "strict", "connect_timeout": 10},
        "stages": {stage: {"hosts": [
            {"host": h.host, "port": h.port, "name": h.name, "roles": ["web", "migrate"] if i == 0 else ["web"]}
            for i, h in enumerate(hosts)]}},
    }
    _deep_merge(doc, extra or {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(toml.dumps(doc))
    return path


# --- inv sandbox.up / sandbox.down -------------------------------------------


def up(n: int, workdir: Path = Path(".sandbox"), config_path: Path = Path("hosts.sandbox.toml"),
       source: str = ".", *, label: str = DEFAULT_LABEL) -> list[SandboxHost]:
    """Replace any running sandbox with n fresh hosts; write the key, known_hosts and config."""
    stop_all(label)
    ensure_image()
    key = ensure_client_key(workdir)
    hosts = start_hosts(n, key.with_suffix(".pub").read_text(), label=label)
    known_hosts = write_known_hosts(Path(workdir) / "known_hosts", hosts)
    write_config(config_path, hosts, key, known_hosts, source=source)
    return hosts


def down(label: str = DEFAULT_LABEL) -> int:
    """Remove every sandbox host started by up(); return how many."""
    return stop_all(label)


if __name__ == "__main__":
    try:
        print(ensure_image(log=lambda msg: print(msg, file=sys.stderr, flush=True)))
    except SandboxError as e:
        sys.exit(f"sandbox: {e}")
