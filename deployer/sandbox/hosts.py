"""Real-SSH sandbox hosts: Debian containers running sshd, for tests and the demo.

No image can be pulled here, so the image is built locally: ``debootstrap`` a
minimal Debian root file system, configure it in a chroot, ``docker import`` it.
The tag carries a hash of the image definition below, so editing the
definition forces a rebuild and unchanged definitions skip it.

Containers are started with testcontainers (an optional extra,
``deployer[sandbox]``; imported lazily) without its reaper, so hosts started by
``up()`` outlive the process until ``down()`` removes them: only those, by a label naming
the user and sandbox directory that started them.

Each container generates its own ed25519 host key when it starts and serves
only that key, so a known_hosts file pinning it is unambiguous. sshd logs to
the container's stderr with ``LogLevel VERBOSE``: every exec'd remote command
shows up in ``docker logs`` as a line containing ``Starting session: command``
(the command text itself is not logged).

For the recipes, hosts can publish port 80 on 127.0.0.1 (``ports={"80/tcp": None}``;
``up()`` always does): ``serve_nginx`` installs a recipe's server block and starts nginx,
``Traffic`` sends a steady, bounded request stream to them and records every answer.
``python -m deployer.sandbox.hosts`` builds the image; ``... serve|probe|traffic`` do the same for
the hosts ``up()`` started (scripts/demo uses them).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import toml

from deployer.errors import DeployerError

# --- image definition: everything here goes into the tag's hash -------------

SUITE = "bookworm"
PACKAGES = ["openssh-server", "python3", "python3-venv", "sudo", "procps", "nginx-light", "gunicorn", "curl"]
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
    """One running sandbox container, reachable over SSH at host:port.

    ``ports`` maps each published container port (``"80/tcp"``) to its port on 127.0.0.1.
    """

    name: str
    host: str
    port: int
    container_id: str
    label: str = DEFAULT_LABEL
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def http_port(self) -> int | None:
        """The loopback port of the container's port 80 (nginx), when published."""
        return self.ports.get("80/tcp")


def _docker_client():
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
    return _docker_client().containers.get(h.container_id)


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
    """A known_hosts line pinning the host key the container generated, e.g. ``[127.0.0.1]:32771 ssh-ed25519 AAAA...``."""
    for _ in range(5):          # docker exec now and then hands back no output under load
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
    for inside, outside in kwargs.pop("ports", {}).items():  # testcontainers passes ports itself too
        c.ports[inside] = _loopback_only(inside, outside)
    c.with_kwargs(**kwargs)
    c.ports["22/tcp"] = ("127.0.0.1", None)  # a random port, on loopback only
    c.start()
    wrapped = c.get_wrapped_container()
    try:
        wrapped.reload()
        ports = _published(wrapped)
        h = SandboxHost(name=name, host="127.0.0.1", port=ports["22/tcp"], container_id=wrapped.id, label=label,
                        ports=ports)
        _wait_ready(h)
    except BaseException:
        wrapped.remove(force=True)
        raise
    return h


def _loopback_only(inside: str, outside: Any) -> tuple[str, int | None]:
    """A published port is always bound to 127.0.0.1: ``None``, a port or ``("127.0.0.1", port)``."""
    if outside is None or isinstance(outside, int):
        return ("127.0.0.1", outside)
    if isinstance(outside, tuple) and len(outside) == 2 and outside[0] == "127.0.0.1":
        return outside
    raise SandboxError(f"port {inside}: sandbox ports are published on 127.0.0.1 only, got {outside!r}")


def _published(wrapped) -> dict[str, int]:
    """{"22/tcp": 32771, "80/tcp": 32772}: the container's ports published on the host."""
    found = {}
    for inside, bindings in (wrapped.attrs["NetworkSettings"]["Ports"] or {}).items():
        if bindings:
            found[inside] = int(bindings[0]["HostPort"])
    return found


