"""Table rows derived from the --json records (document.py): a table shows what the JSON says.
Pure: no printing, no I/O."""

from __future__ import annotations

from collections.abc import Sequence

from deployer.plan import setup as setup_plan
from deployer.plan.host_state import LockInfo
from deployer.report.document import PHASES, HostRecord


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
                "setup drift": ", ".join(rec["setup_drift"]),
            }
        )
    for column in ("foreign", "setup drift"):  # a column only where another tool was, or a hand
        if not any(row.get(column) for row in rows):
            for row in rows:
                row.pop(column, None)
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
                    "state": f"ignored: {rec['odd_names']} name(s) with characters outside A-Z a-z 0-9 . _ - "
                    "or longer than 128 (never printed)",
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
        tools = [*(f"missing {t}" for t in rec["missing_tools"]), *(f"{t}: not GNU" for t in rec["unfit_tools"])]
        rows.append(
            {
                "host": rec["host"],
                "ssh": "ok",
                "user": rec["user"],
                "deploy_to writable": writable,
                "free disk": f"{free / 1024**3:.1f} GB" if free is not None else "?",
                "tools": ", ".join(tools) or "ok",
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


def check_failures(runs: Sequence[HostRecord]) -> list[str]:
    """Hosts that cannot take a deploy, with why."""
    bad = []
    for run in runs:
        st = run.state
        if st is None:
            bad.append(f"{run.name}: {run.error}")
        elif st.tools_problem():
            bad.append(f"{run.name}: {st.tools_problem()}")
        elif not st.writable:
            bad.append(f"{run.name}: deploy_to not writable by {st.user}")
        elif st.current_problem():
            bad.append(f"{run.name}: {st.current_problem()}")
        elif st.sudo_missing:
            rule = setup_plan.sudo_rule(st.user, st.sudo_missing)
            bad.append(f"{run.name}: sudo rule missing: {rule} (deployer setup writes it)")
        if st is not None:
            bad += [f"{run.name}: {setup_plan.drift_note(path)}" for path in st.setup_drift]
    return bad
