"""Run the benchmark and write benchmarks/results.md.

    .venv/bin/python -m benchmarks.run [--hosts 1,5,20] [--reps 5] [--latency-ms 0,25] [--artifact-mb 20]
                                       [--big-mb 500] [--mem-hosts 5] [--scale-hosts 50] [--parallel N]

Starts sandbox hosts (sshd containers, removed at the end), generates the artifact, measures every
(hosts, latency) configuration, the peak memory for a normal and a large artifact, and one scale
run; prints the Markdown report and writes it as its own section of --out (the rest of the file stays).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python benchmarks/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from deployer.sandbox import hosts as sandbox  # noqa: E402

from . import harness, process, report, section  # noqa: E402
from .workload import Spec, direct_artifact, git_artifact  # noqa: E402

HERE = Path(__file__).resolve().parent


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected numbers >= 0, got {text!r}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--hosts", type=_ints, default=[1, 5, 20], help="host counts (default 1,5,20)")
    p.add_argument("--reps", type=int, default=5, help="repetitions per configuration (default 5)")
    p.add_argument(
        "--latency-ms",
        type=_ints,
        default=[0, 25],
        help="latency added to EACH direction per host, ms (default 0,25: loopback and 50 ms RTT)",
    )
    p.add_argument("--artifact-mb", type=float, default=20, help="compressed artifact size (default 20)")
    p.add_argument("--files", type=int, default=3200, help="text files in the artifact (default 3200)")
    p.add_argument(
        "--big-mb", type=float, default=500, help="large artifact for the memory comparison, 0 to skip (default 500)"
    )
    p.add_argument("--mem-hosts", type=int, default=5, help="hosts for the memory comparison (default 5)")
    p.add_argument("--scale-hosts", type=int, default=50, help="hosts for the scale run, 0 to skip (default 50)")
    p.add_argument("--parallel", type=int, default=None, help="pass --parallel N to the deployer (default: its own)")
    p.add_argument("--out", type=Path, default=HERE / "results.md", help="report file (default benchmarks/results.md)")
    p.add_argument(
        "--workdir", type=Path, default=None, help="where to put artifacts and configs (default: a temp dir)"
    )
    p.add_argument(
        "--deployer-ref",
        default=None,
        metavar="REV",
        help="measure this git revision of deployer/ (exported to a temp dir) instead of the work tree",
    )
    p.add_argument(
        "--label", default=harness.LABEL, help=f"docker label of the hosts started (default {harness.LABEL})"
    )
    args = p.parse_args(argv)
    if args.reps < 1 or not args.hosts or min(args.hosts) < 1:
        p.error("--reps and every --hosts value must be at least 1")
    return args


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="deployer-bench-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        sandbox.ensure_image(log=log)
        key = sandbox.ensure_client_key(work / "key")

        log(f"generating a {args.artifact_mb:g} MB artifact ({args.files} text files + binaries)")
        spec = Spec(target_mb=args.artifact_mb, text_files=args.files)
        artifact = git_artifact(spec, work / "small")
        log(f"  {artifact.path.name}: {artifact.size / 2**20:.1f} MB, {artifact.meta['file_count']} files")

        src = sha = None
        if args.deployer_ref:
            src, sha = process.snapshot(args.deployer_ref, work / "deployer-src")
        process.compile_source(src)
        measured = process.describe_source(src, args.deployer_ref, sha)
        log(f"measuring {measured}")

        want = max([*args.hosts, args.mem_hosts if args.big_mb else 0])
        hosts = harness.start_hosts(want, key, label=args.label, log=log)
        bench = harness.Bench(work / "bench", key, hosts, parallel=args.parallel, deployer_src=src, log=log)
        try:
            bench.warm_up()
            results = []
            for latency in args.latency_ms:
                for n in args.hosts:
                    log(f"measuring {n} host(s), +{latency} ms each way")
                    results.append(harness.run_config(bench, artifact, n, latency, args.reps))

            memory = []
            if args.big_mb:
                log(f"generating a {args.big_mb:g} MB artifact (same files, larger binaries)")
                big = direct_artifact(Spec(target_mb=args.big_mb, text_files=args.files), work / "big")
                log(f"  {big.path.name}: {big.size / 2**20:.1f} MB")
                memory = harness.run_memory(
                    bench, [(f"{args.artifact_mb:g} MB", artifact), (f"{args.big_mb:g} MB", big)], args.mem_hosts
                )
                big.path.unlink()

            scale = None
            if args.scale_hosts:
                more = args.scale_hosts - len(bench.hosts)
                if more > 0:
                    bench.add_hosts(harness.start_hosts(more, key, label=args.label, prefix="scale", log=log))
                scale = harness.run_scale(bench, artifact, args.scale_hosts)
        finally:
            bench.close()
            sandbox.stop_hosts(bench.hosts)

        notes = [
            f"total benchmark time {time.monotonic() - started:.0f} s (host start-up and artifact generation included)",
            "redeploy = a second `deployer deploy` of the same artifact: the host already has it cached, so "
            "nothing is uploaded, but a new release is still extracted from the cache",
            "rollback = `deployer rollback` right after the linked redeploy (release 3 back to release 2)",
            "peak RSS = ru_maxrss of the deployer process itself, through /usr/bin/time (its VmHWM)",
            "every repetition deploys into a fresh deploy_to, removed from the hosts after it; /srv on the hosts "
            "is a tmpfs",
            (
                "every host reached at its container address, port 22: no docker-proxy between a client and sshd"
                if bench.direct == len(bench.hosts)
                else f"{bench.direct} of {len(bench.hosts)} hosts reached at their container address; the rest on "
                "127.0.0.1 through docker-proxy (a relay: its CPU and ACKs count in both contenders' times)"
            ),
            "hosts, proxies and both clients share the same 2-core machine: at 20+ hosts the run is CPU-bound "
            "for both contenders",
        ]
        if args.big_mb:
            notes.append(
                f"the {args.big_mb:g} MB artifact was written directly as tar.gz + json (same file count, "
                f"larger binaries) and deployed to {args.mem_hosts} hosts, not 20: "
                f"{args.big_mb:g} MB x 20 hosts is {args.big_mb * 20 / 1024:.0f} GB of transfer and "
                "disk writes on a 2-core machine"
            )
        command = "python -m benchmarks.run " + " ".join(
            shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
        )
        text = report.render(
            results,
            memory,
            scale,
            artifact=artifact,
            reps=args.reps,
            command=command.strip(),
            parallel=args.parallel,
            measured=measured,
            notes=notes,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # its own section: the other benchmarks' sections and hand-written ones stay as they are
    section.write_section(args.out, section.wrap("run", text), "run")
    print(text)
    log(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
