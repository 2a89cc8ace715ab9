"""Where the analysis' numbers come from, one check at a time: the access log on each host (one
remote command per host and log per check, a one-line summary back), Prometheus and any HTTP JSON
endpoint (from this machine), a command (on each host, or here). A source that cannot be reached
or gives no number is a Reading with an error: the judge fails the check on it, never passes."""

from __future__ import annotations

import json
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from deployer.config.analysis import AnalysisSettings, Metric
from deployer.engine.fleet import HostRun, message
from deployer.errors import DeployerError
from deployer.plan.analysis import Reading
from deployer.plan.paths import Paths
from deployer.redact import redact
from deployer.remote import access_log
from deployer.remote import analysis as remote_analysis
from deployer.ssh.types import Result

FETCH_TIMEOUT = 10  # seconds per HTTP request or local command
MAX_ANSWER = 1 << 20  # bytes of an HTTP answer read


class SourceError(DeployerError):
    """A metric's source gave no number: unreachable, refused, not a number (one line)."""


RunOn = Callable[[HostRun, str], Result]  # one script on one host (connecting first if needed)


@dataclass
class Context:
    """What the placeholders {host} {stage} {release} stand for, per host."""

    stage: str
    releases: dict[str, str] = field(default_factory=dict)  # host name -> its live release

    def values(self, host: str) -> dict[str, str]:
        return {"host": host, "stage": self.stage, "release": self.releases.get(host, "")}


def fill(template: str, values: dict[str, str], quote: Callable[[str], str]) -> str:
    """{host} {stage} {release} replaced by their values through `quote` (no other braces touched:
    PromQL's label matchers keep theirs)."""
    for name, value in values.items():
        template = template.replace("{" + name + "}", quote(value))
    return template


