"""Measure the deployer side by side with the floor (benchmarks/floor.sh) on sandbox hosts.

Everything here drives real processes the way ops would: ``deployer deploy --artifact FILE
--config CFG`` and ``deployer rollback --config CFG`` as subprocesses, and the floor script as a
subprocess. Each is timed by wall clock from spawn to exit; its peak memory is the ``ru_maxrss`` of
exactly that process (through /usr/bin/time; for the floor: its largest ``ssh``) and its CPU time
is the process's rusage plus what the target containers used meanwhile (cgroup accounting).
Remote command executions are counted from each host's sshd log (one ``Starting session:
command`` line per exec channel) before and after every run.

Latency: a ``NetProxy`` per host adds ``latency_ms`` to each direction (so RTT + 2 x latency_ms);
the config and the floor then use the proxy ports, and known_hosts pins the host key for both
the direct and the proxy port.

Every repetition deploys into fresh directories (``/srv/bench/<run>/...`` for the deployer,
``/srv/floor/<run>/...`` for the floor), so a first deploy is really first. Within a repetition
the floor and the deployer alternate which goes first.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from benchmarks.netproxy import NetProxy
from deployer.sandbox import hosts as sandbox
from deployer.sandbox.hosts import SandboxHost

HERE = Path(__file__).resolve().parent
FLOOR = HERE / "floor.sh"
LABEL = "deployer-bench"
SESSION = b"Starting session: command "
PHASES = ("lock", "check", "prepare", "switch", "finish")

Log = Callable[[str], object]


class BenchError(Exception):
    """A measured run failed; the message has the command's output tail."""


# --- one process, timed ----------------------------------------------------------------------------

@dataclass
class Proc:
    argv: list[str]
    seconds: float
    code: int
    max_rss_mb: float
    stdout: str
    stderr: str
    cpu_seconds: float = 0.0        # user + system, the process and the children it waited for
    host_cpu_seconds: float | None = None   # CPU the target containers used meanwhile (see measured())

    @property
    def total_cpu(self) -> float | None:
        return None if self.host_cpu_seconds is None else self.cpu_seconds + self.host_cpu_seconds

    def check(self, what: str) -> "Proc":
        if self.code != 0:
            tail = "\n".join((self.stderr.strip() or self.stdout.strip()).splitlines()[-15:])
            raise BenchError(f"{what} failed (exit {self.code}):\n{tail}")
        return self


TIME = "/usr/bin/time"   # GNU time: the child's own rusage, free of our process's memory


def run_timed(argv: list[str], *, timeout: float = 900, env: dict | None = None, cwd: Path | None = None) -> Proc:
    """Run argv to completion: wall seconds, exit code, peak RSS and CPU seconds of that process.

    Peak RSS is ru_maxrss from a wait4() on the process. It is taken through GNU time because a
    child spawned straight from this (large) Python process inherits our resident pages in its
    ru_maxrss until it execs; time's own footprint is about 2 MB. Without /usr/bin/time the
    process's VmHWM is polled from /proc instead (every 10 ms, the last reading before it exits).

    The wait blocks in waitpid(); a timer kills the process group at the timeout. (Popen.wait
    with a timeout polls, every 50 ms after the first 0.1 s: each time would be rounded up to
    the next poll, +25 ms on average.)
    """
    use_time = os.access(TIME, os.X_OK)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(mode="r", suffix=".rusage") as usage_file:
        full = [TIME, "-o", usage_file.name, "-f", "%M %U %S", *argv] if use_time else argv
        started = time.perf_counter()
        p = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=cwd,
                             start_new_session=True)
        hwm = _HwmPoller(p.pid) if not use_time else None
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            _kill_group(p, wait=False)          # the waitpid() below then returns

        timer = threading.Timer(timeout, expire)
        timer.start()
        try:
            p.wait()
        except BaseException:       # Ctrl-C: the whole process group goes
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
        return Proc(argv, seconds, code, rss_kb / 1024, out.read().decode(errors="replace"),
                    err.read().decode(errors="replace"), cpu)


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
    run, about 0.15 s that no installed copy pays."""
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
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", f"{ref}^{{commit}}"], check=True,
                         capture_output=True, text=True).stdout.strip()
    dest.mkdir(parents=True, exist_ok=True)
    top = subprocess.run(["git", "-C", str(repo), "ls-tree", "--name-only", sha], check=True, capture_output=True,
                         text=True).stdout.split()
    parts = [p for p in ("deployer", "recipes") if p in top]     # recipes/ sat beside deployer/ in old revisions
    archive = subprocess.Popen(["git", "-C", str(repo), "archive", sha, *parts], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, check=True)
    archive.stdout.close()
    if archive.wait() != 0:
        raise BenchError(f"git archive {ref} failed")
    if (dest / "recipes").is_dir() and not (dest / "deployer" / "recipes").exists():
        (dest / "deployer" / "recipes").symlink_to("../recipes")     # pyproject maps deployer.recipes there
    return dest, sha


def describe_source(src: Path | None, ref: str | None = None, sha: str | None = None,
                    repo: Path = HERE.parent) -> str:
    """What was measured, for the report."""
    if src is not None:
        return f"git revision `{ref}` ({sha[:12] if sha else '?'}), exported to a temp dir"
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "deployer"],
                           capture_output=True, text=True).stdout.strip()
    return f"the work tree at {head or '?'}" + (" with uncommitted changes under deployer/" if dirty else "")


def phase_times(stdout: str, hosts: Iterable[str]) -> dict[str, float]:
    """The slowest host's seconds per phase, from the table the CLI prints at the end of a run."""
    names = set(hosts)
    header = next((ln for ln in stdout.splitlines() if ln.startswith("host ") and " result " in ln), "")
    present = [p for p in PHASES if f"{p} s" in header]
    worst: dict[str, float] = {}
    for line in stdout.splitlines():
        tokens = line.split()
        if len(tokens) < 4 + len(present) or tokens[0] not in names:
            continue
        for phase, value in zip(present, tokens[4:4 + len(present)]):
            try:
                worst[phase] = max(worst.get(phase, 0.0), float(value))
            except ValueError:
                pass
    return worst


