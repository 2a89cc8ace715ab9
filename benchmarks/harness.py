"""Measure the deployer side by side with the floor (benchmarks/floor.sh) on sandbox hosts.

The measured runs become records (records.py); report.py turns them into the Markdown report.

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
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.netproxy import NetProxy
from benchmarks.process import (
    HERE,
    BenchError,
    Proc,
    cli_env,
    containers_cpu,
    deployer_argv,
    load_average,
    run_timed,
)
from benchmarks.records import COUNTED, PHASES, ConfigResult, Measurement, MemoryResult, ScaleResult
from deployer.sandbox import deploy_files
from deployer.sandbox import hosts as sandbox
from deployer.sandbox.hosts import SandboxHost

FLOOR = HERE / "floor.sh"
LABEL = "deployer-bench"
SESSION = b"Starting session: command "

Log = Callable[[str], object]


# --- the hosts, their proxies and configs -----------------------------------------------------------


class Bench:
    """Sandbox hosts plus what both contenders need to reach them, directly or through a proxy."""

    def __init__(
        self,
        workdir: Path,
        key: Path,
        hosts: list[SandboxHost],
        *,
        parallel: int | None = None,
        deployer_src: Path | None = None,
        log: Log = print,
    ):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.key = Path(key)
        self.hosts: list[SandboxHost] = []
        self.parallel = parallel
        self.deployer_src = deployer_src
        self.log = log
        self.run_id = secrets.token_hex(4)
        self.known_hosts = self.workdir / "known_hosts"
        self._keys: dict[str, str] = {}  # container id -> "TYPE BASE64"
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
        for h, line in zip(new, lines, strict=True):
            self._keys[h.container_id] = " ".join(line.split()[1:3])
        self.hosts.extend(new)
        self._write_known_hosts()

    def _direct(self, h: SandboxHost) -> SandboxHost:
        """The host at its container address, port 22, when this machine can reach it, so both
        clients talk to sshd as they would to a real host: on 127.0.0.1 the published port is
        docker-proxy, a relay that copies every byte (CPU taken from the cores everything shares)
        and sends ACKs of its own. Else the published port."""
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
        return deploy_files.write_config(
            path,
            targets,
            self.key,
            self.known_hosts,
            deploy_to=deploy_to,
            app_name="benchapp",
            source=str(self.workdir),
            extra=extra,
        )

    def deploy_dir(self, kind: str, name: str) -> str:
        return f"/srv/{kind}/{self.run_id}/{name}"

    # -- the contenders -------------------------------------------------------------------------

    def floor(self, targets: list[SandboxHost], deploy_to: str, release: int, artifact) -> Proc:
        """The floor deploy; with artifact None, the floor of a rollback (the swap alone)."""
        argv = [
            "bash",
            str(FLOOR),
            str(self.key),
            str(self.known_hosts),
            deploy_to,
            str(release),
            str(artifact.path) if artifact is not None else "-",
            *[f"{h.host}:{h.port}" for h in targets],
        ]
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
        for _ in range(5):  # docker copies sshd's log asynchronously: wait until it is stable
            time.sleep(0.1)
            again = self.counts(hosts)
            if again == after:
                break
            after = again
        return proc, [a - b for a, b in zip(after, before, strict=True)]

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
        for phase, value in zip(present, tokens[4 : 4 + len(present)], strict=True):
            try:
                worst[phase] = max(worst.get(phase, 0.0), float(value))
            except ValueError:
                pass
    return worst


def run_config(bench: Bench, artifact, n: int, latency_ms: int, reps: int) -> ConfigResult:
    """Floor, first deploy, redeploy and rollback on n hosts, `reps` times, interleaved."""
    targets = bench.targets(n, latency_ms)
    result = ConfigResult(hosts=n, latency_ms=latency_ms, reps=reps)
    for rep in range(reps):
        la = load_average()
        if la is not None:
            result.load.append(la)
        _repetition(bench, artifact, targets, result, rep)
        bench.clean(targets)  # every repetition starts from the same hosts, not a fuller tmpfs

        def last(action: str) -> float:
            return result.seconds(action)[-1]

        bench.log(
            f"  {n:>3} host(s), +{latency_ms} ms each way, rep {rep + 1}/{reps}: floor {last('floor'):.2f}s  "
            f"deploy {last('deploy'):.2f}s  redeploy {last('redeploy'):.2f}s "
            f"(linked {last('redeploy_linked'):.2f}s, warm {last('redeploy_linked_warm'):.2f}s)  "
            f"rollback {last('rollback'):.2f}s (warm {last('rollback_warm'):.2f}s)  "
            f"rss {result.of('deploy')[-1].rss_mb:.0f} MB"
        )
    return result


def _repetition(bench: Bench, artifact, targets: list[SandboxHost], result: ConfigResult, rep: int) -> None:
    """One repetition into fresh deploy directories: the floor and the deployer's runs (even
    repetitions the floor first, odd ones the deployer), each recorded as a Measurement."""
    tag = f"n{result.hosts}-l{result.latency_ms}-r{rep}"
    floor_to = bench.deploy_dir("floor", tag)
    deploy_to = bench.deploy_dir("bench", tag)
    config = bench.config(targets, deploy_to)
    names = [h.name for h in targets]

    def record(action: str, proc: Proc, cmds: list[int]) -> Measurement:
        m = Measurement(
            action,
            rep,
            proc.seconds,
            cmds,
            proc.max_rss_mb,
            proc.cpu_seconds,
            proc.total_cpu,
            {what: proc.stdout.count(line) for what, line in COUNTED.items()},
        )
        result.runs.append(m)
        return m

    def floor() -> None:
        proc, cmds = bench.measured(targets, lambda: bench.floor(targets, floor_to, 1, artifact))
        record("floor", proc, cmds)
        record("floor_rollback", bench.floor(targets, floor_to, 1, None), [])  # the swap alone

    def timed(action: str, cfg: Path, *args: str) -> Measurement:
        """One measured CLI run recorded as `action`: its seconds, commands per host, output."""
        proc, cmds = bench.measured(targets, lambda: bench.cli(cfg, *args))
        result.outputs[action] = proc.stdout
        return record(action, proc, cmds)

    def deployer() -> None:
        deploy = ("deploy", "--artifact", str(artifact.path))
        first = timed("deploy", config, *deploy)
        first.phases = phase_times(result.outputs["deploy"], names)
        timed("redeploy", config, *deploy)
        # the same redeploy with app.hardlink_releases: release 3 linked from release 2
        timed("redeploy_linked", bench.config(targets, deploy_to, hardlink=True), *deploy)
        timed("rollback", config, "rollback")

        # the same rollback with ssh.persist, its connections left open by an earlier run
        warm = bench.config(targets, deploy_to, persist=120)
        bench.cli(warm, "rollback", "--to", "3")  # untimed: back to 3, connections opened
        # --to: the rollback that left release 2 marked it "rolled back", not a default target
        timed("rollback_warm", warm, "rollback", "--to", "2")

        # a linked redeploy over the connections still open: release 4, linked
        timed("redeploy_linked_warm", bench.config(targets, deploy_to, persist=120, hardlink=True), *deploy)
        bench.cli(warm, "disconnect")

    for step in (floor, deployer) if rep % 2 == 0 else (deployer, floor):
        step()


def run_memory(bench: Bench, artifacts: list[tuple[str, object]], n: int) -> list[MemoryResult]:
    """One first deploy of each artifact to n hosts: the CLI's peak RSS (and time)."""
    targets = bench.targets(n)
    out = []
    for label, artifact in artifacts:
        config = bench.config(targets, bench.deploy_dir("bench", f"mem-{label}"))
        proc = bench.cli(config, "deploy", "--artifact", str(artifact.path))
        out.append(
            MemoryResult(
                label, artifact.size / 2**20, int(artifact.meta.get("file_count", 0)), n, proc.seconds, proc.max_rss_mb
            )
        )
        bench.log(
            f"  memory: {label} ({artifact.size / 2**20:.0f} MB) to {n} host(s): "
            f"{proc.seconds:.1f}s, peak RSS {proc.max_rss_mb:.0f} MB"
        )
        bench.clean(targets)
    return out


