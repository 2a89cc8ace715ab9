"""Delta releases against the floor, and what they send: writes its section of results.md.

    .venv/bin/python -m benchmarks.delta [--hosts 5,20] [--reps 3] [--uplink-mbit 0,50] [--skip-disk]

Artifacts (one git repo, built with build_artifact into one store): the bench app (A), A with one
2 KB text file rewritten (one file), that with 10 % of its files changed (ten %). Per
configuration, each repetition on fresh deploy directories: the floor pushes the one-file
artifact in full; the deployer deploys A (a first deploy: the full artifact), then the one-file
change and the 10 % change (deltas against the release before). `--uplink-mbit` > 0 puts every
host behind a NetProxy sharing one bandwidth cap (the operator's uplink), for both contenders.
Bytes are what each host's network interface received during the run (its container's
eth0 rx_bytes: SSH and TCP/IP overhead included). Commands are counted from sshd's log.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import gzip
import os
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from deployer.sandbox import hosts as sandbox  # noqa: E402

from . import harness  # noqa: E402
from .netproxy import NetProxy, Uplink  # noqa: E402
from .process import Proc, compile_source  # noqa: E402
from .records import median  # noqa: E402
from .section import markers, write_section  # noqa: E402
from .workload import Spec, _git, git_artifact  # noqa: E402

HERE = Path(__file__).resolve().parent
BEGIN, END = markers("delta")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def changed_build(repo: Path, out: Path, paths: list[str], seed: int, label: str):
    """Rewrite `paths` in the repo (text: new lines appended and one rewritten; binary: new
    random bytes of the same size), commit, build; returns (artifact, gzip size of the new files)."""
    from deployer.artifact.build import build_artifact

    rng = random.Random(seed)
    raw = b""
    for rel in paths:
        p = repo / rel
        old = p.read_bytes()
        if rel.endswith((".png", ".woff2", ".so", ".bin")):
            new = rng.randbytes(len(old))
        else:
            new = old[: len(old) // 2] + f"\n# {label} {rng.random()}\n".encode() + old[len(old) // 2 :]
        p.write_bytes(new)
        raw += new
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", label)
    art = build_artifact(repo, "benchapp", out, log=lambda m: None)
    return art, len(gzip.compress(raw, 9))


@dataclass
class Row:
    hosts: int
    uplink_mbit: int
    floor: list[float] = field(default_factory=list)
    first: list[float] = field(default_factory=list)
    one: list[float] = field(default_factory=list)
    ten: list[float] = field(default_factory=list)
    linked: list[float] = field(default_factory=list)  # the ten % artifact again, hard-linked: sends, copies nothing
    bytes_floor: list[int] = field(default_factory=list)  # per host, flattened
    bytes_first: list[int] = field(default_factory=list)
    bytes_one: list[int] = field(default_factory=list)
    bytes_ten: list[int] = field(default_factory=list)
    bytes_linked: list[int] = field(default_factory=list)
    cmds_one: list[int] = field(default_factory=list)
    cmds_ten: list[int] = field(default_factory=list)
    deltas_one: list[int] = field(default_factory=list)  # hosts that said "against release"
    deltas_ten: list[int] = field(default_factory=list)

    def med(self, name: str) -> float:
        return float(median(getattr(self, name)) or 0)


def rx(bench: harness.Bench, hosts) -> list[int]:
    def one(h) -> int:
        out = (
            bench._docker.containers.get(h.container_id)
            .exec_run(["cat", "/sys/class/net/eth0/statistics/rx_bytes"])
            .output
        )
        return int(out.strip() or 0)

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, hosts))


def capped_targets(bench: harness.Bench, n: int, uplink: Uplink) -> tuple[list, list[NetProxy]]:
    """The first n hosts behind proxies that share `uplink`; their keys pinned for the proxy ports."""
    proxies, out = [], []
    for h in bench.hosts[:n]:
        proxy = NetProxy((h.host, h.port), uplink=uplink).start()
        bench._proxies[(h.container_id, -proxy.port)] = proxy
        proxies.append(proxy)
        out.append(dataclasses.replace(h, host="127.0.0.1", port=proxy.port))
    bench._write_known_hosts()
    return out, proxies


def run_config(bench: harness.Bench, arts: dict, n: int, mbit: int, reps: int) -> Row:
    row = Row(n, mbit)
    uplink = Uplink(mbit * 1e6 / 8) if mbit else None
    targets, proxies = capped_targets(bench, n, uplink) if uplink else (bench.targets(n), [])
    try:
        for rep in range(reps):
            one_rep(bench, row, arts, targets, f"delta-n{n}-u{mbit}-r{rep}", rep % 2 == 0, not mbit)
            log(
                f"  {n} host(s), uplink {mbit or 'uncapped'} Mbit/s, rep {rep + 1}/{reps}: floor {row.floor[-1]:.2f}s "
                f"first {row.first[-1]:.2f}s one-file {row.one[-1]:.2f}s ten % {row.ten[-1]:.2f}s; "
                f"bytes/host one-file {max(row.bytes_one[-n:]) / 1024:.0f} KB"
            )
    finally:
        for p in proxies:
            p.stop()
        bench._proxies = {k: v for k, v in bench._proxies.items() if v not in proxies}
    return row


def one_rep(
    bench: harness.Bench, row: Row, arts: dict, targets: list, tag: str, floor_first: bool, uncapped: bool
) -> None:
    real = bench.hosts[: len(targets)]
    config = bench.config(targets, bench.deploy_dir("bench", tag))

    def measure(kind: str, action) -> Proc:
        before = rx(bench, real)
        proc, cmds = bench.measured(real, action)
        after = rx(bench, real)
        getattr(row, kind).append(proc.seconds)
        getattr(row, f"bytes_{kind}").extend(a - b for a, b in zip(after, before, strict=True))
        if hasattr(row, f"cmds_{kind}"):
            getattr(row, f"cmds_{kind}").extend(cmds)
        return proc

    def floor() -> None:
        measure("floor", lambda: bench.floor(targets, bench.deploy_dir("floor", tag), 1, arts["one"]))

    def deployer() -> None:
        measure("first", lambda: bench.cli(config, "deploy", "--artifact", str(arts["base"].path)))
        for kind in ("one", "ten"):
            proc = measure(kind, lambda k=kind: bench.cli(config, "deploy", "--artifact", str(arts[k].path)))
            getattr(row, f"deltas_{kind}").append(proc.stdout.count(" against release "))
        if not uncapped:
            return
        # what a deploy costs when it sends and copies nothing: the same artifact again, linked
        # from a release that has its tarball cached (a full upload first, not timed)
        bench.cli(config, "deploy", "--full", "--artifact", str(arts["ten"].path))
        linked = bench.config(targets, bench.deploy_dir("bench", tag), hardlink=True)
        proc = measure("linked", lambda: bench.cli(linked, "deploy", "--artifact", str(arts["ten"].path)))
        if proc.stdout.count("linked from release") < len(targets):
            raise SystemExit(f"the linked redeploy did not link on every host:\n{proc.stdout}")

    for step in (floor, deployer) if floor_first else (deployer, floor):
        step()
    bench.clean(real)


def disk_use(bench: harness.Bench, chain: list, full: bool) -> int:
    """KB under deploy_to on one host after deploying the chain of artifacts (5 releases)."""
    h = bench.hosts[0]
    tag = f"disk-{'full' if full else 'delta'}"
    deploy_to = bench.deploy_dir("bench", tag)
    config = bench.config([h], deploy_to)
    for art in chain:
        bench.cli(config, "deploy", "--artifact", str(art.path), *(["--full"] if full else []))
    code, out = sandbox.exec_root(h, f"du -sk {deploy_to} | cut -f1")
    bench.clean([h])
    return int(out.strip() or 0)


def render(rows: list[Row], arts: dict, gz: dict, disk: tuple[int, int] | None, reps: int, command: str) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    base = arts["base"]
    lines = [
        BEGIN,
        "## Delta releases",
        "",
        f"- date: {when}; command: `{command}`; {reps} repetitions per row, interleaved, medians; "
        f"machine and code as above unless rerun",
        f"- artifact: {base.size / 2**20:.1f} MB, {base.meta['file_count']} files; one-file change: one text file "
        f"rewritten ({gz['one_raw']} bytes); ten %: {gz['ten_files']} files changed, their new content "
        f"{gz['ten'] / 1024:.0f} KB gzipped (level 9)",
        "- `first`: deploy of the base artifact to empty hosts (full upload); `one-file`, `ten %`: the next "
        "deploys, deltas against the release before; the floor pushes the one-file artifact in full",
        "- `linked`: the ten % artifact deployed again with `app.hardlink_releases`: the new release is "
        "hard-linked from the last one (a full upload of it first, untimed), nothing sent or copied: what a "
        "deploy costs here beyond its transfer; measured without an uplink cap only",
        "- bytes per host: what the host's interface received during the run (SSH, TCP/IP included), "
        "largest host; commands: remote commands per host (range)",
        "",
        "| hosts | uplink Mbit/s | floor s | first s | one-file s | ten % s | first/floor | one-file/floor | "
        "ten %/floor | floor KB/host | first KB/host | one-file KB/host | ten % KB/host | ten % / gzip of changed "
        "| cmds/host one-file | hosts on delta | linked s | linked/floor |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        floor = r.med("floor") or 1
        lines.append(
            f"| {r.hosts} | {r.uplink_mbit or 'none'} | {r.med('floor'):.2f} | {r.med('first'):.2f} | "
            f"{r.med('one'):.2f} | {r.med('ten'):.2f} | {r.med('first') / floor:.2f} | {r.med('one') / floor:.3f} | "
            f"{r.med('ten') / floor:.3f} | {max(r.bytes_floor) / 1024:.0f} | {max(r.bytes_first) / 1024:.0f} | "
            f"{max(r.bytes_one) / 1024:.0f} | {max(r.bytes_ten) / 1024:.0f} | {max(r.bytes_ten) / gz['ten']:.2f} | "
            f"{min(r.cmds_one)}-{max(r.cmds_one)} | {min(r.deltas_one)}/{r.hosts} | "
            + (f"{r.med('linked'):.2f} | {r.med('linked') / floor:.3f} |" if r.linked else "- | - |")
        )
    if disk:
        lines += [
            "",
            f"Disk use for 5 releases on one host (`du -sk deploy_to`: releases and the artifact cache): "
            f"full uploads {disk[0] / 1024:.0f} MB, deltas {disk[1] / 1024:.0f} MB (a release made from a "
            "delta keeps no tarball in the cache; every release is its own copy either way).",
        ]
    lines += ["", END, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.delta", description=__doc__.split("\n\n")[0])
    p.add_argument("--hosts", default="5", help="host counts (default 5)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--uplink-mbit", default="0,50", help="shared uplink caps, 0 = none (default 0,50)")
    p.add_argument("--skip-disk", action="store_true")
    p.add_argument("--out", type=Path, default=HERE / "results.md")
    args = p.parse_args(argv)
    hosts = [int(x) for x in args.hosts.split(",")]
    caps = [int(x) for x in args.uplink_mbit.split(",")]
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    with tempfile.TemporaryDirectory(prefix="deployer-delta-bench-") as tmp:
        work = Path(tmp)
        sandbox.ensure_image(log=log)
        key = sandbox.ensure_client_key(work / "key")
        log("building the artifacts")
        base = git_artifact(Spec(), work / "small")
        repo, store = work / "small" / "repo", work / "small" / "artifacts"
        files = sorted(base.manifest)
        text = [f for f in files if f.endswith(".py") and 1500 < (repo / f).stat().st_size < 4000]
        one, one_gz = changed_build(repo, store, text[:1], 1, "one file")
        ten_paths = [f for f in files if (repo / f).is_file() and not (repo / f).is_symlink()][::10]
        ten, ten_gz = changed_build(repo, store, ten_paths, 2, "ten percent")
        arts = {"base": base, "one": one, "ten": ten}
        gz = {"one_raw": (repo / text[0]).stat().st_size, "ten": ten_gz, "ten_files": len(ten_paths)}
        compile_source(None)
        hs = harness.start_hosts(max(hosts), key, log=log)
        bench = harness.Bench(work / "bench", key, hs, log=log)
        rows, disk = [], None
        try:
            bench.warm_up()
            for mbit in caps:
                for n in hosts:
                    log(f"measuring {n} host(s), uplink {mbit or 'uncapped'}")
                    rows.append(run_config(bench, arts, n, mbit, args.reps))
            if not args.skip_disk:
                more = [changed_build(repo, store, text[i : i + 1], 10 + i, f"chain {i}")[0] for i in (1, 2)]
                chain = [base, one, ten, *more]
                disk = (disk_use(bench, chain, True), disk_use(bench, chain, False))
        finally:
            bench.close()
            sandbox.stop_hosts(bench.hosts)
        command = "python -m benchmarks.delta " + " ".join(argv if argv is not None else sys.argv[1:])
        section = render(rows, arts, gz, disk, args.reps, command.strip())
    write_section(args.out, section, "delta")
    print(section)
    return 0


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    log(f"done in {time.monotonic() - started:.0f}s")
    sys.exit(code)