def promql_string(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def url_value(value: str) -> str:
    return urllib.parse.quote(value, safe="")


class Sources:
    """Every metric of `settings` read on `runs` once per check."""

    def __init__(self, settings: AnalysisSettings, run_on: RunOn, context: Context, paths: Paths, parallel: int = 10):
        self.metrics = settings.metrics
        self.paths = paths  # remote commands run in current
        self.run_on = run_on
        self.context = context
        self.parallel = max(1, parallel)
        self.marks: dict[tuple[str, str], access_log.Mark] = {}  # (host, log) -> next window's start
        self.notes: list[str] = []  # rotations seen, unparsed lines skipped: for the output
        self._lock = threading.Lock()

    @property
    def logs(self) -> list[tuple[str, bool]]:
        """Each access log read, and whether any metric needs its request times."""
        found: dict[str, bool] = {}
        for m in self.metrics:
            if m.provider == "access_log":
                found[m.path] = found.get(m.path, False) or m.log_format == "deployer"
        return list(found.items())

    def start(self, runs: Sequence[HostRun]) -> dict[str, str]:
        """Mark where each host's logs are now: the first window starts there. Errors by host."""
        errors: dict[str, str] = {}

        def one(run: HostRun) -> None:
            for log, timed in self.logs:
                try:
                    win = access_log.parse(log, self._remote(run, access_log.window(log, None, timed)))
                    self.marks[(run.name, log)] = win.mark
                except Exception as exc:  # noqa: BLE001 - a host's failure is a reading's error
                    errors[run.name] = redact(message(exc))

        if self.logs:
            self._each(runs, one)
        return errors

    def read(self, runs: Sequence[HostRun]) -> dict[str, dict[str, Reading]]:
        """One check: metric name -> host name -> reading."""
        out: dict[str, dict[str, Reading]] = {m.name: {} for m in self.metrics}

        def one(run: HostRun) -> None:
            windows: dict[str, access_log.Window | str] = {}
            for log, timed in self.logs:
                windows[log] = self._window(run, log, timed)
            for m in self.metrics:
                reading = self._reading(m, run, windows)
                with self._lock:
                    out[m.name][run.name] = reading

        self._each(runs, one)
        return out

    # -- one host ---------------------------------------------------------------------------------

    def _window(self, run: HostRun, log: str, timed: bool) -> access_log.Window | str:
        mark = self.marks.get((run.name, log))
        try:
            win = access_log.parse(log, self._remote(run, access_log.window(log, mark, timed)))
        except Exception as exc:  # noqa: BLE001
            return redact(message(exc))
        self.marks[(run.name, log)] = win.mark
        if mark is None:
            return f"no window started in {log} on this host"
        with self._lock:
            if win.rotated:
                self.notes.append(f"{run.name}: {win.rotated}")
            if win.unparsed:
                self.notes.append(f"{run.name}: {win.unparsed} line(s) of {log} not in the combined shape, skipped")
        return win

    def _reading(self, m: Metric, run: HostRun, windows: dict[str, access_log.Window | str]) -> Reading:
        try:
            if m.provider == "access_log":
                win = windows[m.path]
                if isinstance(win, str):
                    return Reading(error=win)
                return Reading(win.measure(m.measure), win.requests)
            values = self.context.values(run.name)
            if m.provider == "prometheus":
                query = fill(m.query, values, promql_string)
                url = m.url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": query})
                return Reading(prometheus_value(fetch(fill(url, values, url_value))))
            if m.provider == "http":
                return Reading(json_number(fetch(fill(m.url, values, url_value)), m.json_path))
            command = remote_analysis.command_text(m.command, values)
            if m.local:
                return Reading(the_number(run_local(command)))
            return Reading(the_number(self._remote(run, remote_analysis.metric_command(self.paths, command))))
        except Exception as exc:  # noqa: BLE001 - every failure is this reading's error
            return Reading(error=redact(message(exc)))

    def _remote(self, run: HostRun, script: str) -> str:
        result = self.run_on(run, script)
        if result.exit_code != 0:
            said = result.stderr.strip() or result.stdout.strip()
            raise SourceError(said[-300:] if said else f"exit {result.exit_code}")
        return result.stdout

    def _each(self, runs: Sequence[HostRun], fn: Callable[[HostRun], None]) -> None:
        with ThreadPoolExecutor(
            max_workers=min(self.parallel, max(1, len(runs))), thread_name_prefix="analysis"
        ) as pool:
            list(pool.map(fn, runs))


# -- the numbers ----------------------------------------------------------------------------------


def fetch(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT) as answer:  # noqa: S310 - http(s) only (config)
            return bytes(answer.read(MAX_ANSWER))
    except urllib.error.HTTPError as exc:
        raise SourceError(f"{_shown(url)} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SourceError(f"{_shown(url)} unreachable: {reason}") from None


def _shown(url: str) -> str:
    """The URL without its query and credentials, for a message."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}{parts.path}"


def prometheus_value(body: bytes) -> float:
    """An instant query's answer: the first value of a vector, or a scalar."""
    try:
        doc = json.loads(body)
        data = doc["data"]
        if doc.get("status") != "success":
            raise SourceError(f"prometheus: {doc.get('error', 'query failed')}")
        result = data["result"]
        if data["resultType"] == "vector":
            if not result:
                raise SourceError("prometheus: the query returned no series (empty vector)")
            return float(result[0]["value"][1])
        if data["resultType"] == "scalar":
            return float(result[1])
    except (KeyError, IndexError, TypeError, json.JSONDecodeError) as exc:
        raise SourceError(f"prometheus: not an instant query's answer ({type(exc).__name__})") from None
    raise SourceError(f"prometheus: a {data['resultType']} is not a number (use an instant vector)")


def json_number(body: bytes, path: str) -> float:
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SourceError("the answer is not JSON") from None
    for part in path.split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise SourceError(f"no {path} in the JSON answer")
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError
        return float(value)
    except ValueError:
        raise SourceError(f"{path} is not a number: {json.dumps(value)[:80]}") from None


def the_number(text: str) -> float:
    """stdout or a JSON value as one number ('NaN' is one: the judge fails it)."""
    try:
        return float(text.strip())
    except ValueError:
        raise SourceError(f"not a number: {text.strip()[:80]!r}") from None


def run_local(command: str) -> str:
    proc = subprocess.run(  # noqa: S602 - the user's own command from hosts.toml, like a local hook
        command, shell=True, capture_output=True, text=True, timeout=FETCH_TIMEOUT, stdin=subprocess.DEVNULL
    )
    if proc.returncode != 0:
        raise SourceError(
            f"local command exit {proc.returncode}: {(proc.stderr.strip() or proc.stdout.strip())[-300:]}"
        )
    return proc.stdout