def _cgroup_cpu_file(container_id: str) -> tuple[Path, str] | None:
    """Where the kernel accounts a container's CPU time: (file, 'ns' | 'usec')."""
    for path in (f"/sys/fs/cgroup/cpuacct/docker/{container_id}/cpuacct.usage",
                 f"/sys/fs/cgroup/cpu,cpuacct/docker/{container_id}/cpuacct.usage"):
        if os.path.exists(path):
            return Path(path), "ns"
    for path in (f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/cpu.stat",
                 f"/sys/fs/cgroup/docker/{container_id}/cpu.stat"):
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


# --- the hosts, their proxies and configs -----------------------------------------------------------

class Bench:
    """Sandbox hosts plus what both contenders need to reach them, directly or through a proxy."""

    def __init__(self, workdir: Path, key: Path, hosts: list[SandboxHost], *, parallel: int | None = None,
                 deployer_src: Path | None = None, log: Log = print):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.key = Path(key)
        self.hosts: list[SandboxHost] = []
        self.parallel = parallel
        self.deployer_src = deployer_src
        self.log = log
        self.run_id = secrets.token_hex(4)
        self.known_hosts = self.workdir / "known_hosts"
        self._keys: dict[str, str] = {}                     # container id -> "TYPE BASE64"
        self._proxies: dict[tuple[str, int], NetProxy] = {}  # (container id, latency ms) -> proxy
        self._configs = 0
        import docker
        self._docker = docker.from_env(max_pool_size=16)
        self.add_hosts(hosts)

    def add_hosts(self, hosts: list[SandboxHost]) -> None:
        with ThreadPoolExecutor(max_workers=8) as pool:
            new = list(pool.map(self._direct, [h for h in hosts if h.container_id not in self._keys]))
        with ThreadPoolExecutor(max_workers=8) as pool:
            lines = list(pool.map(sandbox.host_key_line, new))
        for h, line in zip(new, lines):
            self._keys[h.container_id] = " ".join(line.split()[1:3])
        self.hosts.extend(new)
        self._write_known_hosts()

    def _direct(self, h: SandboxHost) -> SandboxHost:
        """The host at its container address, port 22, when this machine can reach it, so both
        clients talk to sshd as they would to a real host: on 127.0.0.1 the published port is
        docker-proxy, a relay that copies every byte (~1 s of CPU per 20-host deploy here, on the
        cores everything shares) and sends ACKs of its own. Else the published port."""
        networks = self._docker.containers.get(h.container_id).attrs["NetworkSettings"]["Networks"]
        for ip in (n.get("IPAddress") for n in networks.values()):
            if not ip:
                continue
            try:
                socket.create_connection((ip, 22), timeout=1).close()
            except OSError:
                continue
            return dataclasses.replace(h, host=ip, port=22)
        return h

    @property
    def direct(self) -> int:
        """How many hosts are reached at their container address (the rest: published ports)."""
        return sum(h.port == 22 for h in self.hosts)

    def _write_known_hosts(self) -> None:
        lines = []
        for h in self.hosts:
            lines.append(f"{sandbox.known_hosts_name(h.host, h.port)} {self._keys[h.container_id]}")
        for (cid, _), proxy in self._proxies.items():
            lines.append(f"{sandbox.known_hosts_name('127.0.0.1', proxy.port)} {self._keys[cid]}")
        self.known_hosts.write_text("".join(line + "\n" for line in lines))

    def targets(self, n: int, latency_ms: int = 0) -> list[SandboxHost]:
        """The first n hosts as a client should address them: through a latency proxy if asked."""
        if n > len(self.hosts):
            raise BenchError(f"{n} hosts wanted, {len(self.hosts)} started")
        hosts = self.hosts[:n]
        if not latency_ms:
            return list(hosts)
        out, added = [], False
        for h in hosts:
            key = (h.container_id, latency_ms)
            if key not in self._proxies:
                self._proxies[key] = NetProxy((h.host, h.port), delay=latency_ms / 1000).start()
                added = True
            out.append(dataclasses.replace(h, host="127.0.0.1", port=self._proxies[key].port))
        if added:
            self._write_known_hosts()
        return out

    def config(self, targets: list[SandboxHost], deploy_to: str, persist: int = 0, hardlink: bool = False) -> Path:
        self._configs += 1
        path = self.workdir / "configs" / f"hosts-{self._configs}.toml"
        extra = {"ssh": {"persist": persist}} if persist else {}
        if hardlink:
            extra["app"] = {"hardlink_releases": True}
        return sandbox.write_config(path, targets, self.key, self.known_hosts, deploy_to=deploy_to,
                                    app_name="benchapp", source=str(self.workdir), extra=extra)

    def deploy_dir(self, kind: str, name: str) -> str:
        return f"/srv/{kind}/{self.run_id}/{name}"

    # -- the contenders -------------------------------------------------------------------------

    def floor(self, targets: list[SandboxHost], deploy_to: str, release: int, artifact) -> Proc:
        """The floor deploy; with artifact None, the floor of a rollback (the swap alone)."""
        argv = ["bash", str(FLOOR), str(self.key), str(self.known_hosts), deploy_to, str(release),
                str(artifact.path) if artifact is not None else "-", *[f"{h.host}:{h.port}" for h in targets]]
        return run_timed(argv).check(f"floor to {len(targets)} host(s)")

    def cli(self, config: Path, *args: str) -> Proc:
        argv = [*deployer_argv(self.deployer_src), *args, "--config", str(config)]
        if self.parallel and args[0] in ("deploy", "rollback"):
            argv += ["--parallel", str(self.parallel)]
        return run_timed(argv, env=cli_env(self.deployer_src), cwd=self.workdir).check(f"deployer {args[0]}")

    # -- counting remote commands -----------------------------------------------------------------

    def counts(self, hosts: list[SandboxHost]) -> list[int]:
        def one(h: SandboxHost) -> int:
            return self._docker.containers.get(h.container_id).logs().count(SESSION)
        with ThreadPoolExecutor(max_workers=min(8, len(hosts)) or 1) as pool:
            return list(pool.map(one, hosts))

    def measured(self, hosts: list[SandboxHost], action: Callable[[], Proc]) -> tuple[Proc, list[int]]:
        """Run action; return it with the remote commands each host's sshd started meanwhile.
        proc.host_cpu_seconds is the CPU the hosts' containers used meanwhile (None if unknown)."""
        before = self.counts(hosts)
        cpu_before = containers_cpu(hosts)
        proc = action()
        cpu_after = containers_cpu(hosts)
        if cpu_before is not None and cpu_after is not None:
            proc.host_cpu_seconds = cpu_after - cpu_before
        after = self.counts(hosts)
        for _ in range(5):       # docker copies sshd's log asynchronously: wait until it is stable
            time.sleep(0.1)
            again = self.counts(hosts)
            if again == after:
                break
            after = again
        return proc, [a - b for a, b in zip(after, before)]

    def clean(self, hosts: list[SandboxHost]) -> None:
        """Remove this run's deploy directories from the hosts (outside any timing)."""
        cmd = f"rm -rf /srv/bench/{self.run_id} /srv/floor/{self.run_id}"
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda h: sandbox.exec_root(h, cmd), hosts))

    def warm_up(self) -> None:
        """One throwaway session per host with each client, so no timed run pays first-use costs."""
        targets = self.targets(len(self.hosts))
        self.cli(self.config(targets, self.deploy_dir("bench", "warmup")), "status")

    def close(self) -> None:
        for proxy in self._proxies.values():
            proxy.stop()
        self._proxies.clear()
        self._docker.close()


