"""Per-host records for the --json document, and the table rows derived from them (one shaping:
a table shows what the JSON says). Pure: no printing, no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from deployer.engine.fleet import HostRun
from deployer.remote.state import LockInfo

PHASES = ("lock", "check", "prepare", "switch", "finish")


def run_rows(records: list[dict]) -> list[dict]:
    """Table rows of deploy/rollback records (run_records)."""
    rows = []
    for rec in records:
        row = {
            "host": rec["host"],
            "result": rec["result"],
            "step": rec["step"],
            "release": rec["release"] if rec["release"] is not None else "",
        }
        for phase, seconds in rec["seconds"].items():
            row[f"{phase} s"] = f"{seconds:.2f}"
        row["error"] = rec["error"] or ""
        rows.append(row)
    return rows


def run_headers(rows: list[dict]) -> list[str]:
    headers = ["host", "result", "step", "release"]
    headers += [f"{p} s" for p in PHASES if any(f"{p} s" in r for r in rows)]
    return headers + ["error"]


def _short(sha) -> str:
    return sha[:8] if isinstance(sha, str) else ""


def _unreached(rec: dict) -> bool:
    """A host whose state could not be read: its record holds the host and the error only."""
    return "current" not in rec


def status_rows(records: list[dict]) -> list[dict]:
    """Table rows of status records (status_records)."""
    rows: list[dict] = []
    for rec in records:
        if _unreached(rec):
            rows.append({"host": rec["host"], "current": "?", "error": rec["error"]})
            continue
        state = rec["current_state"]
        current = (
            rec["current"] if rec["current"] is not None else ("none" if state == "absent" else f"BROKEN ({state})")
        )
        foreign = rec["foreign"]
        rows.append(
            {
                "host": rec["host"],
                "current": f"{current} (foreign)" if foreign else current,
                "version": rec["version"] or "",
                "git sha": _short(rec["git_sha"]),
                "deployed at": rec["deployed_at"] or "",
                "by": "another tool" if foreign else rec["deployed_by"] or "",
                "releases": rec["complete_releases"],
                "foreign": rec["foreign_releases"],
                "lock": _describe(rec["lock"]),
            }
        )
    if not any(row.get("foreign") for row in rows):  # a column only where another tool was
        for row in rows:
            row.pop("foreign", None)
    return rows


def _describe(lock: dict | None) -> str:
    if lock is None:
        return ""
    return LockInfo(who=lock["who"], pid=lock["pid"], stage=lock["stage"], started=lock["started"] or "").describe()


def releases_rows(records: list[dict]) -> list[dict]:
    """Table rows of releases records (releases_records): one per release, leftover and ignored name."""
    rows: list[dict] = []
    for rec in records:
        host = rec["host"]
        if "releases" not in rec:
            rows.append({"host": host, "N": "?", "state": rec["error"]})
            continue
        for rel in rec["releases"]:
            current = "<- current" if rel["current"] else ""
            if rel["foreign"]:
                rows.append(
                    {
                        "host": host,
                        "N": rel["release"],
                        "git sha": _short(rel["git_sha"]),
                        "deployed at": rel["deployed_at"] or "",
                        "complete": "?",
                        "state": "foreign",
                        "current": current,
                    }
                )
                continue
            flags = [] if rel["complete"] else ["incomplete"]
            flags += ["bad"] if rel["bad"] else []
            flags += ["rolled back"] if rel["rolled_back"] else []
            rows.append(
                {
                    "host": host,
                    "N": rel["release"],
                    "version": rel["version"] or "",
                    "git sha": _short(rel["git_sha"]),
                    "deployed at": rel["deployed_at"] or "",
                    "complete": "yes" if rel["complete"] else "no",
                    "state": ", ".join(flags) or "ok",
                    "current": current,
                }
            )
        for stray in rec["leftover"]:
            rows.append({"host": host, "N": stray, "complete": "no", "state": "leftover temp dir"})
        for name in rec["ignored"]:
            rows.append({"host": host, "N": name, "complete": "?", "state": "ignored: not a release number"})
        if rec["odd_names"]:
            rows.append(
                {
                    "host": host,
                    "N": "?",
                    "complete": "?",
                    "state": f"ignored: {rec['odd_names']} name(s) with characters outside A-Z a-z 0-9 . _ -",
                }
            )
    return rows


def check_rows(records: list[dict]) -> list[dict]:
    """Table rows of check records (check_records)."""
    rows: list[dict] = []
    for rec in records:
        if not rec["ssh"]:
            rows.append({"host": rec["host"], "ssh": "FAIL", "error": rec["error"]})
            continue
        writable = ("yes" if rec["deploy_to_exists"] else "will be created") if rec["writable"] else "NO"
        free = rec["free_bytes"]
        tools = rec["missing_tools"]
        rows.append(
            {
                "host": rec["host"],
                "ssh": "ok",
                "user": rec["user"],
                "deploy_to writable": writable,
                "free disk": f"{free / 1024**3:.1f} GB" if free is not None else "?",
                "tools": "ok" if not tools else "missing " + " ".join(tools),
                "current": _current(rec),
                "ignored": _ignored(rec),
                "error": rec["error"] or "",
            }
        )
    if not any(row.get("ignored") for row in rows):  # a column only where there is something
        for row in rows:
            row.pop("ignored", None)
    return rows


def _current(rec: dict) -> str | int:
    live = rec["current"]
    if isinstance(live, str):
        return f"{live} (foreign)"
    return live if live is not None else (rec["current_problem"] or "none")


def _ignored(rec: dict) -> str:
    """Names under releases/ read as no release at all, said once (they never change a decision)."""
    names = [*rec["ignored"], *([f"{rec['odd_names']} odd name(s)"] if rec["odd_names"] else [])]
    return ", ".join(names)


DRIFT_STATES = {"ok": "ok", "drift": "DRIFT", "no_manifest": "no manifest", "failed": "FAIL"}


def drift_rows(records: list[dict]) -> list[dict]:
    """Table rows of verify records (drift_records): the first ten paths of each list."""
    return [
        {
            "host": rec["host"],
            "state": DRIFT_STATES.get(rec["result"], rec["result"]),
            "files checked": rec["files_checked"] or "",
            "modified": ", ".join(rec["modified"][:10]),
            "removed": ", ".join(rec["removed"][:10]),
            "added": ", ".join(rec["added"][:10]),
            "error": rec["error"] or "",
        }
        for rec in records
    ]


def artifact_rows(records: list[dict]) -> list[dict]:
    """Table rows of stored artifacts (artifact_records)."""
    return [
        {
            "version": a["version"],
            "git sha": _short(a["git_sha"]),
            "sha256": a["sha256"][:12],
            "size": a["size"],
            "files": a["files"] if a["files"] is not None else "",
            "built": a["built_at"] or "",
            "by": a["built_by"] or "",
        }
        for a in records
    ]


def inventory_rows(records: list[dict]) -> list[dict]:
    """Table rows of a stage's inventory (inventory_records)."""
    return [
        {
            "name": h["host"],
            "host": h["address"],
            "port": h["port"],
            "user": h["user"] or "",
            "roles": ",".join(h["roles"]),
            "env keys": ",".join(h["env_keys"]),
        }
        for h in records
    ]


