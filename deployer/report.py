"""Turn per-host records into rows for tables and JSON. Pure: no printing, no I/O."""

from __future__ import annotations

from .fleet import HostRun

PHASES = ("lock", "check", "prepare", "switch", "finish")


def run_rows(runs: list[HostRun]) -> list[dict]:
    rows = []
    for run in runs:
        row = {"host": run.name, "result": run.result, "step": run.step,
               "release": run.target if run.target is not None else ""}
        for phase in PHASES:
            if phase in run.times:
                row[f"{phase} s"] = f"{run.times[phase]:.2f}"
        row["error"] = run.error
        rows.append(row)
    return rows


def run_headers(rows: list[dict]) -> list[str]:
    headers = ["host", "result", "step", "release"]
    headers += [f"{p} s" for p in PHASES if any(f"{p} s" in r for r in rows)]
    return headers + ["error"]


def _short(sha) -> str:
    return sha[:8] if isinstance(sha, str) else ""


def status_rows(runs: list[HostRun]) -> list[dict]:
    rows = []
    for run in runs:
        st = run.state
        if st is None:
            rows.append({"host": run.name, "current": "?", "error": run.error})
            continue
        release = st.release(st.current)
        meta = release.meta if release else {}
        foreign = st.foreign_release(st.live) if isinstance(st.live, str) else None
        current = st.live if st.live is not None else ("none" if st.current_kind == "absent"
                                                       else f"BROKEN ({st.current_kind})")
        rows.append({
            "host": run.name,
            "current": f"{current} (foreign)" if foreign else current,
            "version": meta.get("version", ""),
            "git sha": _short(foreign.revision if foreign else meta.get("git_sha")),
            "deployed at": foreign.time if foreign else meta.get("deployed_at", ""),
            "by": "another tool" if foreign else meta.get("deployed_by", ""),
            "releases": sum(1 for r in st.releases if r.complete),
            "foreign": len(st.foreign),
            "lock": st.lock.describe() if st.lock else "",
        })
    return rows


def releases_rows(runs: list[HostRun]) -> list[dict]:
    rows = []
    for run in runs:
        st = run.state
        if st is None:
            rows.append({"host": run.name, "N": "?", "state": run.error})
            continue
        for rel in st.releases:
            flags = [] if rel.complete else ["incomplete"]
            flags += ["bad"] if rel.bad else []
            flags += ["rolled back"] if rel.rolled_back else []
            rows.append({
                "host": run.name,
                "N": rel.number,
                "version": rel.meta.get("version", ""),
                "git sha": _short(rel.meta.get("git_sha")),
                "deployed at": rel.meta.get("deployed_at", ""),
                "complete": "yes" if rel.complete else "no",
                "state": ", ".join(flags) or "ok",
                "current": "<- current" if rel.number == st.current else "",
            })
        for rel in st.foreign:
            rows.append({"host": run.name, "N": rel.name, "git sha": _short(rel.revision), "deployed at": rel.time,
                         "complete": "?", "state": "foreign", "current": "<- current" if rel.name == st.live else ""})
        for stray in st.strays:
            rows.append({"host": run.name, "N": stray, "complete": "no", "state": "leftover temp dir"})
        for name in st.ignored:
            rows.append({"host": run.name, "N": name, "complete": "?", "state": "ignored: not a release number"})
        if st.odd_names:
            rows.append({"host": run.name, "N": "?", "complete": "?",
                         "state": f"ignored: {st.odd_names} name(s) with characters outside A-Z a-z 0-9 . _ -"})
    return rows


def check_rows(runs: list[HostRun]) -> list[dict]:
    rows = []
    for run in runs:
        st = run.state
        if st is None:
            rows.append({"host": run.name, "ssh": "FAIL", "error": run.error})
            continue
        writable = ("yes" if st.deploy_to_exists else "will be created") if st.writable else "NO"
        rows.append({
            "host": run.name,
            "ssh": "ok",
            "user": st.user,
            "deploy_to writable": writable,
            "free disk": f"{(st.free_kb or 0) / 1048576:.1f} GB" if st.free_kb is not None else "?",
            "tools": "ok" if not st.missing_tools else "missing " + " ".join(st.missing_tools),
            "current": _current(st),
            "ignored": _ignored(st),
            "error": run.error,
        })
    return rows


def _current(st) -> str | int:
    if isinstance(st.live, str):
        return f"{st.live} (foreign)"
    return st.live if st.live is not None else (st.current_problem() or "none")


def _ignored(st) -> str:
    """Names under releases/ read as no release at all, said once (they never change a decision)."""
    names = [*st.ignored, *([f"{st.odd_names} odd name(s)"] if st.odd_names else [])]
    return ", ".join(names)


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