# --- results -------------------------------------------------------------------------------------

def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


@dataclass
class ConfigResult:
    hosts: int
    latency_ms: int                 # added each way
    reps: int = 0
    floor: list[float] = field(default_factory=list)
    floor_rollback: list[float] = field(default_factory=list)   # the swap alone, over fresh connections
    deploy: list[float] = field(default_factory=list)
    redeploy: list[float] = field(default_factory=list)
    redeploy_linked: list[float] = field(default_factory=list)  # app.hardlink_releases: links, no extraction
    redeploy_linked_warm: list[float] = field(default_factory=list)   # the same over kept-open connections
    rollback: list[float] = field(default_factory=list)
    rollback_warm: list[float] = field(default_factory=list)   # ssh.persist: the connections already open
    cmds_floor: list[int] = field(default_factory=list)       # per host per run, flattened
    cmds_deploy: list[int] = field(default_factory=list)
    cmds_redeploy: list[int] = field(default_factory=list)
    cmds_redeploy_linked: list[int] = field(default_factory=list)
    cmds_redeploy_linked_warm: list[int] = field(default_factory=list)
    cmds_rollback: list[int] = field(default_factory=list)
    cmds_rollback_warm: list[int] = field(default_factory=list)
    rss_deploy: list[float] = field(default_factory=list)
    rss_redeploy: list[float] = field(default_factory=list)
    rss_rollback: list[float] = field(default_factory=list)
    rss_floor: list[float] = field(default_factory=list)
    uploads: list[int] = field(default_factory=list)          # "uploaded" lines per first deploy
    streamed: list[int] = field(default_factory=list)         # of those, "extracted as it arrived"
    cached: list[int] = field(default_factory=list)           # "artifact already on host" per redeploy
    linked: list[int] = field(default_factory=list)           # "linked from release" per linked redeploy
    linked_warm: list[int] = field(default_factory=list)      # the same, kept-open connections
    redeploy_uploads: list[int] = field(default_factory=list)
    cpu_floor: list[float] = field(default_factory=list)      # CPU seconds, client + every host
    cpu_deploy: list[float] = field(default_factory=list)
    cpu_redeploy: list[float] = field(default_factory=list)
    cpu_redeploy_linked: list[float] = field(default_factory=list)
    cpu_rollback: list[float] = field(default_factory=list)
    client_cpu_floor: list[float] = field(default_factory=list)   # the client side alone
    client_cpu_deploy: list[float] = field(default_factory=list)
    load: list[float] = field(default_factory=list)           # 1-minute load average before each repetition
    phases: list[dict[str, float]] = field(default_factory=list)   # first deploy, slowest host per phase
    outputs: dict[str, str] = field(default_factory=dict)     # last stdout of each CLI action

    @property
    def rtt_ms(self) -> int:
        return 2 * self.latency_ms

    def med(self, name: str) -> float | None:
        return median(getattr(self, name))

    def ratio(self, a: str, b: str) -> float | None:
        x, y = self.med(a), self.med(b)
        return x / y if x is not None and y else None

    def rep_ratios(self, a: str, b: str) -> list[float]:
        """a/b within each repetition (the two ran back to back): the spread the machine adds."""
        return [x / y for x, y in zip(getattr(self, a), getattr(self, b)) if y]

    def phase_median(self, phase: str) -> float | None:
        return median([p[phase] for p in self.phases if phase in p])


