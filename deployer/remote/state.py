"""What a host reported about itself (the output of lock.inspect), read into the values of
plan/host_state.py."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from deployer.plan.host_state import NAME, TOOLS, Foreign, HostState, LockInfo, Release, release_number

DASHED = re.compile(r"-[A-Za-z0-9._-]{0,127}\Z")  # a name like an option: printed, never a release


def parse(output: str, deploy_to: str = "") -> HostState:
    """Read the tab-separated lines of lock.inspect.

    A release line counts only with a plain release number (release_number); any other name is
    kept in `ignored`, so a forged or absurd name (releases/999999999999999999999) never becomes a
    release or decides the next number. Lines that do not parse are skipped."""
    values: dict[str, Any] = {
        "releases": [],
        "strays": [],
        "foreign": [],
        "ignored": [],
        "linked": [],
        "deploy_to": deploy_to,
    }
    metas: dict[str, dict[str, Any]] = {}
    foreign_info: dict[str, dict[str, str | int]] = {}
    for line in output.split("\n"):  # "\n" only: str.splitlines would also split on \r, \x1c...
        key, _, value = line.partition("\t")
        if key == "user":
            values["user"] = value
        elif key == "deploy_to":
            exists, _, writable = value.partition(" ")
            values["deploy_to_exists"] = exists == "present"
            values["writable"] = writable == "1"
        elif key == "current":
            kind, _, target = value.partition(" ")
            values["current_kind"], values["current_target"] = kind, target
        elif key == "release":
            flags, _, raw = value.partition("\t")
            name, complete, bad, rolled, migrated = (flags.split(" ") + ["0"] * 5)[:5]
            number = release_number(name)
            if number is None:
                if NAME.match(name):
                    values["ignored"].append(name)
                continue
            values["releases"].append(
                Release(number, complete == "1", bad == "1", rolled == "1", migrated == "1", _json_object(raw))
            )
        elif key == "dashed":  # `-v`, `--help`: no release, said so by name
            if DASHED.match(value):
                values["ignored"].append(value)
        elif key == "foreign":
            if NAME.match(value):
                values["foreign"].append(Foreign(value))
        elif key == "fmtime":
            name, _, mtime = value.partition("\t")
            if mtime.isascii() and mtime.isdigit():
                foreign_info.setdefault(name, {})["mtime"] = int(mtime)
        elif key in ("frev", "fcap", "fdep"):
            name, _, raw = value.partition("\t")
            info = foreign_info.setdefault(name, {})
            for k, v in _foreign_record(key, raw).items():
                info.setdefault(k, v)  # the release's own REVISION file first
        elif key == "odd" and value.isdigit():
            values["odd_names"] = int(value)
        elif key == "meta":
            listed, _, raw = value.partition("\t")
            metas[listed] = _json_object(raw)
        elif key == "linked":
            if NAME.match(value):
                values["linked"].append(value)
        elif key == "stray":
            values["strays"].append(value)
        elif key == "lock":  # the lock is there; who holds it follows, if known
            values.setdefault("lock", LockInfo.parse(value))
        elif key == "lockinfo":
            values["lock"] = LockInfo.parse(value)
        elif key == "lock_acquired":
            values["lock_acquired"] = True
        elif key == "lock_silent" and value.isdigit():
            values["lock_silent"] = int(value)
        elif key == "lock_future":
            values["lock_future"] = value == "1"
        elif key == "takeover":
            silent, _, raw = value.partition("\t")
            values["took_over"] = (int(silent) if silent.isdigit() else 0, LockInfo.parse(raw))
        elif key == "free_kb" and value.isdigit():
            values["free_kb"] = int(value)
        elif key == "missing_tools":
            values["missing_tools"] = tuple(t for t in value.split() if t in TOOLS)
        elif key == "unfit":
            tool, _, kind = value.partition(" ")
            if tool in TOOLS:
                values["unfit_tools"] = (*values.get("unfit_tools", ()), (tool, kind))
        elif key == "cached":
            values["cached"] = value == "1"
        elif key == "sudo_missing":
            values["sudo_missing"] = (*values.get("sudo_missing", ()), value)
        elif key == "setup_file" and value.count(" ") >= 2:
            digest, mode_owner, path = value.split(" ", 2)
            values["setup_files"] = (*values.get("setup_files", ()), (path, f"{digest} {mode_owner}"))
    values["releases"] = tuple(
        sorted(
            (
                replace(r, meta=metas[str(r.number)]) if str(r.number) in metas else r
                for r in {r.number: r for r in values["releases"]}.values()
            ),
            key=lambda r: r.number,
        )
    )
    foreign = {f.name: replace(f, **foreign_info.get(f.name, {})) for f in values["foreign"]}
    values["foreign"] = tuple(sorted(foreign.values(), key=lambda f: f.order))
    values["strays"] = tuple(values["strays"])
    values["ignored"] = tuple(values["ignored"])
    values["linked"] = tuple(values["linked"])
    return HostState(**values)


_CAP_REVISION = re.compile(r"\(at ([^)\s]+)\)")
_REVISION = re.compile(r"[\w.:+/@-]{1,64}\Z", re.ASCII)  # shown in tables: no control bytes


def _foreign_record(kind: str, raw: str) -> dict[str, str]:
    """What another tool recorded about one of its releases: its REVISION file's first line,
    Capistrano's revisions.log line ("Branch B (at REV) deployed as release NAME by USER"), or
    Deployer's .dep/releases_log entry ({"created_at": ..., "release_name": ...})."""
    raw = raw.strip()
    if kind == "frev":
        return {"revision": raw} if _REVISION.match(raw) else {}
    if kind == "fcap":
        m = _CAP_REVISION.search(raw)
        return {"revision": m.group(1)} if m and _REVISION.match(m.group(1)) else {}
    entry = _json_object(raw)
    created = entry.get("created_at")
    try:
        when = datetime.strptime(created, "%Y-%m-%dT%H:%M:%S%z") if isinstance(created, str) else None
    except ValueError:
        when = None
    return {"recorded": when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")} if when else {}


def _json_object(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
