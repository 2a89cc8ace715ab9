"""The Markdown report of a benchmark run: tables and target verdicts read from the records."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.records import PHASES, ConfigResult, Measurement, MemoryResult, ScaleResult

REDEPLOYS = ("redeploy", "redeploy_linked", "redeploy_linked_warm")
ROLLBACKS = ("rollback", "rollback_warm")

MAIN_COLUMNS = [
    "hosts",
    "added RTT ms",
    "floor s",
    "deploy s",
    "redeploy s",
    "redeploy linked s",
    "redeploy linked warm s",
    "rollback s",
    "rollback warm s",
    "deploy/floor",
    "redeploy/deploy",
    "linked/deploy",
    "linked warm/deploy",
    "floor rollback s",
    "cmds/host deploy",
    "cmds/host redeploy",
    "cmds/host rollback",
    "peak RSS deploy MB",
    "peak RSS rollback MB",
]
PHASE_COLUMNS = ["hosts", "added RTT ms", "deploy s", *[f"{p} s" for p in PHASES], "hosts extracting as it arrived"]
CPU_COLUMNS = [
    "hosts",
    "added RTT ms",
    "floor CPU s",
    "deploy CPU s",
    "redeploy CPU s",
    "redeploy linked CPU s",
    "rollback CPU s",
    "deploy/floor CPU",
    "client CPU floor s",
    "client CPU deploy s",
    "load avg",
]


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
        rows.append(
            [
                str(r.hosts),
                str(r.rtt_ms),
                _f(r.med("floor")),
                _f(r.med("deploy")),
                _f(r.med("redeploy")),
                _f(r.med("redeploy_linked")),
                _f(r.med("redeploy_linked_warm")),
                _f(r.med("rollback")),
                _f(r.med("rollback_warm")),
                _f(r.ratio("deploy", "floor")),
                _f(r.ratio("redeploy", "deploy")),
                _f(r.ratio("redeploy_linked", "deploy")),
                _f(r.ratio("redeploy_linked_warm", "deploy")),
                _f(r.med("floor_rollback")),
                _span(r.cmds("deploy")),
                _span(r.cmds(*REDEPLOYS)),
                _span(r.cmds(*ROLLBACKS)),
                _f(r.peak_rss("deploy"), 0),
                _f(r.peak_rss("rollback"), 0),
            ]
        )
    return rows


def phase_rows(results: list[ConfigResult]) -> list[list[str]]:
    return [
        [
            str(r.hosts),
            str(r.rtt_ms),
            _f(r.med("deploy")),
            *[_f(r.phase_median(p)) for p in PHASES],
            _span(r.counted("deploy", "streamed")),
        ]
        for r in results
    ]


def cpu_rows(results: list[ConfigResult]) -> list[list[str]]:
    return [
        [
            str(r.hosts),
            str(r.rtt_ms),
            _f(r.med("floor", _total)),
            _f(r.med("deploy", _total)),
            _f(r.med("redeploy", _total)),
            _f(r.med("redeploy_linked", _total)),
            _f(r.med("rollback", _total)),
            _f(r.ratio("deploy", "floor", _total)),
            _f(r.med("floor", _client)),
            _f(r.med("deploy", _client)),
            _f(max(r.load, default=None), 1),
        ]
        for r in results
    ]


def _total(m: Measurement) -> float | None:
    return m.total_cpu


def _client(m: Measurement) -> float | None:
    return m.client_cpu


def markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class Target:
    name: str
    measured: str
    ok: bool | None  # None: not measured in this run

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

    deploy_cmds = [c for r in results for c in r.cmds("deploy", *REDEPLOYS)]
    targets.append(
        Target(
            "<= 4 remote commands per host per deploy",
            f"max {max(deploy_cmds, default=0)}",
            max(deploy_cmds) <= 4 if deploy_cmds else None,
        )
    )
    rollback_cmds = [c for r in results for c in r.cmds(*ROLLBACKS)]
    targets.append(
        Target(
            "<= 2 remote commands per host per rollback",
            f"max {max(rollback_cmds, default=0)}",
            max(rollback_cmds) <= 2 if rollback_cmds else None,
        )
    )
    r20 = find(20, 0)
    rb = r20.med("rollback") if r20 else None
    frb = r20.med("floor_rollback") if r20 else None
    targets.append(
        Target(
            "rollback of 20 hosts <= 1 s, loopback, new connections",
            (_f(rb) + " s" + (f" (floor rollback {frb:.2f} s)" if frb else "")) if rb else "n/a",
            None if rb is None else rb <= 1.0,
        )
    )
    warm = r20.med("rollback_warm") if r20 else None
    targets.append(
        Target(
            "rollback of 20 hosts <= 1 s, loopback, connections kept open (ssh.persist)",
            _f(warm) + " s" if warm else "n/a",
            None if warm is None else warm <= 1.0,
        )
    )
    for kind, label in (
        ("redeploy", "extracted again (default)"),
        ("redeploy_linked", "linked (app.hardlink_releases)"),
        ("redeploy_linked_warm", "linked, connections kept open (ssh.persist)"),
    ):
        ratios = [(r.ratio(kind, "deploy"), r) for r in results if r.ratio(kind, "deploy") is not None]
        if ratios:
            worst, where = max(ratios, key=lambda x: x[0])
            best, _ = min(ratios, key=lambda x: x[0])
            targets.append(
                Target(
                    f"redeploy <= 0.3 x first deploy, {label}, every configuration",
                    f"{best:.2f}-{worst:.2f} (worst: {where.hosts} hosts, {where.rtt_ms} ms RTT)",
                    worst <= 0.3,
                )
            )
        else:
            targets.append(Target(f"redeploy <= 0.3 x first deploy, {label}", "n/a", None))
    rss20 = r20.peak_rss("deploy", "redeploy", "redeploy_linked", "rollback") if r20 else None
    targets.append(
        Target(
            "peak memory <= 120 MB at 20 hosts",
            _f(rss20, 0) + " MB" if rss20 else "n/a",
            None if rss20 is None else rss20 <= 120,
        )
    )
    if len(memory) >= 2:
        small, big = memory[0], memory[-1]
        change = big.rss_mb / small.rss_mb - 1
        targets.append(
            Target(
                f"peak memory {small.artifact_mb:.0f} MB vs {big.artifact_mb:.0f} MB artifact within "
                f"+-10% ({small.hosts} hosts)",
                f"{small.rss_mb:.0f} vs {big.rss_mb:.0f} MB ({change:+.0%})",
                abs(change) <= 0.10,
            )
        )
    else:
        targets.append(Target("peak memory same (+-10%) for 20 MB vs 500 MB", "n/a", None))
    if scale is not None:
        targets.append(
            Target(
                f"{scale.hosts} hosts complete, every host correct",
                f"{scale.correct}/{scale.hosts} correct in {scale.deploy_seconds:.1f} s",
                scale.correct == scale.hosts,
            )
        )
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
        cpu = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")
            ),
            "",
        )
    except OSError:
        pass
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True)
    return {
        "nproc": str(os.cpu_count()),
        "RAM": f"{mem_kb / 2**20:.1f} GiB",
        "CPU": cpu or platform.processor(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "OpenSSH client": (ssh.stderr or ssh.stdout).strip(),
    }


def render(
    results: list[ConfigResult],
    memory: list[MemoryResult],
    scale: ScaleResult | None,
    *,
    artifact,
    reps: int,
    command: str = "",
    parallel: int | None = None,
    measured: str = "",
    notes: Iterable[str] = (),
) -> str:
    info = machine()
    out = [
        "# Deployer performance against the floor",
        "",
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {info['nproc']} CPUs ({info['CPU']}), {info['RAM']} RAM, Linux {info['kernel']}, "
        f"Python {info['python']}, {info['OpenSSH client']}; sandbox hosts are sshd containers on the same machine",
        f"- artifact: {artifact.size / 2**20:.1f} MB tar.gz, {artifact.meta.get('file_count')} files, "
        f"{int(artifact.meta.get('unpacked_size', 0)) / 2**20:.1f} MB unpacked (mostly text, some binary; "
        "generated deterministically, built with build_artifact)",
        f"- repetitions: {reps} per configuration, interleaved (floor and deployer alternate going first); "
        "medians reported",
        f"- deployer: the CLI as a subprocess, `--parallel {parallel}`"
        if parallel
        else "- deployer: the CLI as a subprocess, default `--parallel` (10)",
    ]
    if measured:
        out.append(f"- deployer code measured: {measured}")
    if command:
        out.append(f"- command: `{command}`")
    out += [
        "",
        "## Side by side",
        "",
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
        "",
        markdown_table(MAIN_COLUMNS, main_rows(results)),
    ]
    if any(r.values("deploy", _total) for r in results):
        out += [
            "",
            "### CPU used (client + every host)",
            "",
            "CPU seconds consumed by one run: the client process (rusage) plus every target container "
            "(cgroup accounting: sshd, shells, tar, the checksum...), median. It moves less than wall time "
            "with what else the machine runs, but it does move (contention costs cycles); once a run is "
            "CPU-bound (20+ hosts on 2 cores) "
            "deploy/floor CPU is roughly the wall-time ratio to expect. `load avg`: the highest 1-minute "
            "load average seen before a repetition (other work on the machine).",
            "",
            markdown_table(CPU_COLUMNS, cpu_rows(results)),
        ]
    if any(r.of("deploy") for r in results):
        out += [
            "",
            "### Where a first deploy spends its time",
            "",
            "The deployer's own per-phase seconds, from the CLI's result table: the slowest host per phase, "
            "median over repetitions. With more hosts than `--parallel`, hosts run in waves and a phase "
            "takes longer than its slowest host. The last column: hosts whose link measured slow enough "
            "for the upload to be extracted as it arrived (range over repetitions).",
            "",
            markdown_table(PHASE_COLUMNS, phase_rows(results)),
        ]
    if memory:
        out += [
            "",
            "## Peak memory by artifact size",
            "",
            markdown_table(
                ["artifact", "MB", "files", "hosts", "deploy s", "peak RSS MB"],
                [
                    [m.label, f"{m.artifact_mb:.0f}", str(m.files), str(m.hosts), f"{m.seconds:.1f}", f"{m.rss_mb:.0f}"]
                    for m in memory
                ],
            ),
        ]
    if scale is not None:
        out += [
            "",
            "## Scale run",
            "",
            f"{scale.hosts} hosts, one first deploy: {scale.deploy_seconds:.1f} s "
            f"(floor {scale.floor_seconds:.1f} s, ratio {scale.deploy_seconds / scale.floor_seconds:.2f}), "
            f"peak RSS {scale.rss_mb:.0f} MB; "
            f"{scale.correct}/{scale.hosts} hosts verified (current -> releases/1, complete marker, REVISION, "
            "file count, sample sha256).",
        ]
        out += [f"- {p}" for p in scale.problems]
    out += [
        "",
        "## Targets",
        "",
        markdown_table(
            ["target", "measured", "verdict"],
            [[t.name, t.measured, t.verdict] for t in evaluate(results, memory, scale)],
        ),
    ]
    notes = list(notes)
    if notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"