def run_config(bench: Bench, artifact, n: int, latency_ms: int, reps: int) -> ConfigResult:
    """Floor, first deploy, redeploy and rollback on n hosts, `reps` times, interleaved."""
    targets = bench.targets(n, latency_ms)
    result = ConfigResult(hosts=n, latency_ms=latency_ms, reps=reps)
    names = [h.name for h in targets]
    def cpu(into: list[float], proc: Proc) -> None:
        if proc.total_cpu is not None:
            into.append(proc.total_cpu)

    for rep in range(reps):
        la = load_average()
        if la is not None:
            result.load.append(la)
        tag = f"n{n}-l{latency_ms}-r{rep}"
        floor_to = bench.deploy_dir("floor", tag)
        config = bench.config(targets, bench.deploy_dir("bench", tag))

        def floor():
            proc, cmds = bench.measured(targets, lambda: bench.floor(targets, floor_to, 1, artifact))
            result.floor.append(proc.seconds)
            result.cmds_floor += cmds
            result.rss_floor.append(proc.max_rss_mb)
            result.client_cpu_floor.append(proc.cpu_seconds)
            cpu(result.cpu_floor, proc)
            proc = bench.floor(targets, floor_to, 1, None)
            result.floor_rollback.append(proc.seconds)

        def timed(kind: str, cfg: Path, *args: str) -> Proc:
            """One measured CLI run recorded as `kind`: its seconds, its commands per host, its stdout."""
            proc, cmds = bench.measured(targets, lambda: bench.cli(cfg, *args))
            getattr(result, kind).append(proc.seconds)
            getattr(result, f"cmds_{kind}").extend(cmds)
            result.outputs[kind] = proc.stdout
            return proc

        def deployer():
            deploy = ("deploy", "--artifact", str(artifact.path))
            proc = timed("deploy", config, *deploy)
            result.rss_deploy.append(proc.max_rss_mb)
            result.uploads.append(proc.stdout.count("uploaded "))
            result.streamed.append(proc.stdout.count("extracted as it arrived"))
            result.phases.append(phase_times(proc.stdout, names))
            result.client_cpu_deploy.append(proc.cpu_seconds)
            cpu(result.cpu_deploy, proc)

            proc = timed("redeploy", config, *deploy)
            result.rss_redeploy.append(proc.max_rss_mb)
            result.cached.append(proc.stdout.count("artifact already on host"))
            result.redeploy_uploads.append(proc.stdout.count("uploaded "))
            cpu(result.cpu_redeploy, proc)

            # the same redeploy with app.hardlink_releases: release 3 linked from release 2
            linked = bench.config(targets, bench.deploy_dir("bench", tag), hardlink=True)
            proc = timed("redeploy_linked", linked, *deploy)
            result.rss_redeploy.append(proc.max_rss_mb)
            result.linked.append(proc.stdout.count("linked from release"))
            cpu(result.cpu_redeploy_linked, proc)

            proc = timed("rollback", config, "rollback")
            result.rss_rollback.append(proc.max_rss_mb)
            cpu(result.cpu_rollback, proc)

            # the same rollback with ssh.persist, its connections left open by an earlier run
            warm = bench.config(targets, bench.deploy_dir("bench", tag), persist=120)
            bench.cli(warm, "rollback", "--to", "3")            # untimed: back to 3, connections opened
            # --to: the rollback that left release 2 marked it "rolled back", not a default target
            timed("rollback_warm", warm, "rollback", "--to", "2")

            # a linked redeploy over the connections still open: release 4, linked
            warm_linked = bench.config(targets, bench.deploy_dir("bench", tag), persist=120, hardlink=True)
            proc = timed("redeploy_linked_warm", warm_linked, *deploy)
            result.linked_warm.append(proc.stdout.count("linked from release"))
            bench.cli(warm, "disconnect")

        for step in ((floor, deployer) if rep % 2 == 0 else (deployer, floor)):
            step()
        bench.clean(targets)          # every repetition starts from the same hosts: ~140 MB less each
        bench.log(f"  {n:>3} host(s), +{latency_ms} ms each way, rep {rep + 1}/{reps}: floor {result.floor[-1]:.2f}s  "
                  f"deploy {result.deploy[-1]:.2f}s  redeploy {result.redeploy[-1]:.2f}s "
                  f"(linked {result.redeploy_linked[-1]:.2f}s, warm {result.redeploy_linked_warm[-1]:.2f}s)  "
                  f"rollback {result.rollback[-1]:.2f}s (warm {result.rollback_warm[-1]:.2f}s)  "
                  f"rss {result.rss_deploy[-1]:.0f} MB")
    return result


