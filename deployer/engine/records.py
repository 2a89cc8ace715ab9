"""What each flow records about one host, beside the host's state: one small record per flow."""

from __future__ import annotations

from dataclasses import dataclass, field

from deployer.ssh.types import Result

LedgerEntry = dict[str, object]  # one parsed ledger line (JSON object)


@dataclass
class Deployed:
    """deploy: where the host was, the release it got, whether it switched."""

    previous: int | str | None = None  # live before this run; str: a foreign release (another tool's)
    release: int | None = None
    switched: bool = False
    in_doubt: bool = False  # the switch went out, no answer came: it may or may not have happened
    finished: Result | None = None  # the switch command's result when the finish rode on it
    analysis: dict[str, object] | None = None  # the canary analysis this host was judged in (engine.analysis_step)
    canary_steps: list[dict[str, object]] = field(default_factory=list)  # [canary] steps it got (engine.weights)


@dataclass
class RolledBack:
    """rollback: where the host was and the release it goes back to."""

    previous: int | str | None = None
    target: int | str | None = None  # str: a foreign release
    switched: bool = False
    in_doubt: bool = False  # the switch went out, no answer came: it may or may not have happened
    restarting: bool = False  # its restart in the target went out: a put-back restarts what it put back


@dataclass
class Maintained:
    """cleanup, config push, unlock: what changed on the host."""

    release: int | None = None  # the live release cleaned beside or whose env was written
    removed: list[str] = field(default_factory=list)
    held_by: str = ""  # unlock: who held the lock removed ("" when there was none)


@dataclass
class Drift:
    """verify: the current tree against its artifact's manifest."""

    checked: int = 0
    manifest: bool = True  # False: the release came without one
    modified: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return bool(self.modified or self.removed or self.added)
