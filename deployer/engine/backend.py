"""Where a run's commands go: to the hosts (Remote), or, in a dry run, to the terminal (Printer,
like SSHKit's printer backend). The flows call the same methods either way."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from deployer.engine.fleet import HostRun
from deployer.errors import HostError
from deployer.plan.paths import Paths
from deployer.remote import commands, lock
from deployer.report.output import Output, note
from deployer.ssh import transport_for
from deployer.ssh.types import Cancelled, Result, Stdin, TransportError

READ_ONLY_STEPS = ("inspect", "manifest")  # a dry run runs these for real
LEASE_LOST_TEXT = "lost the lock"


def lease_lost(result: Result) -> bool:
    """The command stopped because this run's lock was taken over (lock.lease)."""
    return result.exit_code == commands.LEASE_LOST and LEASE_LOST_TEXT in result.stderr


class Remote:
    """Every command runs on its host; the lock holder's commands renew its lease."""

    joins_steps = True  # one command may carry two steps (a switch and its finish)

    def __init__(self, paths: Paths, token: str, cancel: threading.Event, out: Output):
        self.paths, self.token, self.cancel, self.out = paths, token, cancel, out

    def connect(self, run: HostRun) -> None:
        try:
            run.conn = transport_for(run.host, warn=note).open()
        except TransportError as exc:
            raise HostError(run.name, "connect", str(exc)) from None

    def run(
        self,
        run: HostRun,
        step: str,
        script: str,
        *,
        reads: str | None = None,
        stdin: Stdin | None = None,
        timeout: float | None = None,
        progress: Callable[[int], None] | None = None,
        max_output: int | None = None,
        leased: bool = True,
    ) -> Result:
        """Run one script on one host; a non-zero exit becomes HostError(host, step, output tail).
        `reads`: the read-only part of `script`, for a backend that runs only those. `leased=False`:
        no lease check in front, where the lock may be gone already (a put-back after an answer
        that never came)."""
        if run.locked and leased:  # every command of the lock's holder checks and renews its lease
            script = lock.lease(self.paths, self.token) + script
            run.renewed = time.monotonic()
        return self.send(run, step, script, stdin=stdin, timeout=timeout, progress=progress, max_output=max_output)

    def send(
        self,
        run: HostRun,
        step: str,
        script: str,
        *,
        stdin: Stdin | None = None,
        timeout: float | None = None,
        progress: Callable[[int], None] | None = None,
        max_output: int | None = None,
    ) -> Result:
        if run.conn is None or not run.conn.alive:
            self.connect(run)
        assert run.conn is not None
        try:
            result = run.conn.run(
                script, cancel=self.cancel, stdin=stdin, timeout=timeout, progress=progress, max_output=max_output
            )
        except Cancelled:
            raise
        except TransportError as exc:
            raise HostError(run.name, step, str(exc)) from None
        if not result.ok:
            if lease_lost(result):
                run.locked = False  # not ours any more: nothing to undo or unlock here
            raise HostError(run.name, step, result.tail())
        return result

    def local(self, what: str, action: Callable[[], object]) -> None:
        """Something done on this machine (a local hook, a health check from here, a notification)."""
        action()

    def keep_leases(self, runs: list[HostRun], ttl: int) -> threading.Event | None:
        """Renew the lease in the background where no command did lately; set the event to stop."""
        stop = threading.Event()
        threading.Thread(target=self._renew_leases, args=(runs, ttl, stop), daemon=True, name="lease").start()
        return stop

    def _renew_leases(self, runs: list[HostRun], ttl: int, stop: threading.Event) -> None:
        """Renew the lease on hosts where no command did for a quarter of lock_ttl (a long smoke
        test, bake, pause, upload or hook): one small command on the open connection. A run whose
        commands follow each other quickly never sends one."""
        every = ttl / 4
        while not stop.wait(min(every / 2, 5.0)):
            for run in runs:
                conn = run.conn
                if not (run.locked and conn is not None and conn.alive) or stop.is_set():
                    continue
                if time.monotonic() - run.renewed < every:
                    continue
                run.renewed = time.monotonic()
                try:
                    result = conn.run(lock.lease(self.paths, self.token), timeout=run.host.ssh.connect_timeout)
                except Exception:  # a dead link is the next command's to report
                    continue
                if lease_lost(result) and run.locked:
                    self.out.line(run.name, "lock", result.tail())


class Printer(Remote):
    """Dry run: every command that would change something is printed, not run; reads run for real."""

    joins_steps = False  # each step's command is printed on its own

    def run(
        self,
        run: HostRun,
        step: str,
        script: str,
        *,
        reads: str | None = None,
        stdin: Stdin | None = None,
        timeout: float | None = None,
        progress: Callable[[int], None] | None = None,
        max_output: int | None = None,
        leased: bool = True,
    ) -> Result:
        if step in READ_ONLY_STEPS:
            return self.send(run, step, script, stdin=stdin, timeout=timeout, max_output=max_output)
        self.out.say(
            f"--- {run.name} · {step}{' (artifact on stdin)' if stdin else ''}\n{script.rstrip()}", multiline=True
        )
        if reads is None:
            return Result(0, "", "")
        # taking the lock: what the host holds is read for real, the lock taken as it would be
        read = self.send(run, "inspect", reads)
        return Result(read.exit_code, read.stdout + "lock_acquired\t1\n", read.stderr)

    def local(self, what: str, action: Callable[[], object]) -> None:
        self.out.say(what, multiline="\n" in what)

    def keep_leases(self, runs: list[HostRun], ttl: int) -> threading.Event | None:
        return None
