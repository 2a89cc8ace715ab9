"""Canary analysis on hosts: mark where each window starts, wait an interval, read every metric
(engine.analysis_sources), judge the check (plan.analysis), print one line, until the tally
decides. `live` is `deployer analyze`: the same loop against the live release, read-only."""

from __future__ import annotations

import posixpath
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from deployer.config.analysis import AnalysisSettings
from deployer.config.settings import Host, Stage
from deployer.engine.analysis_sources import Context, Sources
from deployer.engine.fleet import HostRun, message
from deployer.engine.session import Session
from deployer.plan.analysis import FAIL, Check, Reading, Tally, judge_check, number
from deployer.redact import redact
from deployer.remote import analysis as remote_analysis
from deployer.report.output import Output
from deployer.ssh.types import Result

REMOTE_TIMEOUT = 60  # seconds for one host's reading (a log window is summarised in well under that)


@dataclass
class Analysis:
    """How an analysis ended: every check, and the verdict (PASS or FAIL)."""

    verdict: str
    checks: list[Check]
    canary: list[str]
    baseline: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.verdict == FAIL

    def reason(self) -> str:
        """The metric that failed it, with both values: for the error line and the notification."""
        for check in reversed(self.checks):
            m = check.failing
            if m is not None:
                said = f"check {check.number}: {m.reason or m.metric + ' ' + check.verdict}"
                if m.canary is None:
                    return said
                base = f", baseline {number(m.baseline, m.unit)}" if m.baseline is not None else ""
                return f"{said} (canary {number(m.canary, m.unit)}{base})"
        return ""

    def record(self) -> dict[str, object]:
        failing = next((c.failing for c in reversed(self.checks) if c.failing), None)
        return {
            "verdict": self.verdict,
            "canary": self.canary,
            "baseline": self.baseline,
            "checks": [c.record() for c in self.checks],
            "failing": None if failing is None else failing.record(),
        }


def run(
    settings: AnalysisSettings,
    sources: Sources,
    canary: Sequence[HostRun],
    baseline: Sequence[HostRun],
    say: Callable[[str], None],
    wait: Callable[[float], None],
    before: Mapping[str, Mapping[str, Reading]] | None = None,
) -> Analysis:
    """Checks until the tally decides (bounded: plan.analysis.Tally). `wait(seconds)` sleeps
    between checks (a deploy renews its lock there and raises when it must stop). `before`
    (metric -> name -> reading): fixed readings that are the baseline when no host is."""
    runs = [*canary, *baseline]
    names, base = [r.name for r in canary], [r.name for r in baseline]
    fixed = {m: dict(got) for m, got in (before or {}).items()}
    base += sorted({name for got in fixed.values() for name in got})
    sources.start(runs)  # a host that could not be marked reads "no window started": its check fails
    tally = Tally(settings)
    notes: list[str] = []
    while tally.verdict is None:
        wait(settings.interval)
        readings = sources.read(runs)
        for metric, got in fixed.items():
            readings.setdefault(metric, {}).update(got)
        check = judge_check(settings, readings, names, base, tally.next_number, tally.planned)
        say(check.line())
        for note in sources.notes:
            say(f"  note: {note}")
        notes.extend(sources.notes)
        sources.notes.clear()
        tally.add(check)
    return Analysis(tally.verdict, tally.checks, names, base, notes)


def sleeper(cancel: threading.Event, alive: Callable[[], None] = lambda: None) -> Callable[[float], None]:
    """wait(seconds) in short steps: `alive()` between them (may raise), Ctrl-C noticed at once."""

    def wait(seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            alive()
            if cancel.wait(min(left, 0.5)):
                raise KeyboardInterrupt
        alive()

    return wait


def run_on(session: Session) -> Callable[[HostRun, str], Result]:
    """One script on one host through the session's connection (opened when missing)."""

    def one(run: HostRun, script: str) -> Result:
        if run.conn is None or not run.conn.alive:
            session.connect(run)
        assert run.conn is not None
        return run.conn.run(script, cancel=session.fleet.cancel, timeout=REMOTE_TIMEOUT)

    return one


def live(stage: Stage, hosts: tuple[Host, ...], out: Output, parallel: int, settings: AnalysisSettings) -> Analysis:
    """`deployer analyze`: the metrics against the live release now, read-only (no lock, no
    change). Hosts on different releases: those on the newest are judged against the others."""
    with Session(stage, hosts, out, parallel, action="analyze") as session:
        on = run_on(session)
        releases: dict[str, str] = {}
        unread: dict[str, str] = {}
        script = remote_analysis.live_release(session.paths)

        def release_of(run: HostRun) -> None:
            try:
                target = on(run, script).stdout.strip()
                releases[run.name] = posixpath.basename(target)
            except Exception as exc:  # noqa: BLE001 - named below; its readings fail the checks
                unread[run.name] = redact(message(exc))

        session.fleet.each("analyze", release_of)
        for name, why in unread.items():
            out.say(f"{name}: {why}")
        canary, baseline = split(session.runs, releases)
        canary += [r for r in session.runs if r.name in unread]  # their readings fail the checks
        shown = ", ".join(f"{r.name} (release {releases.get(r.name) or 'none'})" for r in canary)
        out.say(
            f"analysis: {len(settings.metrics)} metric(s) on {shown}"
            + (f" against baseline {', '.join(r.name for r in baseline)}" if baseline else "")
            + f", every {settings.interval}s, {settings.checks} check(s) to pass"
        )
        sources = Sources(settings, on, Context(stage.name, releases), session.paths, parallel)
        return run(settings, sources, canary, baseline, out.say, sleeper(session.fleet.cancel))


def split(runs: Sequence[HostRun], releases: dict[str, str]) -> tuple[list[HostRun], list[HostRun]]:
    """(canary, baseline): the hosts on the newest release, the hosts on an older one."""

    def rank(name: str) -> int:
        value = releases.get(name, "")
        return int(value) if value.isdigit() else -1

    newest = max((rank(r.name) for r in runs), default=-1)
    canary = [r for r in runs if rank(r.name) == newest]
    return canary, [r for r in runs if rank(r.name) != newest and rank(r.name) >= 0]
