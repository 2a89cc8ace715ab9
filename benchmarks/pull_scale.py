"""Many hosts on loopback, push and pull side by side, in one run; writes its section of results.md.

Starts N hosts and the store, builds the bench artifact, then one after the other, each into
fresh directories: the push floor (benchmarks/floor.sh, OpenSSH to every host at once), `deployer
deploy --transfer push` and `deployer deploy` with [store] transfer = "pull" (publish included:
the store starts without the artifact). After each deploy every host is checked
(harness.verify_hosts). Per run: wall seconds, operator bytes, the hosts' CPU (their containers'
cgroups), the client's peak RSS. No cap on any link.

Operator bytes come from the containers' interface counters (eth0, TCP/IP included): what the
hosts received, less what the store sent (the hosts' downloads), plus what the store received
(the publish). The section goes between `<!-- pull-scale:begin -->` and `<!-- pull-scale:end -->`.

    TESTCONTAINERS_RYUK_DISABLED=true .venv/bin/python -m benchmarks.pull_scale --hosts 100
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks import harness, process
from benchmarks.process import HERE, load_average, run_timed
from benchmarks.pull import MB, Rig, Row, deploy_argv, pull_config, rig
from benchmarks.section import wrap, write_section

SECTION = "pull-scale"
RSS_TARGET_MB = 120
WALL_TARGET = 1.2  # × the push floor


def interface_bytes(rig: Rig, ids: list[str]) -> list[tuple[int, int]]:
    """(rx, tx) bytes of each container's eth0 so far."""
    docker = rig.bench._docker
    read = ["cat", "/sys/class/net/eth0/statistics/rx_bytes", "/sys/class/net/eth0/statistics/tx_bytes"]

    def one(cid: str) -> tuple[int, int]:
        rx, tx = docker.containers.get(cid).exec_run(read).output.split()
        return int(rx), int(tx)

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, ids))


class Counter:
    """Operator bytes since it was made: hosts' rx − store's tx + store's rx."""

    def __init__(self, rig: Rig, host_ids: list[str]):
        self.rig, self.ids = rig, [*host_ids, rig.server.container_id]
        self.before = interface_bytes(rig, self.ids)

    def sent(self) -> int:
        after = interface_bytes(self.rig, self.ids)
        delta = [(a[0] - b[0], a[1] - b[1]) for a, b in zip(after, self.before, strict=True)]
        *hosts, store = delta
        return sum(rx for rx, _ in hosts) - store[1] + store[0]


def measure(rig: Rig, hosts, what: str, action, deploy_to: str | None) -> Row:
    counter = Counter(rig, [h.container_id for h in hosts])
    proc, _ = rig.bench.measured(hosts, action)
    sent = counter.sent()
    correct = None
    if deploy_to is not None:
        problems = harness.verify_hosts(hosts, deploy_to, rig.artifact)
        correct = len(hosts) - len(problems)
        for p in problems[:5]:
            print(f"  {what}: {p}")
    row = Row(what, proc.seconds, sent, 0, proc.max_rss_mb, host_cpu=proc.host_cpu_seconds, correct=correct)
    print(f"  {what}: {row.seconds:.1f}s, {sent / MB:.1f} MB sent, rss {row.rss_mb:.0f} MB, correct {correct}")
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.pull_scale", description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--parallel", type=int, default=20, help="deployer --parallel (0: as many as hosts)")
    ap.add_argument("--artifact-mb", type=float, default=20.0)
    ap.add_argument("--deployer-ref", help="measure this git revision of deployer/ instead of the work tree")
    ap.add_argument("--out", type=Path, default=HERE / "results.md")
    args = ap.parse_args(argv)
    parallel = args.parallel or args.hosts
    started = time.monotonic()
    with rig(args.hosts, args.artifact_mb, args.deployer_ref) as r:
        b = r.bench
        hosts = b.targets(args.hosts)
        env = {**process.cli_env(r.src), **r.server.env}

        def deploy(to: str, *extra: str):
            config = pull_config(r, hosts, b.known_hosts, r.server.endpoint, to, to.rsplit("/", 1)[1])
            argv = deploy_argv(r, config, 0, "--parallel", str(parallel), *extra)
            return lambda: run_timed(argv, env=env, cwd=r.work, timeout=1800).check("deploy")

        b.warm_up()
        floor_to = b.deploy_dir("floor", "scale")
        push_to, pull_to = b.deploy_dir("bench", "scale-push"), b.deploy_dir("bench", "scale-pull")
        rows = []
        for what, action, to in (
            ("push floor (OpenSSH to each host)", lambda: b.floor(hosts, floor_to, 1, r.artifact), None),
            ("deployer deploy, transfer = push", deploy(push_to, "--transfer", "push"), push_to),
            ("deployer deploy, transfer = pull (publish included)", deploy(pull_to), pull_to),
        ):
            rows.append(measure(r, hosts, what, action, to))
            b.clean(hosts)  # every run starts from empty hosts, and the tmpfs stays small
        load = load_average()
        command = "python -m benchmarks.pull_scale " + " ".join(argv if argv is not None else sys.argv[1:])
        section = render(args.hosts, parallel, r, rows, command.strip(), load, time.monotonic() - started)
    write_section(args.out, section, SECTION)
    print(section)
    return 0 if all(row.correct in (None, args.hosts) for row in rows) else 1


def render(n: int, parallel: int, r: Rig, rows: list[Row], command: str, load, total: float) -> str:
    floor, push, pull = rows
    artifact = r.artifact
    lines = [
        f"## Scale: {n} hosts on loopback, push and pull",
        "",
        f"- command: `{command}`; one run, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{total:.0f} s in all; {os.cpu_count()} CPUs shared by hosts, store and client; load average after "
        f"{load if load is not None else '?'}",
        f"- artifact {artifact.size / MB:.1f} MB; deployer measured: {r.measured}, `--parallel {parallel}`; every run "
        "into fresh directories",
        "- operator bytes: the containers' eth0 counters (hosts' rx − store's tx + store's rx), TCP/IP included; "
        "host CPU: every host container's cgroup; RSS: the client process's peak",
        "",
        "| run | seconds | × floor | operator MB | host CPU s | peak RSS MB | hosts correct |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        cpu = f"{row.host_cpu:.1f}" if row.host_cpu is not None else "-"
        ok = "-" if row.correct is None else f"{row.correct}/{n}"
        lines.append(
            f"| {row.what} | {row.seconds:.1f} | {row.seconds / floor.seconds:.2f} | {row.up / MB:.1f} | {cpu} "
            f"| {row.rss_mb:.0f} | {ok} |"
        )
    lines += ["", "| target | value | result |", "|---|---:|---|"]
    for row in (pull, push):
        ratio = row.seconds / floor.seconds
        lines += [
            f"| {row.what}: wall ≤ {WALL_TARGET} × the push floor | {ratio:.2f} × "
            f"| {'pass' if ratio <= WALL_TARGET else 'MISS'} |",
            f"| {row.what}: peak RSS ≤ {RSS_TARGET_MB} MB | {row.rss_mb:.0f} MB "
            f"| {'pass' if row.rss_mb <= RSS_TARGET_MB else 'MISS'} |",
            f"| {row.what}: every host correct | {row.correct}/{n} | {'pass' if row.correct == n else 'MISS'} |",
        ]
    return wrap(SECTION, "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