@dataclass
class MemoryResult:
    label: str
    artifact_mb: float
    files: int
    hosts: int
    seconds: float
    rss_mb: float


def run_memory(bench: Bench, artifacts: list[tuple[str, object]], n: int) -> list[MemoryResult]:
    """One first deploy of each artifact to n hosts: the CLI's peak RSS (and time)."""
    targets = bench.targets(n)
    out = []
    for label, artifact in artifacts:
        config = bench.config(targets, bench.deploy_dir("bench", f"mem-{label}"))
        proc = bench.cli(config, "deploy", "--artifact", str(artifact.path))
        out.append(MemoryResult(label, artifact.size / 2 ** 20, int(artifact.meta.get("file_count", 0)), n,
                                proc.seconds, proc.max_rss_mb))
        bench.log(f"  memory: {label} ({artifact.size / 2 ** 20:.0f} MB) to {n} host(s): "
                  f"{proc.seconds:.1f}s, peak RSS {proc.max_rss_mb:.0f} MB")
        bench.clean(targets)
    return out


@dataclass
class ScaleResult:
    hosts: int
    floor_seconds: float
    deploy_seconds: float
    rss_mb: float
    correct: int
    problems: list[str]


def verify_hosts(targets: list[SandboxHost], deploy_to: str, artifact, release: int = 1) -> list[str]:
    """Check every host really runs the release: link, completeness, REVISION, file count, sample hashes."""
    manifest = artifact.manifest
    sample = sorted(manifest)[:: max(1, len(manifest) // 3)][:3]
    expected_files = int(artifact.meta.get("file_count", len(manifest)))
    script = (f"cd {deploy_to} && readlink current && test -f current/.deployer/complete && echo complete && "
              f"cat current/REVISION && find current/ -path current/.deployer -prune -o -path current/log -prune "
              f"-o -type f -print | wc -l && cd current && sha256sum {' '.join(sample)}")

    def check(h: SandboxHost) -> str | None:
        code, out = sandbox.exec_root(h, script)
        lines = out.split("\n")
        if code != 0 or len(lines) < 4:
            return f"{h.name}: check failed: {out.strip()[-200:]}"
        if lines[0] != f"releases/{release}" or lines[1] != "complete":
            return f"{h.name}: current is {lines[0]!r}"
        if artifact.git_sha and lines[2] != artifact.git_sha:
            return f"{h.name}: REVISION {lines[2]!r}"
        if int(lines[3]) != expected_files:
            return f"{h.name}: {lines[3]} files, expected {expected_files}"
        for line in lines[4:]:
            if line.strip():
                digest, name = line.split(None, 1)
                if manifest.get(name.strip()) != digest:
                    return f"{h.name}: {name.strip()} differs"
        return None

    with ThreadPoolExecutor(max_workers=8) as pool:
        return [p for p in pool.map(check, targets) if p]


def run_scale(bench: Bench, artifact, n: int) -> ScaleResult:
    targets = bench.targets(n)
    floor_to = bench.deploy_dir("floor", f"scale-{n}")
    deploy_to = bench.deploy_dir("bench", f"scale-{n}")
    floor = bench.floor(targets, floor_to, 1, artifact)
    proc = bench.cli(bench.config(targets, deploy_to), "deploy", "--artifact", str(artifact.path))
    problems = verify_hosts(targets, deploy_to, artifact)
    bench.log(f"  scale: {n} hosts: floor {floor.seconds:.1f}s, deploy {proc.seconds:.1f}s, "
              f"{n - len(problems)}/{n} hosts correct")
    bench.clean(targets)
    return ScaleResult(n, floor.seconds, proc.seconds, proc.max_rss_mb, n - len(problems), problems)


# --- the report ------------------------------------------------------------------------------------

MAIN_COLUMNS = ["hosts", "added RTT ms", "floor s", "deploy s", "redeploy s", "redeploy linked s",
                "redeploy linked warm s", "rollback s", "rollback warm s", "deploy/floor", "redeploy/deploy",
                "linked/deploy", "linked warm/deploy", "floor rollback s",
                "cmds/host deploy", "cmds/host redeploy", "cmds/host rollback",
                "peak RSS deploy MB", "peak RSS rollback MB"]
PHASE_COLUMNS = ["hosts", "added RTT ms", "deploy s", *[f"{p} s" for p in PHASES], "hosts extracting as it arrived"]
CPU_COLUMNS = ["hosts", "added RTT ms", "floor CPU s", "deploy CPU s", "redeploy CPU s", "redeploy linked CPU s",
               "rollback CPU s", "deploy/floor CPU", "client CPU floor s", "client CPU deploy s", "load avg"]


def _f(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _span(values: list[int]) -> str:
    if not values:
        return "n/a"
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo}-{hi}"


def main_rows(results: list[ConfigResult]) -> list[list[str]]:
    rows = []
    for r in results:
        rows.append([str(r.hosts), str(r.rtt_ms), _f(r.med("floor")), _f(r.med("deploy")), _f(r.med("redeploy")),
                     _f(r.med("redeploy_linked")), _f(r.med("redeploy_linked_warm")), _f(r.med("rollback")),
                     _f(r.med("rollback_warm")), _f(r.ratio("deploy", "floor")), _f(r.ratio("redeploy", "deploy")),
                     _f(r.ratio("redeploy_linked", "deploy")), _f(r.ratio("redeploy_linked_warm", "deploy")),
                     _f(r.med("floor_rollback")), _span(r.cmds_deploy),
                     _span(r.cmds_redeploy + r.cmds_redeploy_linked + r.cmds_redeploy_linked_warm),
                     _span(r.cmds_rollback + r.cmds_rollback_warm),
                     _f(max(r.rss_deploy, default=None), 0), _f(max(r.rss_rollback, default=None), 0)])
    return rows


def phase_rows(results: list[ConfigResult]) -> list[list[str]]:
    return [[str(r.hosts), str(r.rtt_ms), _f(r.med("deploy")), *[_f(r.phase_median(p)) for p in PHASES],
             _span(r.streamed)] for r in results]


def cpu_rows(results: list[ConfigResult]) -> list[list[str]]:
    return [[str(r.hosts), str(r.rtt_ms), _f(r.med("cpu_floor")), _f(r.med("cpu_deploy")), _f(r.med("cpu_redeploy")),
             _f(r.med("cpu_redeploy_linked")), _f(r.med("cpu_rollback")), _f(r.ratio("cpu_deploy", "cpu_floor")),
             _f(r.med("client_cpu_floor")), _f(r.med("client_cpu_deploy")), _f(max(r.load, default=None), 1)]
            for r in results]


def markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class Target:
    name: str
    measured: str
    ok: bool | None     # None: not measured in this run

    @property
    def verdict(self) -> str:
        return "not measured" if self.ok is None else ("pass" if self.ok else "MISS")


def evaluate(results: list[ConfigResult], memory: list[MemoryResult], scale: ScaleResult | None) -> list[Target]:
    def find(n: int, lat: int) -> ConfigResult | None:
        return next((r for r in results if r.hosts == n and r.latency_ms == lat), None)

    targets = []

    def ratio_target(name: str, r: ConfigResult | None, limit: float):
        value = r.ratio("deploy", "floor") if r else None
        reps = r.rep_ratios("deploy", "floor") if r else []
        spread = f" (repetitions {min(reps):.2f}-{max(reps):.2f})" if len(reps) > 1 else ""
        targets.append(Target(name, _f(value) + spread, None if value is None else value <= limit))

    ratio_target("deploy/floor <= 1.15 at 5 hosts, loopback", find(5, 0), 1.15)
    ratio_target("deploy/floor <= 1.10 at 20 hosts, loopback", find(20, 0), 1.10)
    for r in results:
        if r.rtt_ms == 50:
            ratio_target(f"deploy/floor <= 1.25 with 50 ms RTT, {r.hosts} host(s)", r, 1.25)
    if not any(r.rtt_ms == 50 for r in results):
        targets.append(Target("deploy/floor <= 1.25 with 50 ms RTT", "n/a", None))

    deploy_cmds = [c for r in results
                   for c in r.cmds_deploy + r.cmds_redeploy + r.cmds_redeploy_linked + r.cmds_redeploy_linked_warm]
    targets.append(Target("<= 4 remote commands per host per deploy", f"max {max(deploy_cmds, default=0)}",
                          max(deploy_cmds) <= 4 if deploy_cmds else None))
    rollback_cmds = [c for r in results for c in r.cmds_rollback + r.cmds_rollback_warm]
    targets.append(Target("<= 2 remote commands per host per rollback", f"max {max(rollback_cmds, default=0)}",
                          max(rollback_cmds) <= 2 if rollback_cmds else None))
    r20 = find(20, 0)
    rb = r20.med("rollback") if r20 else None
    frb = r20.med("floor_rollback") if r20 else None
    targets.append(Target("rollback of 20 hosts <= 1 s, loopback, new connections",
                          (_f(rb) + " s" + (f" (floor rollback {frb:.2f} s)" if frb else "")) if rb else "n/a",
                          None if rb is None else rb <= 1.0))
    warm = r20.med("rollback_warm") if r20 else None
    targets.append(Target("rollback of 20 hosts <= 1 s, loopback, connections kept open (ssh.persist)",
                          _f(warm) + " s" if warm else "n/a", None if warm is None else warm <= 1.0))
    for kind, label in (("redeploy", "extracted again (default)"),
                        ("redeploy_linked", "linked (app.hardlink_releases)"),
                        ("redeploy_linked_warm", "linked, connections kept open (ssh.persist)")):
        ratios = [(r.ratio(kind, "deploy"), r) for r in results if r.ratio(kind, "deploy") is not None]
        if ratios:
            worst, where = max(ratios, key=lambda x: x[0])
            best, _ = min(ratios, key=lambda x: x[0])
            targets.append(Target(f"redeploy <= 0.3 x first deploy, {label}, every configuration",
                                  f"{best:.2f}-{worst:.2f} (worst: {where.hosts} hosts, {where.rtt_ms} ms RTT)",
                                  worst <= 0.3))
        else:
            targets.append(Target(f"redeploy <= 0.3 x first deploy, {label}", "n/a", None))
    rss20 = max(r20.rss_deploy + r20.rss_redeploy + r20.rss_rollback) if r20 else None
    targets.append(Target("peak memory <= 120 MB at 20 hosts", _f(rss20, 0) + " MB" if rss20 else "n/a",
                          None if rss20 is None else rss20 <= 120))
    if len(memory) >= 2:
        small, big = memory[0], memory[-1]
        change = big.rss_mb / small.rss_mb - 1
        targets.append(Target(f"peak memory {small.artifact_mb:.0f} MB vs {big.artifact_mb:.0f} MB artifact within "
                              f"+-10% ({small.hosts} hosts)",
                              f"{small.rss_mb:.0f} vs {big.rss_mb:.0f} MB ({change:+.0%})", abs(change) <= 0.10))
    else:
        targets.append(Target("peak memory same (+-10%) for 20 MB vs 500 MB", "n/a", None))
    if scale is not None:
        targets.append(Target(f"{scale.hosts} hosts complete, every host correct",
                              f"{scale.correct}/{scale.hosts} correct in {scale.deploy_seconds:.1f} s",
                              scale.correct == scale.hosts))
    return targets


def machine() -> dict[str, str]:
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    cpu = ""
    try:
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), "")
    except OSError:
        pass
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True)
    return {"nproc": str(os.cpu_count()), "RAM": f"{mem_kb / 2 ** 20:.1f} GiB", "CPU": cpu or platform.processor(),
            "python": platform.python_version(), "kernel": platform.release(),
            "OpenSSH client": (ssh.stderr or ssh.stdout).strip()}