def check_failures(runs: list[HostRun]) -> list[str]:
    """Hosts that cannot take a deploy, with why."""
    bad = []
    for run in runs:
        st = run.state
        if st is None:
            bad.append(f"{run.name}: {run.error}")
        elif st.missing_tools:
            bad.append(f"{run.name}: missing {' '.join(st.missing_tools)}")
        elif not st.writable:
            bad.append(f"{run.name}: deploy_to not writable by {st.user}")
        elif st.current_problem():
            bad.append(f"{run.name}: {st.current_problem()}")
    return bad


# ---- the --json contract (docs/result.schema.json) ------------------------------------------
# One document per run, in every outcome: snake_case keys, numbers as numbers, full digests,
# ISO UTC times, null for what is not known.

OUTCOMES = {
    0: "ok",
    1: "failed",
    2: "bad_input",
    3: "locked",
    4: "refused",
    5: "partial",
    6: "store_unavailable",
    130: "interrupted",
    143: "interrupted",
    129: "interrupted",
}  # Ctrl-C, SIGTERM, SIGHUP


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


def run_records(runs: list[HostRun]) -> list[dict]:
    return [
        {
            "host": run.name,
            "result": run.result,
            "step": run.step,
            "release": run.release,
            "seconds": {p: round(run.times[p], 3) for p in PHASES if p in run.times},
            "error": run.error or None,
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


def status_records(runs: list[HostRun]) -> list[dict]:
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
                "error": None,
            }
        )
    return records


def releases_records(runs: list[HostRun]) -> list[dict]:
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


def check_records(runs: list[HostRun]) -> list[dict]:
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
                "current": st.live,
                "current_problem": st.current_problem(),
                "ignored": [*st.ignored],
                "odd_names": st.odd_names,
                "error": run.error or None,
            }
        )
    return records


def drift_records(runs: list[HostRun]) -> list[dict]:
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