def verify_hosts(targets: list[SandboxHost], deploy_to: str, artifact, release: int = 1) -> list[str]:
    """Check every host really runs the release: link, completeness, REVISION, file count, sample hashes."""
    manifest = artifact.manifest
    sample = sorted(manifest)[:: max(1, len(manifest) // 3)][:3]
    expected_files = int(artifact.meta.get("file_count", len(manifest)))
    script = (
        f"cd {deploy_to} && readlink current && test -f current/.deployer/complete && echo complete && "
        f"cat current/REVISION && find current/ -path current/.deployer -prune -o -path current/log -prune "
        f"-o -type f -print | wc -l && cd current && sha256sum {' '.join(sample)}"
    )

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
    bench.log(
        f"  scale: {n} hosts: floor {floor.seconds:.1f}s, deploy {proc.seconds:.1f}s, "
        f"{n - len(problems)}/{n} hosts correct"
    )
    bench.clean(targets)
    return ScaleResult(n, floor.seconds, proc.seconds, proc.max_rss_mb, n - len(problems), problems)


# --- hosts ----------------------------------------------------------------------------------------

# /srv on tmpfs: the VM's disk (shared with whatever else runs on the machine) would otherwise
# decide the numbers; the size is a cap, memory is only used as files are written.
SRV_TMPFS = {"/srv": "size=8g,uid=1000,gid=1000,mode=0755"}


def start_hosts(
    n: int, key: Path, *, label: str = LABEL, prefix: str = "host", log: Log = print, tmpfs: bool = True
) -> list[SandboxHost]:
    started = time.monotonic()
    hosts = sandbox.start_hosts(
        n,
        key.with_suffix(".pub").read_text(),
        label=label,
        prefix=prefix,
        **({"tmpfs": dict(SRV_TMPFS)} if tmpfs else {}),
    )
    log(f"  started {n} sandbox host(s) in {time.monotonic() - started:.1f}s")
    return hosts
