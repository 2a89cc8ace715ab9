"""Real-SSH sandbox hosts: containers of the sandbox image (see image.py) running sshd, for tests
and the demo, and the known_hosts file a deployer run needs to reach them (the sample app and the
hosts.toml: deploy_files.py; the sandbox a directory started: instance.py).

Containers are started with testcontainers (an optional extra, ``deployer[sandbox]``; imported
lazily) without its reaper, so hosts started by ``instance.up()`` outlive the process until ``down()``
removes them: only those, by a label naming the user and sandbox directory that started them.

Each container generates its own ed25519 host key when it starts and serves only that key, so a
known_hosts file pinning it is unambiguous. sshd logs to the container's stderr with ``LogLevel
VERBOSE``: every exec'd remote command shows up in ``docker logs`` as a line containing
``Starting session: command`` (the command text itself is not logged).

For the recipes, hosts can publish port 80 on 127.0.0.1 (``ports={"80/tcp": None}``; ``up()``
always does): ``serve_nginx`` installs a recipe's server block and starts nginx.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployer.sandbox.image import BASE, SYSTEMD, SandboxError, ensure_image, require

DEFAULT_LABEL = "deployer-sandbox"
READY_TIMEOUT = 30.0
BOOT_TIMEOUT = 60.0  # a systemd host: until `systemctl is-system-running` has an answer

# How a systemd host runs without --privileged: its own /run, the cgroup tree read-only, and the
# signal that makes systemd halt (on docker's default SIGTERM it would re-execute itself).
SYSTEMD_RUN: dict[str, Any] = {
    "tmpfs": {"/run": "", "/run/lock": ""},
    "volumes": {"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "ro"}},
    "environment": {"container": "docker"},
    "stop_signal": "SIGRTMIN+3",
}
# A systemd host may be restarted (a reboot) and must keep its address: its published ports are
# chosen here, below the ephemeral range docker and the kernel hand out, instead of by docker.
FIXED_PORTS = range(20000, 32000)


def ensure_client_key(directory: Path) -> Path:
    """Create (once) an ed25519 key pair ``id_ed25519[.pub]`` in directory; return the private key path."""
    directory = Path(directory)
    key = directory / "id_ed25519"
    if not (key.exists() and key.with_suffix(".pub").exists()):
        require("ssh-keygen", "install openssh-client")
        directory.mkdir(parents=True, exist_ok=True)
        key.unlink(missing_ok=True)
        key.with_suffix(".pub").unlink(missing_ok=True)
        subprocess.run(
            ["ssh-keygen", "-t", "ed25519", "-N", "", "-q", "-C", "deployer-sandbox", "-f", str(key)],
            check=True,
            capture_output=True,
        )
    key.chmod(0o600)
    return key


# --- running hosts -----------------------------------------------------------


@dataclass
class SandboxHost:
    """One running sandbox container, reachable over SSH at host:port.

    ``ports`` maps each published container port (``"80/tcp"``) to its port on 127.0.0.1.
    """

    name: str
    host: str
    port: int
    container_id: str
    label: str = DEFAULT_LABEL
    ports: dict[str, int] = field(default_factory=dict)
    systemd: bool = False  # systemd is PID 1 (the SYSTEMD image), not sshd

    @property
    def http_port(self) -> int | None:
        """The loopback port of the container's port 80 (nginx), when published."""
        return self.ports.get("80/tcp")


def docker_client():
    try:
        import docker  # a dependency of testcontainers
    except ImportError:
        raise SandboxError("sandbox hosts need the optional extra: pip install 'deployer[sandbox]'") from None

    try:
        return docker.from_env()
    except docker.errors.DockerException as e:
        raise SandboxError(f"no Docker engine answers ({e})") from None


def container(h: SandboxHost):
    """The docker SDK Container of a host (to kill, pause, read logs...)."""
    return docker_client().containers.get(h.container_id)


def exec_root(h: SandboxHost, cmd: str) -> tuple[int, str]:
    """Run a shell command as root inside the container; return (exit code, stdout+stderr)."""
    result = container(h).exec_run(["sh", "-c", cmd], user="root")
    return result.exit_code, result.output.decode(errors="replace")


def logs(h: SandboxHost) -> str:
    """The container's output: sshd's log (one ``Starting session: command`` line per exec)."""
    return container(h).logs().decode(errors="replace")


def known_hosts_name(host: str, port: int) -> str:
    """How known_hosts names a host: bare on port 22, ``[host]:port`` otherwise (as OpenSSH looks it up)."""
    return host if port == 22 else f"[{host}]:{port}"


def host_key_line(h: SandboxHost) -> str:
    """A known_hosts line pinning the host key the container generated,
    e.g. ``[127.0.0.1]:32771 ssh-ed25519 AAAA...``."""
    for _ in range(5):  # docker exec now and then hands back no output under load
        code, out = exec_root(h, "cat /etc/ssh/ssh_host_ed25519_key.pub")
        if code != 0:
            raise SandboxError(f"{h.name}: cannot read host key: {out.strip()}")
        if len(out.split()) >= 2:
            keytype, blob = out.split()[:2]
            return f"{known_hosts_name(h.host, h.port)} {keytype} {blob}"
        time.sleep(0.2)
    raise SandboxError(f"{h.name}: cannot read host key: docker exec returned no output")


