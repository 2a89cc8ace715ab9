"""What a host reported about itself (the output of commands.inspect), as values."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

_TARGET = re.compile(r"^releases/(\d+)$")


@dataclass(frozen=True)
class Release:
    number: int
    complete: bool
    bad: bool = False
    rolled_back: bool = False
    migrated: bool = False
    meta: dict = field(default_factory=dict, compare=False)

    @property
    def usable(self) -> bool:
        """May be switched to: complete and never marked bad."""
        return self.complete and not self.bad


@dataclass(frozen=True)
class LockInfo:
    who: str = "?"
    pid: int | None = None
    stage: str = "?"
    started: str = ""
    token: str = ""

    @classmethod
    def parse(cls, raw: str) -> "LockInfo":
        try:
            data = json.loads(raw) if raw.strip() else {}
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        return cls(who=str(data.get("who", "?")), pid=data.get("pid"), stage=str(data.get("stage", "?")),
                   started=str(data.get("started", "")), token=str(data.get("token", "")))

    def age(self, now: datetime | None = None) -> str:
        try:
            started = datetime.fromisoformat(self.started.replace("Z", "+00:00"))
        except ValueError:
            return "unknown age"
        seconds = int(((now or datetime.now(timezone.utc)) - started).total_seconds())
        if seconds < 120:
            return f"{seconds}s"
        if seconds < 7200:
            return f"{seconds // 60}m"
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"

    def describe(self) -> str:
        pid = f" pid {self.pid}" if self.pid else ""
        return f"{self.who}{pid} (stage {self.stage}, started {self.started or '?'}, {self.age()} ago)"


@dataclass(frozen=True)
class HostState:
    user: str = ""
    deploy_to_exists: bool = False
    writable: bool = False
    current_kind: str = "absent"        # link | dangling | dir | file | absent
    current_target: str = ""
    releases: tuple[Release, ...] = ()
    strays: tuple[str, ...] = ()
    lock: LockInfo | None = None
    lock_acquired: bool = False
    free_kb: int | None = None
    missing_tools: tuple[str, ...] = ()
    cached: bool = False

    @property
    def current(self) -> int | None:
        """The release number current points at, when it is a sane link."""
        m = _TARGET.match(self.current_target.rstrip("/"))
        return int(m.group(1)) if m and self.current_kind == "link" else None

    def release(self, number: int | None) -> Release | None:
        return next((r for r in self.releases if r.number == number), None)

    @property
    def highest(self) -> int:
        return max((r.number for r in self.releases), default=0)

    def current_problem(self) -> str | None:
        """Why current cannot be safely replaced, or None."""
        if self.current_kind in ("dir", "file"):
            return f"current is a real {'directory' if self.current_kind == 'dir' else 'file'}, not a symlink; move it away by hand"
        if self.current_kind == "dangling":
            return f"current is a dangling link (-> {self.current_target}); point it at a release or remove it"
        if self.current_kind == "link" and self.current is None:
            return f"current points outside releases/ (-> {self.current_target})"
        return None


def parse(output: str) -> HostState:
    """Read the tab-separated lines of commands.inspect."""
    values: dict = {"releases": [], "strays": []}
    metas: dict[str, dict] = {}
    for line in output.splitlines():
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
            number, complete, bad, rolled, migrated = (flags.split() + ["0"] * 5)[:5]
            values["releases"].append(Release(int(number), complete == "1", bad == "1", rolled == "1",
                                              migrated == "1", _json_object(raw)))
        elif key == "meta":
            number, _, raw = value.partition("\t")
            metas[number] = _json_object(raw)
        elif key == "stray":
            values["strays"].append(value)
        elif key == "lock":             # the lock is there; who holds it follows, if known
            values.setdefault("lock", LockInfo.parse(value))
        elif key == "lockinfo":
            values["lock"] = LockInfo.parse(value)
        elif key == "lock_acquired":
            values["lock_acquired"] = True
        elif key == "free_kb" and value.isdigit():
            values["free_kb"] = int(value)
        elif key == "missing_tools":
            values["missing_tools"] = tuple(value.split())
        elif key == "cached":
            values["cached"] = value == "1"
    values["releases"] = tuple(sorted((replace(r, meta=metas[str(r.number)]) if str(r.number) in metas else r
                                       for r in values["releases"]), key=lambda r: r.number))
    values["strays"] = tuple(values["strays"])
    return HostState(**values)


def _json_object(raw: str) -> dict:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
