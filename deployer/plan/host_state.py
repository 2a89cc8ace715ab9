"""What a host holds, as values: its releases (ours and other tools'), current, the lock, its
tools. remote/state.py reads them from a host's report; plan/ decides with them."""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

MAX_RELEASE = 10**9
# The only names under releases/ the inspect script prints; anything else is counted, never printed.
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}\Z")
_STAMP = re.compile(r"(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z?\Z")  # Capistrano, Ansistrano


def release_number(name: str) -> int | None:
    """The number a directory name stands for when it is a plain release number (1..10^9, no
    leading zero, ASCII digits only), else None."""
    if not (name.isascii() and name.isdigit()) or name.startswith("0") or len(name) > 10:
        return None
    number = int(name)
    return number if number <= MAX_RELEASE else None


@dataclass(frozen=True)
class Release:
    number: int
    complete: bool
    bad: bool = False
    rolled_back: bool = False
    migrated: bool = False
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def usable(self) -> bool:
        """May be switched to: complete and never marked bad."""
        return self.complete and not self.bad


@dataclass(frozen=True)
class Foreign:
    """A directory under releases/ that another deploy tool made (no .deployer/ inside).

    Its time is what that tool recorded (Deployer's .dep/releases_log), else the timestamp in its
    name (Capistrano, Ansistrano), else the directory's mtime; releases are ordered by it, then name."""

    name: str
    mtime: int = 0
    revision: str = ""
    recorded: str = ""

    @property
    def time(self) -> str:
        if self.recorded:
            return self.recorded
        m = _STAMP.match(self.name)
        try:
            if m:
                year, month, day, hour, minute, second = map(int, m.groups())
                return datetime(year, month, day, hour, minute, second, tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        except ValueError:  # digits that are no date
            pass
        if self.mtime:
            return datetime.fromtimestamp(self.mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return ""

    @property
    def order(self) -> tuple[float, str]:
        try:
            when = datetime.fromisoformat(self.time.replace("Z", "+00:00")).timestamp()
        except ValueError:
            when = float(self.mtime)
        return (when, self.name)


@dataclass(frozen=True)
class LockInfo:
    who: str = "?"
    pid: int | None = None
    stage: str = "?"
    started: str = ""
    token: str = ""

    @classmethod
    def parse(cls, raw: str) -> LockInfo:
        try:
            data = json.loads(raw) if raw.strip() else {}
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        return cls(
            who=str(data.get("who", "?")),
            pid=data.get("pid"),
            stage=str(data.get("stage", "?")),
            started=str(data.get("started", "")),
            token=str(data.get("token", "")),
        )

    def age(self, now: datetime | None = None) -> str:
        try:
            started = datetime.fromisoformat(self.started.replace("Z", "+00:00"))
        except ValueError:
            return "unknown age"
        seconds = int(((now or datetime.now(UTC)) - started).total_seconds())
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
    current_kind: str = "absent"  # link | dangling | dir | file | absent
    current_target: str = ""
    releases: tuple[Release, ...] = ()
    foreign: tuple[Foreign, ...] = ()  # oldest first
    ignored: tuple[str, ...] = ()  # names under releases/ read as neither kind (see parse)
    linked: tuple[str, ...] = ()  # symlinks under releases/: never a release (they may lead anywhere)
    odd_names: int = 0  # names with bytes the inspect script never prints
    strays: tuple[str, ...] = ()
    lock: LockInfo | None = None
    lock_acquired: bool = False
    lock_silent: int | None = None  # seconds since the holder last renewed its lease (host clock)
    took_over: tuple[int, LockInfo] | None = None  # (seconds silent, holder) of a stale lock replaced
    lock_future: bool = False  # the holder's heartbeat is in the future (the host's clock stepped back)
    free_kb: int | None = None
    missing_tools: tuple[str, ...] = ()
    unfit_tools: tuple[tuple[str, str], ...] = ()  # (tool, busybox|other): present, without GNU's options
    cached: bool = False
    sudo_missing: tuple[str, ...] = ()  # command lines the user may not run through sudo (check)
    setup_files: tuple[tuple[str, str], ...] = ()  # (path, "sha256 mode:owner:group") of setup's files
    setup_drift: tuple[str, ...] = ()  # of those, the ones setup would write otherwise (Session.inspect)

    deploy_to: str = ""

    @property
    def current_name(self) -> str | None:
        """The name under releases/ that current points at: a link to releases/NAME, or to
        <deploy_to>/releases/NAME (absolute, as Capistrano and Deployer write it)."""
        if self.current_kind != "link":
            return None
        target = self.current_target
        if target.startswith("/") and self.deploy_to:
            base = posixpath.normpath(posixpath.join(self.deploy_to, "releases")) + "/"
            target = "releases/" + target[len(base) :] if target.startswith(base) else ""
        elif target:
            target = posixpath.normpath(target)  # Ansistrano writes ./releases/NAME
        head, _, name = target.rstrip("/").partition("/")
        return name if head == "releases" and NAME.match(name) else None

    @property
    def live(self) -> int | str | None:
        """What current points at: our release's number, a foreign release's name (str), or None."""
        name = self.current_name
        if name is None:
            return None
        number = release_number(name)
        if number is not None and self.release(number) is not None:
            return number
        return name if self.foreign_release(name) else None

    @property
    def current(self) -> int | None:
        """The number of our release current points at, or None (none, foreign, or not a release)."""
        live = self.live
        return live if isinstance(live, int) else None

    def release(self, number: int | None) -> Release | None:
        return next((r for r in self.releases if r.number == number), None)

    def foreign_release(self, name: str | None) -> Foreign | None:
        return next((f for f in self.foreign if f.name == name), None)

    @property
    def highest(self) -> int:
        """The highest release number taken under releases/: ours, or a foreign directory whose name
        is a plain number (Deployer's 1..n), so a new release never lands in another tool's directory."""
        foreign = (release_number(f.name) for f in self.foreign)
        return max([r.number for r in self.releases] + [n for n in foreign if n is not None], default=0)

    def current_problem(self) -> str | None:
        """Why current cannot be safely replaced, or None."""
        if self.current_kind in ("dir", "file"):
            what = "directory" if self.current_kind == "dir" else "file"
            return f"current is a real {what}, not a symlink; move it away by hand"
        if self.current_kind == "dangling":
            return f"current is a dangling link (-> {self.current_target}); point it at a release or remove it"
        if self.current_kind == "link" and self.current_name is None:
            return f"current points outside releases/ (-> {self.current_target})"
        if self.current_kind == "link" and self.current_name in self.linked:
            name = self.current_name
            return (
                f"current points at releases/{name}, a symlink (it may lead out of deploy_to), not a release directory"
            )
        if self.current_kind == "link" and self.live is None:
            return f"current points at releases/{self.current_name}, which is not a release directory"
        return None

    def tools_problem(self) -> str | None:
        """Why the host's tools cannot run a deploy, one clause per tool, or None: a tool missing,
        or one without the GNU options the scripts use (BusyBox's, a BSD's), with the package
        that brings it."""
        clauses = [f"{tool} is missing (install the `{TOOLS[tool][1]}` package)" for tool in self.missing_tools]
        for tool, kind in self.unfit_tools:
            gnu, package = TOOLS.get(tool, (tool, tool))
            found = "BusyBox's" if kind == "busybox" else f"not {gnu}"
            clauses.append(f"{tool} is {found}, {gnu} is needed (install the `{package}` package)")
        return "; ".join(clauses) or None


# What a deploy runs on a host that a stock Linux may lack or have in another make: (what it needs,
# the package that brings it; the same name on Debian, Alpine and RHEL).
TOOLS = {
    "tar": ("GNU tar", "tar"),
    "find": ("GNU find (-printf)", "findutils"),
    "readlink": ("GNU readlink (-m)", "coreutils"),
    "mv": ("GNU mv (-T)", "coreutils"),
    "sha256sum": ("sha256sum", "coreutils"),
    "ln": ("ln", "coreutils"),
}