def served_host_key(h: SandboxHost, timeout: float = 5.0) -> str:
    """``TYPE BASE64`` of the key sshd serves right now (an SSH handshake, no authentication)."""
    import paramiko  # type: ignore[import-untyped, unused-ignore]

    with socket.create_connection((h.host, h.port), timeout=timeout) as sock:
        transport = paramiko.Transport(sock)
        transport.set_log_channel(_PROBE_LOG)  # failed probes are expected while sshd starts
        try:
            transport.start_client(timeout=timeout)
            key = transport.get_remote_server_key()
            return f"{key.get_name()} {key.get_base64()}"
        finally:
            transport.close()


_PROBE_LOG = "deployer.sandbox.hosts.probe"
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
    raise SandboxError(
        f"{h.name}: sshd not ready on {h.host}:{h.port} after {timeout:.0f}s ({last!r}); container log:\n{tail}"
    )


def _start_one(
    image: str, name: str, pubkey: str, label: str, docker_kwargs: dict, systemd: bool = False
) -> SandboxHost:
    import docker

    for attempt in range(5):  # a systemd host's fixed port may be taken meanwhile: another one
        try:
            return _start_container(image, name, pubkey, label, docker_kwargs, systemd)
        except docker.errors.APIError as e:
            taken = "already allocated" in str(e) or "address already in use" in str(e)
            if not (systemd and taken) or attempt == 4:
                raise
    raise AssertionError("unreachable")


def _start_container(image: str, name: str, pubkey: str, label: str, docker_kwargs: dict, systemd: bool) -> SandboxHost:
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    from testcontainers.core.config import testcontainers_config
    from testcontainers.core.container import DockerContainer

    testcontainers_config.ryuk_disabled = True  # the reaper image cannot be pulled; down() cleans up
    kwargs = _systemd_kwargs(docker_kwargs) if systemd else dict(docker_kwargs)
    kwargs["labels"] = {**kwargs.get("labels", {}), label: name}
    c = DockerContainer(image)
    ports: dict[str, Any] = c.ports  # testcontainers types it narrower than docker accepts
    c.tmpfs.update(kwargs.pop("tmpfs", {}))  # testcontainers passes these four to docker itself
    c.volumes.update(kwargs.pop("volumes", {}))
    c.with_envs(**kwargs.pop("environment", {}), AUTHORIZED_KEY=pubkey.strip())
    for inside, outside in {**kwargs.pop("ports", {}), "22/tcp": None}.items():  # 22: on loopback only
        address, port = _loopback_only(inside, outside)
        ports[inside] = (address, _fixed_port() if systemd and port is None else port)
    c.with_kwargs(**kwargs)
    try:
        c.start()
    except BaseException:
        if c._container is not None:  # created, but it could not start (a port taken)
            c._container.remove(force=True)
        raise
    wrapped = c.get_wrapped_container()
    try:
        wrapped.reload()
        ports = published_ports(wrapped)
        h = SandboxHost(
            name=name,
            host="127.0.0.1",
            port=ports["22/tcp"],
            container_id=wrapped.id,
            label=label,
            ports=ports,
            systemd=systemd,
        )
        _wait_booted(h)
        _wait_ready(h)
    except BaseException:
        wrapped.remove(force=True)
        raise
    return h


def _systemd_kwargs(docker_kwargs: dict) -> dict:
    """docker_kwargs on top of SYSTEMD_RUN, the mappings merged."""
    kwargs = {**SYSTEMD_RUN, **docker_kwargs}
    for key in ("tmpfs", "volumes", "environment"):
        kwargs[key] = {**SYSTEMD_RUN[key], **docker_kwargs.get(key, {})}
    return kwargs