def render(results: list[ConfigResult], memory: list[MemoryResult], scale: ScaleResult | None, *, artifact,
           reps: int, command: str = "", parallel: int | None = None, measured: str = "",
           notes: Iterable[str] = ()) -> str:
    info = machine()
    out = [
        "# Deployer performance against the floor",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {info['nproc']} CPUs ({info['CPU']}), {info['RAM']} RAM, Linux {info['kernel']}, "
        f"Python {info['python']}, {info['OpenSSH client']}; sandbox hosts are sshd containers on the same machine",
        f"- artifact: {artifact.size / 2 ** 20:.1f} MB tar.gz, {artifact.meta.get('file_count')} files, "
        f"{int(artifact.meta.get('unpacked_size', 0)) / 2 ** 20:.1f} MB unpacked (mostly text, some binary; "
        "generated deterministically, built with build_artifact)",
        f"- repetitions: {reps} per configuration, interleaved (floor and deployer alternate going first); "
        "medians reported",
        f"- deployer: the CLI as a subprocess, `--parallel {parallel}`" if parallel else
        "- deployer: the CLI as a subprocess, default `--parallel` (10)",
    ]
    if measured:
        out.append(f"- deployer code measured: {measured}")
    if command:
        out.append(f"- command: `{command}`")
    out += ["", "## Side by side", "",
            "Seconds are wall clock for the whole command (process start to exit), median. "
            "`added RTT` is the latency added by a proxy per host (half each way). Command counts are "
            "remote exec sessions per host per run, from sshd's log (range over hosts and repetitions). "
            "The floor is one OpenSSH session per host: `tar -xzf -` from stdin, then `ln -s` + `mv -T`; "
            "`floor rollback` is the same without the upload (one session per host doing only the swap), "
            "the least a rollback over fresh connections can cost. `redeploy`: the same artifact again, "
            "already on the hosts, extracted again (the default); `redeploy linked`: once more with "
            "`app.hardlink_releases`, the new release made of hard links to the previous one after "
            "checking it is unchanged. `rollback warm`: the same rollback with "
            "`ssh.persist` set, its connections opened by the run before (the agent's); `redeploy linked "
            "warm`: a linked redeploy right after it, over the same open connections. Neither warm run is "
            "comparable to the floor, which always connects.",
            "", markdown_table(MAIN_COLUMNS, main_rows(results))]
    if any(r.cpu_deploy for r in results):
        out += ["", "### CPU used (client + every host)", "",
                "CPU seconds consumed by one run: the client process (rusage) plus every target container "
                "(cgroup accounting: sshd, shells, tar, the checksum...), median. It moves less than wall time "
                "with what else the machine runs, but it does move (contention costs cycles); once a run is "
                "CPU-bound (20+ hosts on 2 cores) "
                "deploy/floor CPU is roughly the wall-time ratio to expect. `load avg`: the highest 1-minute "
                "load average seen before a repetition (other work on the machine).",
                "", markdown_table(CPU_COLUMNS, cpu_rows(results))]
    if any(r.phases for r in results):
        out += ["", "### Where a first deploy spends its time", "",
                "The deployer's own per-phase seconds, from the CLI's result table: the slowest host per phase, "
                "median over repetitions. With more hosts than `--parallel`, hosts run in waves and a phase "
                "takes longer than its slowest host. The last column: hosts whose link measured slow enough "
                "for the upload to be extracted as it arrived (range over repetitions).",
                "", markdown_table(PHASE_COLUMNS, phase_rows(results))]
    if memory:
        out += ["", "## Peak memory by artifact size", "",
                markdown_table(["artifact", "MB", "files", "hosts", "deploy s", "peak RSS MB"],
                               [[m.label, f"{m.artifact_mb:.0f}", str(m.files), str(m.hosts), f"{m.seconds:.1f}",
                                 f"{m.rss_mb:.0f}"] for m in memory])]
    if scale is not None:
        out += ["", "## Scale run", "",
                f"{scale.hosts} hosts, one first deploy: {scale.deploy_seconds:.1f} s (floor {scale.floor_seconds:.1f} s,"
                f" ratio {scale.deploy_seconds / scale.floor_seconds:.2f}), peak RSS {scale.rss_mb:.0f} MB; "
                f"{scale.correct}/{scale.hosts} hosts verified (current -> releases/1, complete marker, REVISION, "
                "file count, sample sha256)."]
        out += [f"- {p}" for p in scale.problems]
    out += ["", "## Targets", "", markdown_table(["target", "measured", "verdict"],
                                                 [[t.name, t.measured, t.verdict] for t in
                                                  evaluate(results, memory, scale)])]
    notes = list(notes)
    if notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


# --- hosts ----------------------------------------------------------------------------------------

# /srv on tmpfs: the VM's disk (shared with whatever else runs on the machine) would otherwise
# decide the numbers; the size is a cap, memory is only used as files are written.
SRV_TMPFS = {"/srv": "size=8g,uid=1000,gid=1000,mode=0755"}


def start_hosts(n: int, key: Path, *, label: str = LABEL, prefix: str = "host", log: Log = print,
                tmpfs: bool = True) -> list[SandboxHost]:
    started = time.monotonic()
    hosts = sandbox.start_hosts(n, key.with_suffix(".pub").read_text(), label=label, prefix=prefix,
                                **({"tmpfs": dict(SRV_TMPFS)} if tmpfs else {}))
    log(f"  started {n} sandbox host(s) in {time.monotonic() - started:.1f}s")
    return hosts