def start_hosts(n: int, pubkey: str, *, label: str = DEFAULT_LABEL, prefix: str = "host",
                **docker_kwargs: Any) -> list[SandboxHost]:
    """Start n hosts in parallel (``host-1``..``host-n``), each accepting SSH when this returns.

    docker_kwargs go to ``docker run``, e.g. a tiny /srv for disk-full tests:
    ``tmpfs={"/srv": "size=1m,uid=1000,gid=1000"}``, or nginx reachable from this machine:
    ``ports={"80/tcp": None}`` (published on 127.0.0.1 only; read it as ``host.http_port``).
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
    """Force-remove every container carrying the label (``key`` or ``key=value``); return how many."""
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


BUNDLED_APP = Path(__file__).resolve().parent / "sample_app"     # package data: in the wheel too


def sample_repo(workdir: Path) -> Path:
    """The bundled sample app as a git repository of its own under workdir (one commit), made
    once: a deploy builds from git, and the installed package is no repository."""
    repo = Path(workdir) / "sample_app"
    if (repo / ".git").is_dir():
        return repo
    shutil.rmtree(repo, ignore_errors=True)
    shutil.copytree(BUNDLED_APP, repo, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    ident = ["-c", "user.name=deployer sandbox", "-c", "user.email=sandbox@localhost", "-c", "commit.gpgsign=false"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], [*ident, "commit", "-q", "-m", "sample app"]):
        r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
        if r.returncode != 0:
            raise SandboxError(f"cannot make {repo} a git repository: {r.stderr.strip()}")
    return repo


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


def instance(workdir: Path, label: str = DEFAULT_LABEL) -> dict[str, str]:
    """The label naming the hosts one ``up()`` started: this user's, for this sandbox directory.
    ``down()`` and ``running()`` see only these, never another checkout's or another user's."""
    owner = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "")
    digest = hashlib.sha256(f"{owner}:{Path(workdir).resolve()}".encode()).hexdigest()[:16]
    return {f"{label}.instance": digest}


def up(n: int, workdir: Path = Path(".sandbox"), config_path: Path = Path("hosts.sandbox.toml"),
       source: str = ".", *, label: str = DEFAULT_LABEL) -> list[SandboxHost]:
    """Replace the sandbox this directory started with n fresh hosts; write the key, known_hosts
    and config.

    Each host's port 80 is published on 127.0.0.1 as well (see ``running()`` / ``http_port``).
    """
    down(workdir, label)
    ensure_image()
    key = ensure_client_key(workdir)
    # port 80 is published too (loopback only), for `python -m deployer.sandbox.hosts serve` / `traffic`
    hosts = start_hosts(n, key.with_suffix(".pub").read_text(), label=label, ports={"80/tcp": None},
                        labels=instance(workdir, label))
    known_hosts = write_known_hosts(Path(workdir) / "known_hosts", hosts)
    write_config(config_path, hosts, key, known_hosts, source=source)
    return hosts


def down(workdir: Path = Path(".sandbox"), label: str = DEFAULT_LABEL) -> int:
    """Remove the hosts up() started for this directory (and no others); return how many."""
    return stop_all(_filter(workdir, label))


def _filter(workdir: Path, label: str) -> str:
    (key, value), = instance(workdir, label).items()
    return f"{key}={value}"


def running(workdir: Path = Path(".sandbox"), label: str = DEFAULT_LABEL) -> list[SandboxHost]:
    """The running hosts up() started for this directory, ordered host-1, host-2, ..."""
    hosts = []
    for c in _docker_client().containers.list(filters={"label": _filter(workdir, label)}):
        ports = _published(c)
        if "22/tcp" in ports:
            hosts.append(SandboxHost(name=c.labels[label], host="127.0.0.1", port=ports["22/tcp"],
                                     container_id=c.id, label=label, ports=ports))
    return sorted(hosts, key=lambda h: (len(h.name), h.name))


# --- web serving and traffic --------------------------------------------------
# Sandbox hosts have no systemd: nginx is started directly, as root, by docker exec. The app server
# (gunicorn) is started by the python_wsgi recipe's restart command on the first deploy.


def serve_nginx(h: SandboxHost, site: str) -> None:
    """Make ``site`` nginx's only server block in the container, then start (or reload) nginx."""
    import shlex

    code, out = exec_root(h, "rm -f /etc/nginx/sites-enabled/* && "
                             f"printf '%s' {shlex.quote(site)} > /etc/nginx/sites-enabled/app && nginx -t -q && "
                             "if [ -s /run/nginx.pid ] && kill -0 \"$(cat /run/nginx.pid)\" 2>/dev/null; "
                             "then nginx -s reload; else nginx; fi")
    if code != 0:
        raise SandboxError(f"{h.name}: nginx did not start: {out.strip()}")


