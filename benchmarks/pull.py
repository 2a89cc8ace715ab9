"""Push against pull behind one shared operator uplink, in one run; writes its section of results.md.

* push floor: benchmarks/floor.sh, OpenSSH streaming the tarball to every host through the uplink;
* pull floor: one upload of the artifact to the store through the uplink (boto3), then every host
  fetching it straight from the store and extracting it (curl | tar, started by docker exec);
* deploy with pull: `deployer deploy --artifact FILE` with [store] transfer = "pull" (publish
  included: a fresh store prefix each time), every host verified afterwards.

The pull floor and the pull deploy run --reps times, which goes first alternating, each into fresh
directories; the push floor (the artifact once per host through the uplink) runs once, last.

The uplink is a NetProxy per target (each host, the store) sharing one netproxy.Uplink: the cap,
and the operator's bytes. The section goes between `<!-- pull:begin -->` and `<!-- pull:end -->`
of benchmarks/results.md (`--out`). The 100-host run on loopback is benchmarks/pull_scale.py.

    TESTCONTAINERS_RYUK_DISABLED=true .venv/bin/python -m benchmarks.pull --hosts 20 --mbit 50
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks import harness, process
from benchmarks.netproxy import NetProxy, Uplink
from benchmarks.process import HERE, run_timed
from benchmarks.section import wrap, write_section
from benchmarks.workload import Spec, git_artifact
from deployer.sandbox import deploy_files
from deployer.sandbox import hosts as sandbox
from deployer.sandbox import store as store_mod

KB = 1024
MB = 1024 * 1024
SECTION = "pull"


@dataclasses.dataclass
class Row:
    what: str
    seconds: float
    up: int  # operator bytes sent
    down: int = 0  # operator bytes received
    rss_mb: float | None = None
    phases: dict[str, float] = dataclasses.field(default_factory=dict)
    host_cpu: float | None = None  # CPU seconds of every host container meanwhile (cgroup)
    correct: int | None = None  # hosts verified afterwards


@dataclasses.dataclass
class Rig:
    """Sandbox hosts, the store beside them and the bench artifact."""

    work: Path
    bench: harness.Bench
    server: store_mod.StoreServer
    artifact: object
    src: Path | None = None  # the deployer measured: an exported revision, else the work tree
    measured: str = ""  # what src is, for the report


@contextlib.contextmanager
def rig(n: int, artifact_mb: float, ref: str | None = None, log=print) -> Iterator[Rig]:
    """n hosts and a store started, the artifact built, the deployer measured (revision ref, else
    the work tree) byte-compiled; everything removed afterwards."""
    work = Path(tempfile.mkdtemp(prefix="bench-pull-"))
    src, sha = process.snapshot(ref, work / "deployer-src") if ref else (None, None)
    process.compile_source(src)
    measured = process.describe_source(src, ref, sha)
    key = sandbox.ensure_client_key(work / "key")
    image = sandbox.ensure_image()
    hosts = harness.start_hosts(n, key, log=log)
    server = bench = None
    try:
        server = store_mod.start(image, work / "store", label=harness.LABEL)
        bench = harness.Bench(work, key, hosts, log=log)
        log("  building the artifact")
        artifact = git_artifact(Spec(target_mb=artifact_mb), work / "app", log=lambda m: None)
        yield Rig(work, bench, server, artifact, src, measured)
    finally:
        if bench is not None:
            bench.close()
        if server is not None:
            store_mod.stop(server)
        sandbox.stop_hosts(hosts)


def pull_config(rig: Rig, targets, known: Path, endpoint: str, deploy_to: str, name: str) -> Path:
    """A hosts.toml with [store] transfer = "pull" (deploy --transfer push overrides it)."""
    return deploy_files.write_config(
        rig.work / f"hosts-{name}.toml",
        targets,
        rig.bench.key,
        known,
        deploy_to=deploy_to,
        app_name="benchapp",
        source=str(rig.work),
        extra={
            "store": {
                "url": f"s3://{rig.server.bucket}/{name}",
                "endpoint": endpoint,
                "host_endpoint": rig.server.host_endpoint,
                "transfer": "pull",
            }
        },
    )


def deploy_argv(r: Rig, config: Path, hosts: int, *more: str) -> list[str]:
    artifact = r.artifact
    argv = [*process.deployer_argv(r.src), "deploy", "--artifact", str(artifact.path), "--config", str(config), *more]
    return argv + (["--parallel", str(hosts)] if hosts > 10 else [])


class Link:
    """The operator's uplink: a NetProxy per target sharing one cap; the bytes through it."""

    def __init__(self, mbit: float):
        self.uplink = Uplink(mbit * 1e6 / 8)
        self.proxies: list[NetProxy] = []
        self._last = (0, 0)

    def port(self, target: tuple[str, int]) -> int:
        self.proxies.append(NetProxy(target, uplink=self.uplink).start())
        return self.proxies[-1].port

    def counts(self) -> tuple[int, int]:
        """Bytes up and down since the last call."""
        up = self.uplink.bytes
        down = sum(p.bytes_forwarded - p.bytes_up for p in self.proxies)
        last, self._last = self._last, (up, down)
        return up - last[0], down - last[1]

    def close(self) -> None:
        for p in self.proxies:
            p.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.pull", description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=20)
    ap.add_argument("--mbit", type=float, default=50.0, help="the operator's uplink, Mbit/s")
    ap.add_argument("--artifact-mb", type=float, default=20.0)
    ap.add_argument("--reps", type=int, default=3, help="pull floor and pull deploy pairs, order alternating")
    ap.add_argument("--deployer-ref", help="measure this git revision of deployer/ instead of the work tree")
    ap.add_argument("--out", type=Path, default=HERE / "results.md")
    args = ap.parse_args(argv)
    link = Link(args.mbit)
    with rig(args.hosts, args.artifact_mb, args.deployer_ref) as r:
        try:
            direct = r.bench.targets(args.hosts)
            via = [dataclasses.replace(h, host="127.0.0.1", port=link.port((h.host, h.port))) for h in direct]
            keys = {h.container_id: " ".join(sandbox.host_key_line(h).split()[1:3]) for h in r.bench.hosts}
            known = r.work / "known_hosts_uplink"
            known.write_text(
                "".join(f"{sandbox.known_hosts_name(v.host, v.port)} {keys[v.container_id]}\n" for v in via)
            )
            store_ip = r.server.host_endpoint.split("//")[1].rsplit(":", 1)[0]
            endpoint = f"http://127.0.0.1:{link.port((store_ip, store_mod.S3_PORT))}"
            print(f"  uplink {args.mbit:g} Mbit/s shared by {len(link.proxies)} proxies")
            r.bench.warm_up()  # one untimed run first: no timed run pays the client's first-use costs
            link.counts()
            pairs: list[tuple[Row, Row]] = []
            problems: list[str] = []
            for rep in range(args.reps):
                # alternating which goes first: neither always meets the hosts the other left
                if rep % 2 == 0:
                    floor = pull_floor(r, endpoint, direct, link, rep)
                    deploy = pull_deploy(r, endpoint, via, known, link, rep)
                else:
                    deploy = pull_deploy(r, endpoint, via, known, link, rep)
                    floor = pull_floor(r, endpoint, direct, link, rep)
                pair = (floor, deploy)
                problems += harness.verify_hosts(direct, f"/srv/bench/pull-{rep}", r.artifact)
                pairs.append(pair)
                print(f"  rep {rep + 1}/{args.reps}: pull floor {pair[0].seconds:.1f}s, deploy {pair[1].seconds:.1f}s")
                clean(direct, rep)
            push = push_floor(r, known, via, link)  # once, last: its 20 x the artifact weighs on what follows
        finally:
            link.close()
        command = "python -m benchmarks.pull " + " ".join(argv if argv is not None else sys.argv[1:])
        section = render(args, r, push, pairs, problems, command.strip())
    write_section(args.out, section, SECTION)
    print(section)
    return 0 if not problems else 1


