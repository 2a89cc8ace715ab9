"""One process, timed: wall clock, peak memory and CPU of exactly that process; the deployer source
that is measured (the work tree or an exported git revision); the CPU the hosts used meanwhile.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from deployer.sandbox.hosts import SandboxHost

HERE = Path(__file__).resolve().parent


class BenchError(Exception):
    """A measured run failed; the message has the command's output tail."""


@dataclass
class Proc:
    argv: list[str]
    seconds: float
    code: int
    max_rss_mb: float
    stdout: str
    stderr: str
    cpu_seconds: float = 0.0  # user + system, the process and the children it waited for
    host_cpu_seconds: float | None = None  # CPU the target containers used meanwhile (see measured())

    @property
    def total_cpu(self) -> float | None:
        return None if self.host_cpu_seconds is None else self.cpu_seconds + self.host_cpu_seconds

    def check(self, what: str) -> Proc:
        if self.code != 0:
            tail = "\n".join((self.stderr.strip() or self.stdout.strip()).splitlines()[-15:])
            raise BenchError(f"{what} failed (exit {self.code}):\n{tail}")
        return self


TIME = "/usr/bin/time"  # GNU time: the child's own rusage, free of our process's memory


def run_timed(argv: list[str], *, timeout: float = 900, env: dict | None = None, cwd: Path | None = None) -> Proc:
    """Run argv to completion: wall seconds, exit code, peak RSS and CPU seconds of that process.

    Peak RSS is ru_maxrss from a wait4() on the process. It is taken through GNU time because a
    child spawned straight from this (large) Python process inherits our resident pages in its
    ru_maxrss until it execs; time's own footprint is small. Without /usr/bin/time the
    process's VmHWM is polled from /proc instead (every 10 ms, the last reading before it exits).

    The wait blocks in waitpid(); a timer kills the process group at the timeout. (Popen.wait
    with a timeout polls, every 50 ms after the first 0.1 s: each time would be rounded up to
    the next poll, +25 ms on average.)
    """
    use_time = os.access(TIME, os.X_OK)
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile(mode="r", suffix=".rusage") as usage_file,
    ):
        full = [TIME, "-o", usage_file.name, "-f", "%M %U %S", *argv] if use_time else argv
        started = time.perf_counter()
        p = subprocess.Popen(
            full, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=cwd, start_new_session=True
        )
        hwm = _HwmPoller(p.pid) if not use_time else None
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            _kill_group(p, wait=False)  # the waitpid() below then returns

        timer = threading.Timer(timeout, expire)
        timer.start()
        try:
            p.wait()
        except BaseException:  # Ctrl-C: the whole process group goes
            _kill_group(p)
            raise
        finally:
            timer.cancel()
            if hwm:
                hwm.stop()
        seconds = time.perf_counter() - started
        if expired.is_set():
            raise subprocess.TimeoutExpired(argv, timeout)
        code = p.returncode
        rss_kb, cpu = (hwm.kb if hwm else 0), 0.0
        if use_time:
            fields = (usage_file.read().strip().splitlines() or [""])[-1].split()
            if len(fields) == 3:
                rss_kb, cpu = int(fields[0]), float(fields[1]) + float(fields[2])
        out.seek(0)
        err.seek(0)
        return Proc(
            argv,
            seconds,
            code,
            rss_kb / 1024,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
            cpu,
        )


def _kill_group(p: subprocess.Popen, wait: bool = True) -> None:
    try:
        os.killpg(p.pid, 9)
    except ProcessLookupError:
        pass
    if wait:
        p.wait()


class _HwmPoller:
    def __init__(self, pid: int):
        self.pid, self.kb = pid, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.kb = max(self.kb, int(line.split()[1]))
            except (OSError, ValueError):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def deployer_argv(src: Path | None = None) -> list[str]:
    """The `deployer` console script next to this interpreter (what ops run), else python -m deployer.
    With src (a snapshot from `snapshot()`), `python -m deployer` runs that copy instead."""
    script = Path(sys.executable).with_name("deployer")
    return [str(script)] if script.exists() and src is None else [sys.executable, "-m", "deployer"]


def compile_source(src: Path | None = None) -> None:
    """Bytecode for the measured package, as an installed deployer has: an editable install (or
    PYTHONDONTWRITEBYTECODE in the environment) would otherwise compile it from source on every
    run, a cost no installed copy pays."""
    pkg = (src or HERE.parent) / "deployer"
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(pkg)], check=True, stdout=subprocess.DEVNULL)


def cli_env(src: Path | None = None) -> dict:
    env = dict(os.environ)
    env.pop("DEPLOYER_CONFIG", None)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [env.get("PYTHONPATH")])])
    return env


def snapshot(ref: str, dest: Path, repo: Path = HERE.parent) -> tuple[Path, str]:
    """Export the deployer package of git revision `ref` into dest (to measure a fixed version while
    the work tree changes). Returns (dest, full commit sha)."""
    sha = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--verify", f"{ref}^{{commit}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    dest.mkdir(parents=True, exist_ok=True)
    top = subprocess.run(
        ["git", "-C", str(repo), "ls-tree", "--name-only", sha], check=True, capture_output=True, text=True
    ).stdout.split()
    parts = [p for p in ("deployer", "recipes") if p in top]  # recipes/ beside deployer/: early and current revisions
    archive = subprocess.Popen(["git", "-C", str(repo), "archive", sha, *parts], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, check=True)
    archive.stdout.close()
    if archive.wait() != 0:
        raise BenchError(f"git archive {ref} failed")
    if (dest / "recipes").is_dir() and not (dest / "deployer" / "recipes").exists():
        (dest / "deployer" / "recipes").symlink_to("../recipes")  # pyproject maps deployer.recipes there
    return dest, sha


def describe_source(src: Path | None, ref: str | None = None, sha: str | None = None, repo: Path = HERE.parent) -> str:
    """What was measured, for the report."""
    if src is not None:
        return f"git revision `{ref}` ({sha[:12] if sha else '?'}), exported to a temp dir"
    head = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(repo), "status", "--porcelain", "--", "deployer", "recipes"], capture_output=True, text=True
    ).stdout.strip()
    return f"the work tree at {head or '?'}" + (" with uncommitted changes to the package" if dirty else "")


def _cgroup_cpu_file(container_id: str) -> tuple[Path, str] | None:
    """Where the kernel accounts a container's CPU time: (file, 'ns' | 'usec')."""
    for path in (
        f"/sys/fs/cgroup/cpuacct/docker/{container_id}/cpuacct.usage",
        f"/sys/fs/cgroup/cpu,cpuacct/docker/{container_id}/cpuacct.usage",
    ):
        if os.path.exists(path):
            return Path(path), "ns"
    for path in (
        f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/cpu.stat",
        f"/sys/fs/cgroup/docker/{container_id}/cpu.stat",
    ):
        if os.path.exists(path):
            return Path(path), "usec"
    return None


def containers_cpu(hosts: list[SandboxHost]) -> float | None:
    """CPU seconds the hosts' containers have used so far (sshd, shells, tar...), or None when the
    cgroup files cannot be read. Less sensitive than wall time to what else the machine runs, not immune."""
    total = 0.0
    for h in hosts:
        found = _cgroup_cpu_file(h.container_id)
        if found is None:
            return None
        path, unit = found
        try:
            text = path.read_text()
        except OSError:
            return None
        if unit == "ns":
            total += int(text.strip()) / 1e9
        else:
            usage = next((line.split()[1] for line in text.splitlines() if line.startswith("usage_usec")), None)
            if usage is None:
                return None
            total += int(usage) / 1e6
    return total


def load_average() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