@dataclass
class Sample:
    """One request of a Traffic run: which host, when sent and answered (time.time()), what came back."""

    host: str
    sent: float
    done: float
    status: int          # 0: no HTTP answer (see error)
    body: str
    error: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300 and not self.error

    @property
    def version(self) -> str:
        """The sample app's answer is ``sample <version> <sha>``: its version word."""
        words = self.body.split()
        return words[1] if len(words) >= 2 and words[0] == "sample" else ""


class Traffic:
    """A steady, bounded stream of HTTP GETs to sandbox hosts' published port 80 (127.0.0.1 only).

    ``threads`` workers per host share ``rate`` requests/s in total; half of them keep one
    connection alive, the other half open a new connection per request. The run ends at
    ``stop()``, after ``max_seconds`` or after ``max_requests``, whichever comes first.
    Every request is recorded as a ``Sample``; nothing is retried.
    """

    def __init__(self, targets: dict[str, int], *, rate: float = 150, threads: int = 2, path: str = "/",
                 max_seconds: float = 120, max_requests: int = 40000, timeout: float = 10):
        import threading

        if not targets:
            raise SandboxError("traffic: no target ports")
        self.targets = dict(targets)
        self.path = path
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.timeout = timeout
        self.workers = [(name, port, i % 2 == 0) for name, port in self.targets.items() for i in range(threads)]
        self.interval = len(self.workers) / rate
        self._stop = threading.Event()
        self._count = 0
        self._lock = threading.Lock()
        self._threads: list = []
        self._samples: list[list[Sample]] = []
        self.started = self.ended = 0.0

    def __enter__(self) -> "Traffic":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "Traffic":
        import threading

        self.started = time.time()
        for n, (name, port, keepalive) in enumerate(self.workers):
            out: list[Sample] = []
            self._samples.append(out)
            t = threading.Thread(target=self._run, args=(name, port, keepalive, n, out), daemon=True,
                                 name=f"traffic-{name}-{n}")
            self._threads.append(t)
            t.start()
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 5)
        if not self.ended:
            self.ended = time.time()
        return self.samples

    @property
    def samples(self) -> list[Sample]:
        return sorted((s for out in self._samples for s in out), key=lambda s: s.sent)

    def _take(self) -> bool:
        with self._lock:
            if self._count >= self.max_requests:
                return False
            self._count += 1
            return True

    def _run(self, name: str, port: int, keepalive: bool, n: int, out: list[Sample]) -> None:
        import http.client

        deadline = time.monotonic() + self.max_seconds
        next_at = time.monotonic() + self.interval * n / len(self.workers)  # spread the first requests
        conn = None
        while not self._stop.is_set() and time.monotonic() < deadline and self._take():
            pause = next_at - time.monotonic()
            if pause > 0 and self._stop.wait(pause):
                break
            next_at = max(next_at + self.interval, time.monotonic() - 1.0)  # catch up at most 1 s
            sent = time.time()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=self.timeout)
                conn.request("GET", self.path, headers={} if keepalive else {"Connection": "close"})
                response = conn.getresponse()
                body = response.read(4096).decode(errors="replace")
                out.append(Sample(name, sent, time.time(), response.status, body))
                if not keepalive or response.will_close:
                    conn.close()
                    conn = None
            except Exception as exc:  # refused, reset, timeout: exactly what must never happen
                out.append(Sample(name, sent, time.time(), 0, "", f"{type(exc).__name__}: {exc}"))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()
        self.ended = max(self.ended, time.time())

    def summary(self, samples: list[Sample] | None = None) -> dict:
        """Counts: total, ok, failed (non-2xx), errors (no answer), rate, and per host the versions seen."""
        samples = self.samples if samples is None else samples
        seconds = max((self.ended or time.time()) - self.started, 1e-9)
        per_host: dict[str, dict[str, int]] = {name: {} for name in self.targets}
        for s in samples:
            if s.ok:
                per_host[s.host][s.version or "?"] = per_host[s.host].get(s.version or "?", 0) + 1
        return {
            "requests": len(samples),
            "ok": sum(s.ok for s in samples),
            "failed": sum(1 for s in samples if not s.error and not s.ok),
            "errors": sum(1 for s in samples if s.error),
            "seconds": round(seconds, 2),
            "rate": round(len(samples) / seconds, 1),
            "versions": per_host,
            "first_errors": [f"{s.host}: {s.error or s.status}" for s in samples if not s.ok][:5],
        }