def _fixed_port() -> int:
    """A port in FIXED_PORTS nothing listens on right now (on 127.0.0.1)."""
    import random

    for _ in range(50):
        port = random.choice(FIXED_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise SandboxError(f"no free port in {FIXED_PORTS.start}-{FIXED_PORTS.stop - 1} on 127.0.0.1")


def _wait_booted(h: SandboxHost, timeout: float = BOOT_TIMEOUT) -> str:
    """On a systemd host, wait until systemd has finished booting; return its state (``running``,
    or ``degraded`` when a unit failed). Other hosts: ``""`` at once."""
    import docker

    if not h.systemd:
        return ""
    deadline = time.monotonic() + timeout
    state = "no answer"
    while time.monotonic() < deadline:
        left = max(1, int(deadline - time.monotonic()))
        try:  # --wait: returns once the boot is done (or the time is up)
            _, out = exec_root(h, f"timeout {left} systemctl is-system-running --wait")
            state = (out.strip().splitlines() or ["no answer"])[-1]
        except docker.errors.APIError as e:  # still restarting
            state = str(e)
        if state in ("running", "degraded"):
            return state
        time.sleep(0.2)
    _, failed = exec_root(h, "systemctl --failed --no-legend --plain 2>&1 | head -n 5")
    raise SandboxError(f"{h.name}: systemd not booted after {timeout:.0f}s ({state!r}); failed units: {failed.strip()}")


def _loopback_only(inside: str, outside: Any) -> tuple[str, int | None]:
    """A published port is always bound to 127.0.0.1: ``None``, a port or ``("127.0.0.1", port)``."""
    if outside is None or isinstance(outside, int):
        return ("127.0.0.1", outside)
    if isinstance(outside, tuple) and len(outside) == 2 and outside[0] == "127.0.0.1":
        return outside
    raise SandboxError(f"port {inside}: sandbox ports are published on 127.0.0.1 only, got {outside!r}")


def published_ports(wrapped) -> dict[str, int]:
    """{"22/tcp": 32771, "80/tcp": 32772}: the container's ports published on the host."""
    found = {}
    for inside, bindings in (wrapped.attrs["NetworkSettings"]["Ports"] or {}).items():
        if bindings:
            found[inside] = int(bindings[0]["HostPort"])
    return found


def start_hosts(
    n: int,
    pubkey: str,
    *,
    label: str = DEFAULT_LABEL,
    prefix: str = "host",
    systemd: bool = False,
    **docker_kwargs: Any,
) -> list[SandboxHost]:
    """Start n hosts in parallel (``host-1``..``host-n``), each accepting SSH when this returns.

    docker_kwargs go to ``docker run``, e.g. a tiny /srv for disk-full tests:
    ``tmpfs={"/srv": "size=1m,uid=1000,gid=1000"}``, or nginx reachable from this machine:
    ``ports={"80/tcp": None}`` (published on 127.0.0.1 only; read it as ``host.http_port``).
    ``systemd``: hosts of the SYSTEMD image (systemd runs sshd and nginx; deploy has no sudo,
    root logs in with the key), booted when this returns; ``restart_host`` reboots one.
    """
    image = ensure_image(flavour=SYSTEMD if systemd else BASE)
    if systemd:
        docker_kwargs["labels"] = {**docker_kwargs.get("labels", {}), f"{label}.flavour": "systemd"}
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(n, 16) or 1) as pool:
        futures = [
            pool.submit(_start_one, image, f"{prefix}-{i}", pubkey, label, docker_kwargs, systemd)
            for i in range(1, n + 1)
        ]
        concurrent.futures.wait(futures)
    hosts = [f.result() for f in futures if f.exception() is None]
    errors = [exc for f in futures if (exc := f.exception()) is not None]
    if errors:
        stop_hosts(hosts)
        raise errors[0]
    return hosts


def restart_host(h: SandboxHost) -> SandboxHost:
    """Reboot a host (``docker restart``) and wait until it is booted and sshd answers again; return
    it as it is now. A systemd host keeps its address and host key, as a rebooted server does; a
    default host serves a new key and docker may give it new ports."""
    import dataclasses

    c = container(h)
    c.restart(timeout=30)
    c.reload()
    ports = published_ports(c)
    h = dataclasses.replace(h, port=ports["22/tcp"], ports=ports)
    _wait_booted(h)
    _wait_ready(h)
    return h


def stop_hosts(hosts: Iterable[SandboxHost]) -> None:
    """Force-remove the hosts' containers (already gone is fine)."""
    import docker

    client = docker_client()

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
    """Force-remove every container carrying the label (``key`` or ``key=value``); return how many."""
    import docker

    client = docker_client()
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
    code, out = exec_root(
        h, "rm -f /etc/ssh/ssh_host_* && ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key && kill -HUP 1"
    )
    if code != 0:
        raise SandboxError(f"{h.name}: cannot regenerate host key: {out.strip()}")
    new = _wait_ready(h, not_key=old)  # sshd re-executes itself on SIGHUP
    line = host_key_line(h)
    if not line.endswith(" " + new):
        raise SandboxError(f"{h.name}: sshd serves {new!r}, not the regenerated key")
    return line


# --- known_hosts for the deployer ----------------------------------------------


def write_known_hosts(path: Path, hosts: Iterable[SandboxHost]) -> Path:
    """Write a known_hosts file pinning each host's key."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(host_key_line(h) + "\n" for h in hosts))
    return path


# --- web serving ---------------------------------------------------------------
# Default sandbox hosts have no systemd: nginx is started directly, as root, by docker exec; on a
# systemd host, systemd reloads it. The app server (gunicorn) is started by the python_wsgi recipe's
# restart command on the first deploy.


def serve_nginx(h: SandboxHost, site: str) -> None:
    """Make ``site`` nginx's only server block in the container, then start (or reload) nginx."""
    import shlex

    code, out = exec_root(
        h,
        "rm -f /etc/nginx/sites-enabled/* && "
        f"printf '%s' {shlex.quote(site)} > /etc/nginx/sites-enabled/app && nginx -t -q && "
        "if [ -d /run/systemd/system ]; then systemctl reload-or-restart nginx; "
        'elif [ -s /run/nginx.pid ] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; '
        "then nginx -s reload; else nginx; fi",
    )
    if code != 0:
        raise SandboxError(f"{h.name}: nginx did not start: {out.strip()}")
