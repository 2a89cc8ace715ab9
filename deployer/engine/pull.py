"""What a deploy needs to have hosts pull the artifact from the store instead of receiving it
(`pull_plan`), and the publish that runs meanwhile: started as soon as the artifact is known, its
tarball waited for only right before the hosts fetch it (locking and checking them overlap the
upload), the rest (the .json that lists it) once they have it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from deployer.artifact.choice import store_of
from deployer.artifact.load import Artifact
from deployer.config.schema import STORE, default
from deployer.config.settings import Config
from deployer.engine import faults

if TYPE_CHECKING:
    from deployer.artifact.s3store import Names, S3Store
    from deployer.report.output import Output

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


def show_progress(store: S3Store, out: Output) -> None:
    """A line when the store's upload of a tarball starts, then its bytes and rate as they go (as
    for an upload to a host): a store that stalls shows where."""
    from deployer.report.output import UploadProgress, human_bytes

    def started(name: str, size: int) -> UploadProgress:
        out.line("store", "publish", f"uploading {name} ({human_bytes(size)}) to {store.where}")
        return UploadProgress(out, "store", size)

    store.progress = started


def open_store(cfg: Config) -> Background[S3Store]:
    """The S3 store made in the background: boto3's import and client set-up stay off the run's
    critical path."""
    return Background(lambda: store_of(cfg), "store")


def pull_plan(
    cfg: Config,
    art: Artifact,
    out: Output,
    dry_run: bool = False,
    opening: Background[S3Store] | None = None,
    approved: threading.Event | None = None,
) -> Pull:
    """The hosts' plan, and the artifact published in the background if the store lacks it (a
    HEAD per object first). The deploy waits for the tarball right before prepare (hosts fetch it
    while its .json goes up), and for the whole publish once prepared, saying what went. With
    `approved`, the .json (what lists the artifact) goes only once it is set (the artifact's
    checks passed); a `cancel` meanwhile leaves it out."""
    assert cfg.store is not None
    opening = opening or open_store(cfg)
    holder: list[S3Store] = []
    signing: list[Background[Any]] = []
    stopped = threading.Event()
    stored = threading.Event()  # the tarball is in the store: hosts may fetch it
    settled = threading.Event()  # that, or the publish ended without it

    def tarball_in() -> None:
        stored.set()
        settled.set()

    def publish() -> tuple[S3Store, Names]:
        try:
            store = opening.result()
            show_progress(store, out)
            holder.append(store)
            signing.append(Background(store.signer, "signer"))  # made while the tarball goes up
            if dry_run or stopped.is_set():
                return store, []

            def before_json() -> None:
                faults.pause_before("publish-json")
                if approved is not None:
                    approved.wait()  # a cancel meanwhile reaches the store: put then sends no .json

            return store, store.put(art, before_json=before_json, stored=tarball_in)
        finally:
            settled.set()

    job = Background(publish, "publish")

    def fetchable() -> Callable[[], str]:
        settled.wait()
        if not stored.is_set():
            job.result()  # raises what stopped it (a dry run or a cancel returns)
        signing[0].result()
        store = holder[0]
        return lambda: store.presign(art)

    def published() -> None:
        store, uploaded = job.result()
        if not dry_run:
            out.say(
                f"published {art.version} to {store.where}" if uploaded else f"{art.version} already in {store.where}"
            )

    def cancel() -> None:
        stopped.set()
        if holder:
            holder[0].cancel()
        if approved is not None:
            approved.set()  # a put waiting for approval wakes, finds the store cancelled, sends no .json

    def copy_problem() -> str | None:
        return holder[0].mend_copy(art) if holder else None

    return Pull(
        endpoint=cfg.store.hosts_reach,
        fetchable=fetchable,
        published=published,
        cancel=cancel,
        copy_problem=copy_problem,
        stall=cfg.store.stall_timeout,
    )
