"""Two deployer revisions, interleaved on the same hosts: is a change within noise?

    python -m benchmarks.compare --before da6044e --hosts 20 --reps 10 --out FILE

Separate `benchmarks.run` invocations for before and after meet different machine states (another
job starts, the page cache is cold): their difference is often larger than the one being asked
about. Here every repetition runs the floor, `before` and `after` back to back on the same hosts
(the order rotating each repetition), each a first deploy into fresh directories. The report gives
each contender's median deploy/floor and the per-repetition difference of after against before,
whose spread says how much of it is noise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import harness, process
from benchmarks.workload import Spec, git_artifact
from deployer.sandbox import hosts as sandbox

CONTENDERS = ("floor", "before", "after")


@dataclass
class Sample:
    seconds: float
    client_cpu: float
    host_cpu: float | None
    commands: int


@dataclass
class Samples:
    runs: dict[str, list[Sample]] = field(default_factory=lambda: {c: [] for c in CONTENDERS})

    def ratios(self, who: str) -> list[float]:
        return [s.seconds / f.seconds for s, f in zip(self.runs[who], self.runs["floor"], strict=True)]

    def median(self, who: str, attr: str) -> float:
        values = [getattr(s, attr) for s in self.runs[who]]
        return statistics.median(v for v in values if v is not None)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", required=True, help="git revision measured as `before`")
    p.add_argument("--after", default=None, help="git revision measured as `after` (default: the work tree)")
    p.add_argument("--hosts", type=int, default=20)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--out", type=Path, default=None, help="also write the Markdown report here")
    return p.parse_args(argv)


def measure(args: argparse.Namespace, work: Path, log: harness.Log) -> tuple[Samples, str]:
    key = sandbox.ensure_client_key(work / "key")
    artifact = git_artifact(Spec(), work / "artifact")
    sources: dict[str, Path | None] = {}
    described = {}
    for who, ref in (("before", args.before), ("after", args.after)):
        src, sha = process.snapshot(ref, work / f"src-{who}") if ref else (None, None)
        process.compile_source(src)
        sources[who] = src
        described[who] = process.describe_source(src, ref, sha)
    hosts = harness.start_hosts(args.hosts, key, log=log)
    benches = {who: harness.Bench(work / who, key, hosts, deployer_src=src, log=log) for who, src in sources.items()}
    samples = Samples()
    try:
        for bench in benches.values():
            bench.warm_up()
        targets = {who: bench.targets(args.hosts) for who, bench in benches.items()}
        for rep in range(args.reps):
            for who in CONTENDERS[rep % 3 :] + CONTENDERS[: rep % 3]:
                samples.runs[who].append(one(benches, targets, who, rep, artifact))
            benches["after"].clean(targets["after"])
            benches["before"].clean(targets["before"])
            log(
                f"  rep {rep + 1}/{args.reps}: "
                + "  ".join(f"{who} {samples.runs[who][-1].seconds:.2f}s" for who in CONTENDERS)
            )
    finally:
        for bench in benches.values():
            bench.close()
        sandbox.stop_hosts(hosts)
    return samples, f"before: {described['before']}; after: {described['after']}"


def one(benches: dict[str, harness.Bench], targets: dict, who: str, rep: int, artifact) -> Sample:
    """One first deploy into fresh directories: the floor's (on `after`'s bench) or a contender's."""
    bench = benches["after" if who == "floor" else who]
    hosts = targets["after" if who == "floor" else who]
    if who == "floor":
        to = bench.deploy_dir("floor", f"c{rep}")
        proc, cmds = bench.measured(hosts, lambda: bench.floor(hosts, to, 1, artifact))
    else:
        config = bench.config(hosts, bench.deploy_dir("bench", f"c{rep}"))
        proc, cmds = bench.measured(hosts, lambda: bench.cli(config, "deploy", "--artifact", str(artifact.path)))
    return Sample(proc.seconds, proc.cpu_seconds, proc.host_cpu_seconds, sum(cmds))


def render(samples: Samples, args: argparse.Namespace, measured: str) -> str:
    n = args.hosts
    before, after = samples.ratios("before"), samples.ratios("after")
    diffs = sorted(a - b for a, b in zip(after, before, strict=True))
    lines = [
        f"- {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; `python -m benchmarks.compare --before "
        f"{args.before}{' --after ' + args.after if args.after else ''} --hosts {n} --reps {args.reps}`; {measured}",
        "- every repetition: the floor, before and after back to back on the same hosts (order rotating), "
        "each a first deploy into fresh directories; medians",
        "",
        "| contender | deploy s | deploy/floor | range | client CPU s | host CPU s | commands/host |",
        "|---|---|---|---|---|---|---|",
    ]
    for who in CONTENDERS:
        ratios = samples.ratios(who)
        lines.append(
            f"| {who} | {samples.median(who, 'seconds'):.2f} | {statistics.median(ratios):.2f} | "
            f"{min(ratios):.2f}-{max(ratios):.2f} | {samples.median(who, 'client_cpu'):.2f} | "
            f"{samples.median(who, 'host_cpu'):.1f} | {samples.median(who, 'commands') / n:g} |"
        )
    lines += [
        "",
        f"after - before, deploy/floor per repetition: median {statistics.median(diffs):+.3f}, "
        f"range {diffs[0]:+.3f} to {diffs[-1]:+.3f}; before's own spread (max - min): "
        f"{max(before) - min(before):.3f}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    sandbox.ensure_image(log=print)
    with tempfile.TemporaryDirectory(prefix="deployer-compare-") as tmp:
        samples, measured = measure(args, Path(tmp), print)
    text = render(samples, args, measured)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
