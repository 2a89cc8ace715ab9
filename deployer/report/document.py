"""The --json document (docs/result.schema.json): one per run, in every outcome, with a record per
host. snake_case keys, numbers as numbers, full digests, ISO UTC times, null for what is not known.
Pure: no printing, no I/O."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from deployer.errors import (
    BAD_INPUT,
    FAILED,
    GATE_REFUSED,
    HUNG_UP,
    INTERRUPTED,
    LOCKED,
    OK,
    PARTIAL,
    STORE,
    TERMINATED,
)
from deployer.plan.host_state import HostState

PHASES = ("lock", "check", "prepare", "switch", "finish")

OUTCOMES = {
    OK: "ok",
    FAILED: "failed",
    BAD_INPUT: "bad_input",
    LOCKED: "locked",
    GATE_REFUSED: "refused",
    PARTIAL: "partial",
    STORE: "store_unavailable",
    INTERRUPTED: "interrupted",
    TERMINATED: "interrupted",
    HUNG_UP: "interrupted",
}


class FoundDrift(Protocol):
    """What verify found on one host (engine/records.Drift)."""

    @property
    def checked(self) -> int: ...
    @property
    def manifest(self) -> bool: ...
    @property
    def modified(self) -> list[str]: ...
    @property
    def removed(self) -> list[str]: ...
    @property
    def added(self) -> list[str]: ...


class HostRecord(Protocol):
    """What the records read of one host's run (engine/fleet.HostRun): the engine hands its runs
    in, the report imports no flow."""

    @property
    def name(self) -> str: ...
    @property
    def release(self) -> int | str | None: ...
    @property
    def result(self) -> str: ...
    @property
    def step(self) -> str: ...
    @property
    def error(self) -> str: ...
    @property
    def times(self) -> dict[str, float]: ...
    @property
    def state(self) -> HostState | None: ...
    @property
    def drift(self) -> FoundDrift | None: ...
    @property
    def analysis(self) -> dict[str, object] | None: ...
    @property
    def canary_steps(self) -> list[dict[str, object]]: ...


@dataclass
class Outcome:
    """How a task ended: its per-host records, exit code and error (None when it succeeded)."""

    hosts: list = field(default_factory=list)
    exit_code: int = 0
    error: str | None = None
    stage: str | None = None
    extra: dict = field(default_factory=dict)


def document(task: str, exit_code: int, error: str | None, stage: str | None, hosts: list[dict], **extra) -> dict:
    return {
        "task": task,
        "result": OUTCOMES.get(exit_code, "failed"),
        "exit_code": exit_code,
        "error": error or None,
        "stage": stage,
        "hosts": hosts,
        **extra,
    }


def _text(value) -> str | None:
    return value if isinstance(value, str) and value else None


def _sha(value) -> str | None:
    """A full git sha, or None (another tool's revision may be anything)."""
    return value if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{40}", value) else None


def _time(value) -> str | None:
    """ISO 8601 UTC (…Z), or None when value is no time (another tool may record any text)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_records(runs: Sequence[HostRecord]) -> list[dict]:
    return [
        {
            "host": run.name,
            "result": run.result,
            "step": run.step,
            "release": run.release,
            "seconds": {p: round(run.times[p], 3) for p in PHASES if p in run.times},
            "error": run.error or None,
            **({"analysis": run.analysis} if run.analysis else {}),
            **({"canary_steps": run.canary_steps} if run.canary_steps else {}),
        }
        for run in runs
    ]


def _lock(lock) -> dict | None:
    if lock is None:
        return None
    return {
        "who": lock.who,
        "pid": lock.pid if isinstance(lock.pid, int) else None,
        "stage": lock.stage,
        "started": _time(lock.started),
    }


def status_records(runs: Sequence[HostRecord]) -> list[dict]:
    records: list[dict] = []
    for run in runs:
        st = run.state
        if st is None:
            records.append({"host": run.name, "error": run.error or "unreachable"})
            continue
        release = st.release(st.current)
        meta = release.meta if release else {}
        foreign = st.foreign_release(st.live) if isinstance(st.live, str) else None
        records.append(
            {
                "host": run.name,
                "current": st.live,
                "current_state": "ok" if st.live is not None else st.current_kind,
                "foreign": foreign is not None,
                "version": _text(meta.get("version")),
                "git_sha": _sha(foreign.revision if foreign else meta.get("git_sha")),
                "deployed_at": _time(foreign.time if foreign else meta.get("deployed_at")),
                "deployed_by": None if foreign else _text(meta.get("deployed_by")),
                "complete_releases": sum(1 for r in st.releases if r.complete),
                "foreign_releases": len(st.foreign),
                "lock": _lock(st.lock),
                "setup_drift": list(st.setup_drift),
                "error": None,
            }
        )
    return records


def releases_records(runs: Sequence[HostRecord]) -> list[dict]:
    records: list[dict] = []
    for run in runs:
        st = run.state
        if st is None:
            records.append({"host": run.name, "error": run.error or "unreachable"})
            continue
        rels = [
            {
                "release": r.number,
                "version": _text(r.meta.get("version")),
                "git_sha": _sha(r.meta.get("git_sha")),
                "deployed_at": _time(r.meta.get("deployed_at")),
                "complete": r.complete,
                "bad": r.bad,
                "rolled_back": r.rolled_back,
                "foreign": False,
                "current": r.number == st.current,
            }
            for r in st.releases
        ]
        rels += [
            {
                "release": f.name,
                "version": None,
                "git_sha": _sha(f.revision),
                "deployed_at": _time(f.time),
                "complete": None,
                "bad": False,
                "rolled_back": False,
                "foreign": True,
                "current": f.name == st.live,
            }
            for f in st.foreign
        ]
        records.append(
            {
                "host": run.name,
                "releases": rels,
                "leftover": list(st.strays),
                "ignored": [*st.ignored],
                "odd_names": st.odd_names,
                "error": None,
            }
        )
    return records


def check_records(runs: Sequence[HostRecord]) -> list[dict]:
    records: list[dict] = []
    for run in runs:
        st = run.state
        if st is None:
            records.append({"host": run.name, "ssh": False, "error": run.error or "unreachable"})
            continue
        records.append(
            {
                "host": run.name,
                "ssh": True,
                "user": st.user,
                "writable": st.writable,
                "deploy_to_exists": st.deploy_to_exists,
                "free_bytes": st.free_kb * 1024 if st.free_kb is not None else None,
                "missing_tools": list(st.missing_tools),
                "unfit_tools": [tool for tool, _ in st.unfit_tools],
                "sudo_missing": list(st.sudo_missing),
                "setup_drift": list(st.setup_drift),
                "current": st.live,
                "current_problem": st.current_problem(),
                "ignored": [*st.ignored],
                "odd_names": st.odd_names,
                "error": run.error or None,
            }
        )
    return records


def drift_records(runs: Sequence[HostRecord]) -> list[dict]:
    records: list[dict] = []
    for run in runs:
        found = run.drift
        result = run.result if found is not None else "failed"
        records.append(
            {
                "host": run.name,
                "result": result.lower().replace(" ", "_"),
                "files_checked": found.checked if found is not None and found.manifest else None,
                "modified": list(found.modified) if found else [],
                "removed": list(found.removed) if found else [],
                "added": list(found.added) if found else [],
                "error": run.error or None,
            }
        )
    return records


def artifact_records(items) -> list[dict]:
    def count(value):
        return value if isinstance(value, int) else None

    return [
        {
            "version": a.version,
            "git_sha": _sha(a.git_sha),
            "sha256": a.sha256,
            "size": a.size,
            "files": count(a.meta.get("file_count")),
            "built_at": _time(a.meta.get("built_at")),
            "built_by": _text(a.meta.get("built_by")),
            "dirty": bool(a.meta.get("dirty", False)),
        }
        for a in items
    ]


def inventory_records(hosts) -> list[dict]:
    return [
        {
            "host": h.name,
            "address": h.address,
            "port": h.port,
            "user": h.user,
            "roles": list(h.roles),
            "env_keys": [k for k, _ in h.env],
            "error": None,
        }
        for h in hosts
    ]


def diff_records(hosts, rows: list[dict]) -> list[dict]:
    """config.diff: each selected host with the keys that differ (values already masked)."""
    return [
        {
            "host": h.name,
            "changes": [
                {"key": r["key"], "change": r["change"], "on_host": r["on host"], "would_write": r["would write"]}
                for r in rows
                if r["host"] == h.name
            ],
            "error": None,
        }
        for h in hosts
    ]
