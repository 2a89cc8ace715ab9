"""Helpers shared by the tests (one of each): running the real CLI, reading sandbox hosts, git
repositories, tar archives, direct connections, pseudo-terminals and connection agents."""

from __future__ import annotations

import dataclasses
import fcntl
import gzip
import io
import json
import os
import select
import shlex
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import termios
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from deployer.sandbox import hosts as sandbox_mod
from deployer.sandbox.hosts import SandboxHost

REPO = Path(__file__).resolve().parent.parent

# Test containers carry their own label, so `inv sandbox.down` and the tests never remove each other's hosts.
TEST_LABEL = "deployer-sandbox-test"


@dataclass
class Sandbox:
    """Running sandbox hosts plus the files a deployer run needs to reach them."""

    hosts: list[SandboxHost]
    config_path: Path
    known_hosts_path: Path
    key_path: Path
    source: Path
    docker: Any = field(repr=False)  # docker SDK client

    def host(self, which: int | str | SandboxHost) -> SandboxHost:
        """A host by index, by name ("host-2") or as is."""
        if isinstance(which, SandboxHost):
            return which
        if isinstance(which, int):
            return self.hosts[which]
        return next(h for h in self.hosts if h.name == which)

    def container(self, which: int | str | SandboxHost):
        """The docker SDK Container (kill, pause, unpause, restart, logs...)."""
        return self.docker.containers.get(self.host(which).container_id)

    @property
    def containers(self) -> list:
        return [self.container(h) for h in self.hosts]

    def exec(self, which: int | str | SandboxHost, cmd: str) -> tuple[int, str]:
        """Run a shell command as root in the container; (exit code, stdout+stderr)."""
        return sandbox_mod.exec_root(self.host(which), cmd)

    def read(self, which: int | str | SandboxHost, cmd: str) -> tuple[int, str]:
        """`exec` for a command that only reads, run again when docker hands back its output
        cut short (it now and then does under load): an end mark proves the whole came back."""
        mark = "@@read-end "
        for _ in range(5):
            code, out = self.exec(which, f"{{ {cmd}\n}}; printf '\\n{mark}%s\\n' \"$?\"")
            body, found, rc = out.rpartition(mark)
            if found and rc.strip().isdigit():
                return int(rc), body[:-1] if body.endswith("\n") else body
            time.sleep(0.2)
        raise AssertionError(f"docker exec on {self.host(which).name} kept losing the output of: {cmd}")

    def logs(self, which: int | str | SandboxHost) -> str:
        return sandbox_mod.logs(self.host(which))

    def command_count(self, which: int | str | SandboxHost) -> int:
        """How many exec sessions (remote commands) the host's sshd has started so far."""
        return self.logs(which).count("Starting session: command ")

    def logins(self, which: int | str | SandboxHost) -> int:
        """How many SSH logins of the deploy user the host's sshd has accepted so far."""
        return self.logs(which).count("Accepted publickey for deploy")


# --- the CLI -------------------------------------------------------------------------------------


def default_sigint() -> None:
    """In the child before exec: SIGINT (and SIGTERM, SIGHUP) as a terminal leaves them. A
    shell's background job (as a CI runner may start the suite) has SIGINT ignored, `nohup`
    SIGHUP; Python then never raises KeyboardInterrupt, and a signal test would measure nothing."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def cli_env() -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("DEPLOYER_CONFIG", None)
    return env


def cli(
    sb, *args: str, timeout: float = 180, cwd: Path | None = None, stdout=subprocess.PIPE, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run `deployer ARGS --config <sandbox config>` as ops would, capturing output (stdout: or
    into that file descriptor); `env` adds to the environment."""
    return subprocess.run(
        [sys.executable, "-m", "deployer", *args, "--config", str(sb.config_path)],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
        env={**cli_env(), **(env or {})},
        cwd=cwd or sb.config_path.parent,
    )