def format_summary(summary: dict) -> str:
    lines = [f"{summary['requests']} requests in {summary['seconds']:g}s ({summary['rate']:g}/s): "
             f"{summary['ok']} ok, {summary['failed']} failed (non-2xx), {summary['errors']} connection errors"]
    for host, versions in summary["versions"].items():
        seen = ", ".join(f"{v}: {n}" for v, n in sorted(versions.items())) or "nothing"
        lines.append(f"  {host}: {seen}")
    for e in summary["first_errors"]:
        lines.append(f"  ! {e}")
    return "\n".join(lines)


# --- python -m deployer.sandbox.hosts ----------------------------------------------


def _cli(argv: list[str]) -> None:
    """No arguments: build the image (scripts/setup). ``serve``: make the running sandbox hosts web
    servers for a recipe. ``traffic``: a bounded request stream against them, then its counts."""
    import argparse
    import importlib
    import signal

    parser = argparse.ArgumentParser(prog="python -m deployer.sandbox.hosts")
    sub = parser.add_subparsers(dest="cmd")
    serve = sub.add_parser("serve", help="nginx on every running sandbox host for a recipe; "
                                         "sets [app] recipe in the config")
    serve.add_argument("--config", required=True, help="the config sandbox.up wrote")
    serve.add_argument("--recipe", required=True, help="python_wsgi, django or static_site")
    sub.add_parser("probe", help="GET / once on every running sandbox host, print the answers")
    traffic = sub.add_parser("traffic", help="GET / on every running sandbox host until stopped")
    traffic.add_argument("--rate", type=float, default=150, help="requests/s in total (default 150)")
    traffic.add_argument("--max-seconds", type=float, default=120, help="hard time limit (default 120)")
    traffic.add_argument("--max-requests", type=int, default=40000, help="hard count limit (default 40000)")
    traffic.add_argument("--stop-file", help="stop as soon as this file exists")
    traffic.add_argument("--json", help="also write the counts to this file")
    args = parser.parse_args(argv)

    if args.cmd is None:
        print(ensure_image(log=lambda msg: print(msg, file=sys.stderr, flush=True)))
        return
    hosts = [h for h in running() if h.http_port]
    if not hosts:
        raise SandboxError("no running sandbox host with port 80 published (run: deployer sandbox.up)")
    if args.cmd == "serve":
        recipe = importlib.import_module(f"deployer.recipes.{args.recipe}")
        doc = toml.loads(Path(args.config).read_text())
        doc["app"]["recipe"] = args.recipe
        Path(args.config).write_text(toml.dumps(doc))
        ports = {h["port"] for h in doc["stages"]["sandbox"]["hosts"]}
        for h in hosts:
            if h.port in ports:
                serve_nginx(h, recipe.nginx_site(doc["app"]["deploy_to"]))
                print(f"{h.name}: nginx serves http://127.0.0.1:{h.http_port}/ ({args.recipe})")
        return
    if args.cmd == "probe":
        import urllib.request
        for h in hosts:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{h.http_port}/", timeout=5) as r:
                    print(f"{h.name}: {r.status} {r.read(200).decode(errors='replace').strip()}")
            except Exception as exc:
                print(f"{h.name}: {exc}")
        return
    run = Traffic({h.name: h.http_port for h in hosts}, rate=args.rate, max_seconds=args.max_seconds,
                  max_requests=args.max_requests)
    signal.signal(signal.SIGTERM, lambda *_: run._stop.set())
    run.start()
    deadline = time.monotonic() + args.max_seconds
    try:
        while time.monotonic() < deadline and any(t.is_alive() for t in run._threads):
            if args.stop_file and os.path.exists(args.stop_file):
                break
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    run.stop()
    summary = run.summary()
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    print(format_summary(summary), flush=True)


if __name__ == "__main__":
    try:
        _cli(sys.argv[1:])
    except SandboxError as e:
        sys.exit(f"sandbox: {e}")
