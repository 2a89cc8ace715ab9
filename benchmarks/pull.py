"""Push against pull behind one shared operator uplink (benchmarks/uplink.py), in one run:

* push floor: benchmarks/floor.sh, OpenSSH streaming the tarball to every host through the uplink;
* pull floor: one upload of the artifact to the store through the uplink (boto3), then every host
  fetching it straight from the store and extracting it (curl | tar, started by docker exec);
* deploy with pull: `deployer deploy --artifact FILE` with [store] transfer = "pull" (publish
  included: the store starts without the artifact), every host verified afterwards.

Operator bytes are the bytes through the uplink from this machine. Writes a Markdown report
(default benchmarks/results-pull.md) and prints it.

    TESTCONTAINERS_RYUK_DISABLED=true .venv/bin/python -m benchmarks.pull --hosts 20 --mbit 50
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks import harness
from benchmarks.process import HERE, run_timed
from benchmarks.uplink import Bucket, Port
from benchmarks.workload import Spec, git_artifact
from deployer.sandbox import hosts as sandbox
from deployer.sandbox import store as store_mod

KB = 1024
MB = 1024 * 1024


@dataclasses.dataclass
class Row:
    what: str
    seconds: float
    up: int
    down: int
    rss_mb: float | None = None
    phases: dict[str, float] = dataclasses.field(default_factory=dict)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=20)
    ap.add_argument("--mbit", type=float, default=50.0, help="the operator's uplink, Mbit/s")
    ap.add_argument("--artifact-mb", type=float, default=20.0)
    ap.add_argument("--out", type=Path, default=HERE / "results-pull.md")
    args = ap.parse_args(argv)
    log = print
    work = Path(tempfile.mkdtemp(prefix="bench-pull-"))
    key = sandbox.ensure_client_key(work / "key")
    image = sandbox.ensure_image()
    hosts = harness.start_hosts(args.hosts, key, log=log)
    server = None
    ports: list[Port] = []
    try:
        server = store_mod.start(image, work / "store", label=harness.LABEL)
        bench = harness.Bench(work, key, hosts, log=log)
        bucket = Bucket(args.mbit * 1e6 / 8)
        direct = bench.targets(len(hosts))
        # every operator connection goes through the uplink: one port per host, one for the store
        via = []
        for h in direct:
            ports.append(Port((h.host, h.port), bucket))
            via.append(dataclasses.replace(h, host="127.0.0.1", port=ports[-1].port))
        keys = {h.container_id: " ".join(sandbox.host_key_line(h).split()[1:3]) for h in hosts}
        known = work / "known_hosts_uplink"
        known.write_text("".join(f"{sandbox.known_hosts_name(v.host, v.port)} {keys[v.container_id]}\n" for v in via))
        store_ip = server.host_endpoint.split("//")[1].rsplit(":", 1)[0]
        ports.append(Port((store_ip, store_mod.S3_PORT), bucket))
        endpoint = f"http://127.0.0.1:{ports[-1].port}"
        log(f"  uplink {args.mbit:g} Mbit/s shared by {len(ports)} ports; building the artifact")
        artifact = git_artifact(Spec(target_mb=args.artifact_mb), work / "app", log=lambda m: None)
        rows = [
            push_floor(bench, key, known, via, artifact, bucket),
            pull_floor(server, endpoint, direct, artifact, bucket),
            pull_deploy(bench, server, endpoint, via, known, artifact, bucket, work),
        ]
        problems = harness.verify_hosts(direct, "/srv/bench/pull", artifact)
        report = render(args, artifact, rows, problems)
        args.out.write_text(report)
        print(report)
        return 0 if not problems else 1
    finally:
        for port in ports:
            port.close()
        if server is not None:
            store_mod.stop(server)
        sandbox.stop_hosts(hosts)


def push_floor(bench, key: Path, known: Path, via, artifact, bucket: Bucket) -> Row:
    bucket.reset()
    argv = [
        "bash",
        str(harness.FLOOR),
        str(key),
        str(known),
        "/srv/floor/push",
        "1",
        str(artifact.path),
        *[f"{h.host}:{h.port}" for h in via],
    ]
    proc = run_timed(argv).check("push floor")
    return Row("push floor (OpenSSH to each host)", proc.seconds, *bucket.reset(), proc.max_rss_mb)


def pull_floor(server, endpoint: str, direct, artifact, bucket: Bucket) -> Row:
    """One upload through the uplink, then every host fetching and extracting it at once."""
    uploader = dataclasses.replace(server, endpoint=endpoint).client()
    signer = dataclasses.replace(server, endpoint=server.host_endpoint).client()
    key = f"floor/{artifact.path.name}"
    bucket.reset()
    started = time.monotonic()
    uploader.upload_file(str(artifact.path), server.bucket, key)
    url = signer.generate_presigned_url("get_object", Params={"Bucket": server.bucket, "Key": key}, ExpiresIn=600)
    script = "mkdir -p /srv/floor/pull/1 && curl -sSf " + shlex.quote(url) + " | tar -xzf - -C /srv/floor/pull/1"

    def fetch(h) -> int:
        return sandbox.exec_root(h, script)[0]

    with ThreadPoolExecutor(max_workers=len(direct)) as pool:
        codes = list(pool.map(fetch, direct))
    seconds = time.monotonic() - started
    if any(codes):
        raise SystemExit(f"pull floor failed on {sum(1 for c in codes if c)} host(s)")
    return Row(r"pull floor (upload once, hosts `curl \| tar`)", seconds, *bucket.reset())


def pull_deploy(bench, server, endpoint: str, via, known: Path, artifact, bucket: Bucket, work: Path) -> Row:
    config = sandbox.write_config(
        work / "hosts-pull.toml",
        via,
        bench.key,
        known,
        deploy_to="/srv/bench/pull",
        app_name="benchapp",
        source=str(work),
        extra={
            "store": {
                "url": f"s3://{server.bucket}/bench",
                "endpoint": endpoint,
                "host_endpoint": server.host_endpoint,
                "transfer": "pull",
            }
        },
    )
    env = {**harness.cli_env(None), **server.env}
    argv = [*harness.deployer_argv(None), "deploy", "--artifact", str(artifact.path), "--config", str(config)]
    if len(via) > 10:
        argv += ["--parallel", str(len(via))]
    bucket.reset()
    proc = run_timed(argv, env=env, cwd=work).check("deploy with pull")
    return Row(
        "deployer deploy, transfer = pull (publish included)",
        proc.seconds,
        *bucket.reset(),
        proc.max_rss_mb,
        harness.phase_times(proc.stdout, [h.name for h in via]),
    )


def render(args, artifact, rows: list[Row], problems: list[str]) -> str:
    push, pull, deploy = rows
    size = artifact.size
    budget = 1.1 * size + args.hosts * 16 * KB
    lines = [
        "# Push vs pull behind one operator uplink",
        "",
        f"{args.hosts} hosts, artifact {size / MB:.1f} MB, operator uplink {args.mbit:g} Mbit/s shared by every "
        "connection from this machine (benchmarks/uplink.py). Produced by `python -m benchmarks.pull`, one run, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; hosts, store and client share the machine "
        f"({os.cpu_count()} CPUs).",
        "",
        "| run | seconds | operator bytes up | bytes down | peak RSS |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        rss = f"{r.rss_mb:.0f} MB" if r.rss_mb else "-"
        lines.append(f"| {r.what} | {r.seconds:.1f} | {r.up / MB:.1f} MB | {r.down / MB:.2f} MB | {rss} |")
    ratio = deploy.seconds / pull.seconds
    phases = ", ".join(f"{name} {seconds:.1f}" for name, seconds in deploy.phases.items())
    lines += [
        "",
        f"The deploy's phases (slowest host, seconds): {phases}; the rest is the CLI, the build check "
        "and the publish before the hosts are locked.",
    ]
    lines += [
        "",
        "| target | value | result |",
        "|---|---:|---|",
        f"| deploy with pull ≤ 1.15 × pull floor | {ratio:.2f} × ({deploy.seconds / push.seconds:.2f} × the push "
        f"floor) | {'pass' if ratio <= 1.15 else 'MISS'} |",
        f"| operator bytes ≤ 1.1 × artifact + {args.hosts} × 16 KB ({budget / MB:.1f} MB) | {deploy.up / MB:.1f} MB "
        f"| {'pass' if deploy.up <= budget else 'MISS'} |",
        f"| every host runs the release, files checked | {args.hosts - len(problems)}/{args.hosts} "
        f"| {'pass' if not problems else 'MISS: ' + '; '.join(problems[:3])} |",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