def closed_pipe() -> int:
    """The write end of a pipe nobody reads any more (a `| head` that exited); the caller closes it."""
    r, w = os.pipe()
    os.close(r)
    return w


def cli_popen(sb, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "deployer", *args, "--config", str(sb.config_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**cli_env(), **(env or {})},
        cwd=sb.config_path.parent,
        preexec_fn=default_sigint,
    )


def status(sb) -> list[dict]:
    """status --json: one record per host."""
    proc = cli(sb, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["hosts"]


def releases(sb) -> list[dict]:
    """releases --json, flattened: one record per release per host, with its host."""
    proc = cli(sb, "releases", "--json")
    assert proc.returncode == 0, proc.stderr
    return [{"host": h["host"], **r} for h in json.loads(proc.stdout)["hosts"] for r in h["releases"]]


def tree(sb, host, deploy_to: str = "/srv/app") -> str:
    """A listing of every path under deploy_to with link targets: compare before/after."""
    code, out = sb.read(host, f"cd {shlex.quote(deploy_to)} 2>/dev/null && find . -printf '%p %y %l\\n' | sort")
    return out


def release_dirs(sb, host, deploy_to: str = "/srv/app") -> list[str]:
    code, out = sb.read(host, f"ls -A {shlex.quote(deploy_to + '/releases')} 2>/dev/null")
    return sorted(out.split())


def current(sb, host, deploy_to: str = "/srv/app") -> str:
    code, out = sb.read(host, f"readlink {shlex.quote(deploy_to + '/current')}")
    return out.strip() if code == 0 else ""


@dataclass
class ConfigFile:
    """A hosts.toml written by hand for hosts the sandbox fixture did not start: what cli() needs."""

    config_path: Path


def write_config(tmp_path: Path, hosts: list, ssh: dict, known_hosts: str, source) -> ConfigFile:
    """tmp_path/hosts.toml: one stage "prod" of `hosts`, the [ssh] table given, known_hosts beside it."""
    import toml

    kh = tmp_path / "known_hosts"
    kh.write_text(known_hosts)
    doc = {
        "app": {"name": "sample", "deploy_to": "/srv/app"},
        "build": {"source": str(source)},
        "ssh": {"known_hosts": str(kh), "connect_timeout": 10, **ssh},
        "stages": {"prod": {"hosts": hosts}},
    }
    path = tmp_path / "hosts.toml"
    path.write_text(toml.dumps(doc))
    return ConfigFile(path)


# --- git repositories ----------------------------------------------------------------------------

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Sample Author",
    "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00+00:00",
    "GIT_COMMITTER_NAME": "Sample Author",
    "GIT_COMMITTER_EMAIL": "author@example.com",
    "GIT_COMMITTER_DATE": "2024-01-01T00:00:00+00:00",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


def git(repo: Path, *args: str, date: str | None = None) -> str:
    """Run git in repo with fixed identity and dates (deterministic commits; `date` for author and
    committer instead of the fixed one), no user or system config; return stdout."""
    env = {k: v for k, v in os.environ.items() if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")}
    env.update(GIT_ENV)
    if date:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = date
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main", *args],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def commit_change(repo: Path, name: str, content: str) -> None:
    """A new commit in the app repo: a new artifact."""
    (repo / name).write_text(content)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"change {name}")


# --- tar archives --------------------------------------------------------------------------------


def tar_member(name: str, data: bytes = b"", **attrs) -> tuple[tarfile.TarInfo, bytes | None]:
    """One entry: a regular file holding data (mode 0644, mtime 0), or what attrs make it
    (type=tarfile.SYMTYPE, linkname=..., mode=...)."""
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    info.mtime = 0
    for key, value in attrs.items():
        setattr(info, key, value)
    if info.isreg():
        info.size = len(data)
        return info, data
    return info, None


def _pack(fileobj, members: list[tuple[tarfile.TarInfo, bytes | None]], level: int) -> None:
    with (
        gzip.GzipFile(fileobj=fileobj, mode="wb", compresslevel=level, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tf,
    ):
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)


def tar_gz(members: list[tuple[tarfile.TarInfo, bytes | None]], level: int = 6) -> bytes:
    """A .tar.gz of members (see tar_member), in memory."""
    buf = io.BytesIO()
    _pack(buf, members, level)
    return buf.getvalue()


def write_tar_gz(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], level: int = 6) -> Path:
    with open(path, "wb") as raw:
        _pack(raw, members, level)
    return path