def push_floor(r: Rig, known: Path, via, link: Link) -> Row:
    argv = ["bash", str(harness.FLOOR), str(r.bench.key), str(known), "/srv/floor/push", "1", str(r.artifact.path)]
    proc = run_timed([*argv, *[f"{h.host}:{h.port}" for h in via]]).check("push floor")
    return Row("push floor (OpenSSH to each host)", proc.seconds, *link.counts(), proc.max_rss_mb)


def clean(direct, rep: int) -> None:
    """What one repetition left on the hosts (outside any timing)."""
    # /srv/floor goes too once empty: made by root here, the push floor (the deploy user) needs it
    cmd = f"rm -rf /srv/floor/pull-{rep} /srv/bench/pull-{rep}; rmdir /srv/floor 2>/dev/null || true"
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda h: sandbox.exec_root(h, cmd), direct))


def pull_floor(r: Rig, endpoint: str, direct, link: Link, rep: int = 0) -> Row:
    """One upload through the uplink, then every host fetching and extracting it at once."""
    server, artifact = r.server, r.artifact
    uploader = dataclasses.replace(server, endpoint=endpoint).client()
    signer = dataclasses.replace(server, endpoint=server.host_endpoint).client()
    key = f"floor-{rep}/{artifact.path.name}"
    link.counts()
    started = time.monotonic()
    uploader.upload_file(str(artifact.path), server.bucket, key)
    url = signer.generate_presigned_url("get_object", Params={"Bucket": server.bucket, "Key": key}, ExpiresIn=600)
    to = f"/srv/floor/pull-{rep}/1"
    script = f"mkdir -p {to} && curl -sSf " + shlex.quote(url) + f" | tar -xzf - -C {to}"
    with ThreadPoolExecutor(max_workers=len(direct)) as pool:
        codes = list(pool.map(lambda h: sandbox.exec_root(h, script)[0], direct))
    seconds = time.monotonic() - started
    if any(codes):
        raise SystemExit(f"pull floor failed on {sum(1 for c in codes if c)} host(s)")
    return Row(r"pull floor (upload once, hosts `curl \| tar`)", seconds, *link.counts())


