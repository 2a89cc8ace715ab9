"""What a deploy needs to have hosts pull the artifact from the store instead of receiving it,
and the publish that runs meanwhile: started as soon as the artifact is known, its tarball waited
for only right before the hosts fetch it (locking and checking them overlap the upload), the rest
(the .json that lists it) once they have it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from deployer.config.schema import STORE, default

T = TypeVar("T")


class Background(Generic[T]):
    """fn run in a daemon thread from now on; `result()` waits for it, then returns what it
    returned or raises what it raised (in the caller's thread)."""

    def __init__(self, fn: Callable[[], T], name: str = "background"):
        self._fn = fn
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._fn()
        except BaseException as exc:  # handed to whoever waits
            self._error = exc

    def wait(self, timeout: float) -> bool:
        """Whether fn ended within timeout seconds."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]  # set when fn returned


@dataclass
class Pull:
    endpoint: str  # the store endpoint as the hosts reach it ("" is AWS's), for messages
    fetchable: Callable[[], Callable[[], str]]  # waits for the tarball in the store, raises StoreError
    # if the publish failed first; returns what signs a fresh presigned GET URL of it (a secret, stdin only)
    published: Callable[[], None] = lambda: None  # waits for the rest of the publish, raises StoreError
    cancel: Callable[[], None] = lambda: None  # stops a publish still running (the run ended without it)
    copy_problem: Callable[[], str | None] = lambda: None  # why the store's copy is not the artifact (then
    # replaced), or None
    stall: int = default(STORE, "stall_timeout")  # a host's download under 1 KiB/s that long stalled
    _sign: Callable[[], str] | None = field(default=None, init=False, repr=False)
    _checked: list[str | None] = field(default_factory=list, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def presign(self) -> str:
        """A presigned URL of the artifact (waits for its tarball in the store the first time)."""
        if self._sign is None:
            self._sign = self.fetchable()
        return self._sign()

    def store_copy_problem(self) -> str | None:
        """copy_problem(), asked once per run however many hosts found a wrong sha256 (a
        failure to ask is no answer: the host's own message stands)."""
        with self._lock:
            if not self._checked:
                try:
                    self._checked.append(self.copy_problem())
                except Exception:
                    self._checked.append(None)
            return self._checked[0]