def big_artifact(directory: Path, mb: int) -> Path:
    """Incompressible payload in stored (level 0) gzip: quick to make, `mb` MB on the wire."""
    return write_tar_gz(
        directory / f"big-{mb}.tar.gz",
        [tar_member("blob.bin", os.urandom(mb << 20)), tar_member("REVISION", b"big\n")],
        level=0,
    )


# --- direct connections --------------------------------------------------------------------------


def sandbox_host(sb, index: int = 0, **ssh_changes):
    """Host `index` of the sandbox's config as the deployer loads it, SSH settings changed."""
    from deployer.config import load as config_mod

    host = config_mod.load(str(sb.config_path)).stage("sandbox").hosts[index]
    return dataclasses.replace(host, ssh=dataclasses.replace(host.ssh, **ssh_changes)) if ssh_changes else host


def host_conn(sb, index: int = 0, **ssh_changes):
    """An open deployer Connection (no agent) to that host; the caller closes it."""
    from deployer.ssh.connection import Connection

    return Connection(sandbox_host(sb, index, **ssh_changes)).open()


# --- pseudo-terminals ----------------------------------------------------------------------------


def _controlling_terminal() -> None:
    """In the child before exec: its own session, with the pty on stdin as its terminal."""
    default_sigint()
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def under_pty(
    argv: list[str],
    *,
    keys: bytes = b"",
    env: dict | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
    rows: int = 40,
    columns: int = 120,
) -> tuple[int, str]:
    """Run argv on a pseudo-terminal (its controlling terminal, rows x columns); once it has
    printed something, type keys. (exit code, everything it printed); killed after timeout."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    proc = subprocess.Popen(
        argv,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**cli_env(), **(env or {})},
        cwd=cwd,
        preexec_fn=_controlling_terminal,
    )
    os.close(slave)
    out = b""
    typed = not keys
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                out += data
            if out and not typed:  # it said something (a remote shell's prompt): type
                os.write(master, keys)
                typed = True
        else:
            proc.kill()
        code = proc.wait(timeout=30)
    finally:
        os.close(master)
    return code, out.decode("utf-8", "replace")


# --- waiting and connection agents ---------------------------------------------------------------


def wait_until(predicate, timeout: float, what: str, every: float = 0.05):
    """Poll predicate until it returns something truthy (bounded in time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def agent_pids(under: str) -> list[int]:
    """Connection agents whose socket is under `under` (those a test started). Read from /proc:
    the machine that runs the tests is Linux, whatever client it simulates."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"deployer.ssh.agent_server" in argv and any(a.decode(errors="replace").startswith(under) for a in argv):
            pids.append(int(entry))
    return pids


def kill_agents(under: str, sig: int = signal.SIGKILL) -> None:
    for pid in agent_pids(under):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    wait_until(lambda: not agent_pids(under), 10, "the agents to exit")


# --- a TCP path that can be cut ------------------------------------------------------------------


class Forwarder:
    """127.0.0.1:port relayed to target, every connection, until close(): from then on the
    listener is gone and open connections are reset (a store or host that went down). With
    `hold`, a connection whose request holds those bytes is relayed no further either way, until
    close() or HOLD_LIMIT seconds (a store paused mid-request); `held` counts them."""

    HOLD_LIMIT = 120.0

    def __init__(self, target: tuple[str, int], hold: bytes | None = None):
        self.target = target
        self.hold = hold
        self.held = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.open: list[socket.socket] = []
        self.closed = False
        self._gone = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.server.accept()
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                return
            upstream.settimeout(None)
            self.open += [client, upstream]
            for a, b, hold in ((client, upstream, self.hold), (upstream, client, None)):
                threading.Thread(target=self._copy, args=(a, b, hold), daemon=True).start()

    def _copy(self, src: socket.socket, dst: socket.socket, hold: bytes | None) -> None:
        try:
            while data := src.recv(65536):
                if hold is not None and hold in data:
                    self.held += 1
                    self._gone.wait(self.HOLD_LIMIT)
                    return
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self.closed = True
        self._gone.set()
        try:
            self.server.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        except OSError:
            pass
        self.server.close()
        for conn in self.open:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()


TRICKLE_PROXY = Path(__file__).with_name("trickle_proxy.py")


class Trickle:
    """The test store behind a relay that trickles each response (tests/trickle_proxy.py):
    `size` bytes every `every` seconds, for at most `limit` seconds. Run here on 127.0.0.1 (for
    scripts run here), or with inside=True in the store's container, where hosts reach it.
    `endpoint` is where to reach it."""

    def __init__(self, s3_store, every: float, size: int = 1, limit: float = 120, inside: bool = False):
        import uuid

        import docker

        self.proc: subprocess.Popen | None = None
        self.container = None
        port_file = f"/tmp/trickle-{uuid.uuid4().hex[:8]}"
        timing = [str(every), str(size), str(limit)]
        if inside:
            self.container = docker.from_env().containers.get(s3_store.container_id)
            address = s3_store.host_endpoint.split("//")[1].rsplit(":", 1)[0]
            self.container.exec_run(
                ["python3", "-c", TRICKLE_PROXY.read_text(), "0.0.0.0", port_file, "127.0.0.1", "8333", *timing],
                detach=True,
            )

            def read() -> str:
                code, out = self.container.exec_run(["cat", port_file])
                return out.decode() if code == 0 else ""
        else:
            address, port = s3_store.endpoint.split("//")[1].rsplit(":", 1)
            self.proc = subprocess.Popen(
                [sys.executable, str(TRICKLE_PROXY), "127.0.0.1", port_file, address, port, *timing]
            )

            def read() -> str:
                return Path(port_file).read_text() if Path(port_file).exists() else ""

        wait_until(lambda: read() != "", 20, "the trickling relay to listen")
        port, self.pid = read().split()
        self.endpoint = f"http://{address}:{port}"

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        if self.container is not None:
            self.container.exec_run(["kill", self.pid])


class ProcessLists:
    """`ps -ww -eo args` of every host of a sandbox, sampled in a thread from now until stop() (at
    most `limit` seconds): `samples` holds (host name, output) pairs."""

    def __init__(self, sb, limit: float = 120):
        self.samples: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(sb, limit), daemon=True)
        self._thread.start()

    def _run(self, sb, limit: float) -> None:
        deadline = time.monotonic() + limit
        while not self._stop.is_set() and time.monotonic() < deadline:
            for h in sb.hosts:
                self.samples.append((h.name, sb.exec(h, "ps -ww -eo args")[1]))
            time.sleep(0.05)

    def showing(self, text: str) -> list[str]:
        """Every sample with text in it."""
        return [out for _, out in list(self.samples) if text in out]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def store_for(s3_store, prefix: str, cache: Path, **extra):
    """An S3Store on the test store under `prefix`, downloading into `cache`."""
    from deployer.artifact.s3store import S3Store
    from deployer.config.settings import StoreSettings

    settings = StoreSettings(
        bucket=s3_store.bucket, prefix=prefix, endpoint=s3_store.endpoint, host_endpoint=s3_store.endpoint, **extra
    )
    return S3Store(settings, cache)