def pull_deploy(r: Rig, endpoint: str, via, known: Path, link: Link, rep: int = 0) -> Row:
    """A first deploy with pull into fresh directories, publish included (a fresh store prefix)."""
    config = pull_config(r, via, known, endpoint, f"/srv/bench/pull-{rep}", f"bench-{rep}")
    env = {**process.cli_env(r.src), **r.server.env}
    link.counts()
    proc = run_timed(deploy_argv(r, config, len(via)), env=env, cwd=r.work).check("deploy with pull")
    return Row(
        "deployer deploy, transfer = pull (publish included)",
        proc.seconds,
        *link.counts(),
        proc.max_rss_mb,
        harness.phase_times(proc.stdout, [h.name for h in via]),
    )


def render(args, r: Rig, push: Row, pairs: list[tuple[Row, Row]], problems: list[str], command: str) -> str:
    artifact = r.artifact
    size = artifact.size
    budget = 1.1 * size + args.hosts * 16 * KB
    ratios = [deploy.seconds / floor.seconds for floor, deploy in pairs]
    floors = [floor for floor, _ in pairs]
    deploys = [deploy for _, deploy in pairs]
    pull = sorted(floors, key=lambda row: row.seconds)[len(floors) // 2]  # the median run
    deploy = sorted(deploys, key=lambda row: row.seconds)[len(deploys) // 2]
    ratio = statistics.median(ratios)
    most = max(d.up for d in deploys)
    lines = [
        "## Push against pull behind one operator uplink",
        "",
        f"{args.hosts} hosts, artifact {size / MB:.1f} MB, operator uplink {args.mbit:g} Mbit/s shared by every "
        "connection from this machine (a NetProxy per host and one for the store, one netproxy.Uplink). "
        f"Command: `{command}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; hosts, store and client "
        f"share the machine ({os.cpu_count()} CPUs). Deployer measured: {r.measured}. {len(pairs)} repetitions of "
        "the pull floor and the pull deploy, which goes first alternating, each into fresh directories (the deploy "
        "into a fresh store prefix: its publish included); the push floor once, last. Median runs shown.",
        "",
        "| run | seconds | operator bytes up | bytes down | peak RSS |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in (push, pull, deploy):
        rss = f"{row.rss_mb:.0f} MB" if row.rss_mb else "-"
        lines.append(f"| {row.what} | {row.seconds:.1f} | {row.up / MB:.1f} MB | {row.down / MB:.2f} MB | {rss} |")
    phases = ", ".join(f"{name} {seconds:.1f}" for name, seconds in deploy.phases.items())
    each = ", ".join(f"{f.seconds:.1f}/{d.seconds:.1f}" for f, d in pairs)
    lines += [
        "",
        f"Each repetition, pull floor/deploy seconds: {each}; deploy / pull floor "
        f"{', '.join(f'{x:.2f}' for x in ratios)}.",
        f"The median deploy's phases (slowest host, seconds): {phases}. The publish runs while the hosts are "
        "locked and checked; prepare waits for the tarball (its .json goes up while the hosts fetch).",
        "",
        "| target | value | result |",
        "|---|---:|---|",
        f"| deploy with pull ≤ 1.15 × pull floor (median of the repetitions) | {ratio:.2f} × "
        f"({deploy.seconds / push.seconds:.2f} × the push floor) | {'pass' if ratio <= 1.15 else 'MISS'} |",
        f"| operator bytes ≤ 1.1 × artifact + {args.hosts} × 16 KB ({budget / MB:.1f} MB), largest run | "
        f"{most / MB:.1f} MB | {'pass' if most <= budget else 'MISS'} |",
        f"| every host runs the release, files checked, every repetition | "
        f"{len(pairs) * args.hosts - len(problems)}/{len(pairs) * args.hosts} "
        f"| {'pass' if not problems else 'MISS: ' + '; '.join(problems[:3])} |",
    ]
    return wrap(SECTION, "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
