"""Remote shell scripts: the files in deployer/remote/scripts/ with their inputs, never run here.

Each builder names the script's files and its inputs; `render.render` is the only place a value
enters a script (NAME=value lines, every value shlex-quoted). The transport is the only place that
executes these. Scripts that change a host call `held` before each change: the session puts the
lease check (`lock.lease`; the lock's own scripts are in lock.py) in front of every command of a
run that holds the lock. One script is one
remote command execution, so the deploy is a handful of round trips per host: inspect+lock,
prepare (upload+extract+link), switch, finish. A user's command (hook, migration, smoke) is
user_command.py's, setup's script setup.py's.
"""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass
from typing import cast

from deployer.plan.paths import MANIFEST, Paths
from deployer.redact import redact
from deployer.remote import delta as remote_delta
from deployer.remote.lock import lock_values
from deployer.remote.render import Value, render, text

q = shlex.quote

# Exit codes of the scripts (written as numbers in scripts/*.sh), mapped to messages by the
# caller when stderr says nothing better.
NOT_WRITABLE = 20
SHA_MISMATCH = 23
MISSING_SHARED = 24
UNSAFE_TREE = 25
CURRENT_NOT_LINK = 30
RELEASE_INCOMPLETE = 31
LEASE_LOST = 32
STORE_FETCH = 26  # prepare_pull.sh: the artifact could not be downloaded from the store
STORE_STALLED = 28  # prepare_pull.sh: ... the store stalled or was too slow (curl's own code for it)

CLEANUP_FAILED = "cleanup_failed"  # the field finish emits (with rm's status) when cleanup failed


@dataclass(frozen=True)
class LinkSource:
    """An earlier release of the artifact being deployed, and the sha256 of its manifest."""

    number: int
    manifest_sha256: str


def prepare(
    paths: Paths,
    number: int,
    token: str,
    sha256: str,
    *,
    upload: bool,
    release_json: str,
    shared_dirs: tuple[str, ...] = (),
    shared_files: tuple[str, ...] = (),
    env_file: str | None = None,
    env_size: int = 0,
    link_from: LinkSource | None = None,
    generated: tuple[str, ...] = (),
    stream: bool = False,
    fetch_from: str | None = None,
    fetch_stall: int = 30,  # [store] stall_timeout's default
    fetch_max: int = 60,
    delta: remote_delta.Spec | None = None,
) -> str:
    """Receive (or reuse) the artifact, verify its sha256, extract into a temp dir, link shared
    paths, mark complete, then rename into releases/N. Any failure removes the temp dir.

    With env_file, stdin starts with exactly env_size bytes of it, then the artifact when
    uploading: values never appear on a command line. The env becomes the release's own
    (releases/N/.deployer/env, 0600, `<env_file>` linking to it): the live env changes only when
    `current` does, and a rollback brings back the env its release ran with.
    With link_from (reusing the cached artifact only), the release is first made of hard links to
    that earlier release of the same artifact, kept only if it still matches (prepare_link.sh);
    otherwise the cached artifact is extracted as usual. With stream (uploads only), tar extracts
    the upload as it arrives: for links where the upload is the slow part.
    With fetch_from (uploads only: the store's endpoint as hosts reach it), the host downloads the
    artifact itself (prepare_pull.sh): a presigned URL follows the env on stdin; same checks after.
    A download under 1 KiB/s for fetch_stall seconds, or longer than fetch_max seconds, exits
    STORE_STALLED.
    With delta (uploads only), stdin carries a delta against an earlier release instead of the
    artifact: the tree is built from both and proven the artifact's (prepare_delta.sh), else the
    script exits remote_delta.UNUSABLE."""
    pull = upload and fetch_from is not None
    if env_file:
        shared_files = tuple(f for f in shared_files if f != env_file)  # the release's own, not shared
    link_from = None if upload else link_from
    values: dict[str, Value] = {
        **lock_values(paths, token),
        "RELEASES": paths.releases,
        "SHARED": paths.shared,
        "CACHE": paths.cache,
        "TMP_RELEASE": paths.tmp_release(number, token),
        "PART": paths.partial_artifact(token),
        "CACHED": paths.cached_artifact(sha256),
        "FINAL": paths.release(number),
        "NUMBER": number,
        "SHA256": sha256,
        "RELEASE_JSON": release_json,
        "UPLOAD": upload,
        "STREAM": upload and stream and not pull,
        "PULL": pull,
        "MANIFEST": MANIFEST,
        "SHARED_DIRS": shared_dirs,
        "SHARED_FILES": shared_files,
        "ENV_FILE": env_file or "",
        "ENV_BYTES": int(env_size),
        "ENV_TMP": paths.env_upload(token),
        "LINK_FROM": link_from.number if link_from else "",
        "DELTA": delta is not None,
    }
    files = ["lib.sh", "prepare_fetch.sh", "prepare_check.sh", "prepare_shared.sh"]
    if delta is not None:
        values |= remote_delta.inputs(paths, delta)
        files.append("prepare_delta.sh")
    if env_file:
        values |= _env_link(paths, env_file)
        files.append("env_shared.sh")
    if pull:
        values |= {
            "STORE_ENDPOINT": fetch_from or "the AWS S3 endpoint",
            "PULL_PY": text("pull_fetch.py"),
            "STALL_TIME": fetch_stall,
            "MAX_TIME": fetch_max,
        }
        files.append("prepare_pull.sh")
    if link_from:
        own = (env_file,) if env_file else ()
        values |= {
            "LINK_SRC": paths.release(link_from.number),
            "LINK_COMPLETE": paths.release_state(link_from.number) + "/complete",
            "LINK_MANIFEST": posixpath.join(paths.release(link_from.number), MANIFEST),
            "LINK_MANIFEST_SUM": link_from.manifest_sha256,
            "LINK_SHARED": (*shared_dirs, *shared_files, *own),
            "LINK_SKIP": (*generated, *own),
        }
        files += ["manifest.sh", "prepare_link.sh"]
    return render([*files, "prepare.sh"], values)


def _env_link(paths: Paths, env_file: str) -> dict[str, Value]:
    """env_shared.sh's inputs (and ENV_LINK: what a release's <env_file> points at)."""
    shared_env = paths.shared_path(env_file)
    return {
        "ENV_FILE": env_file,
        "ENV_LINK": paths.release_env_link(env_file),
        "SHARED_ENV": shared_env,
        "SHARED_ENV_DIR": posixpath.dirname(shared_env),
        "SHARED_ENV_LINK": paths.shared_env_link(env_file),
    }


def write_env(paths: Paths, env_file: str, token: str, number: int, ledger: str | None = None) -> str:
    """config.push: stdin → release N's own env (0600, atomic), N being the live release; record
    it, release the lock. The release's <env_file> links to it (made so on hosts of earlier
    versions, whose releases shared one file)."""
    own = paths.release_env(number)
    values: dict[str, Value] = {
        **lock_values(paths, token),
        **_env_link(paths, env_file),
        "RELEASES": paths.releases,
        "RELEASE": paths.release(number),
        "NUMBER": number,
        "OWN": own,
        "ENV_TMP": paths.env_write(number, token),
        "LINK": posixpath.join(paths.release(number), env_file),
        "LEDGER_LINE": ledger,
    }
    return render(["lib.sh", "env_shared.sh", "write_env.sh"], values)


def config_cut(paths: Paths, token: str, number: int, digest: str, *, done: str, cut: str) -> str:
    """After a signal cut a config push's answer off on a host, unleased: `written 1|0` (release N's
    env has the sha256 sent, or not); if this run still holds the lock there, `done` (unless the
    write recorded it) or `cut`, the temp upload removed, the lock released."""
    values: dict[str, Value] = {
        **lock_values(paths, token),
        "OWN": paths.release_env(number),
        "ENV_TMP": paths.env_write(number, token),
        "DIGEST": digest,
        "LEDGER_LINE": done,
        "CUT_LINE": cut,
    }
    return render(["lib.sh", "config_cut.sh"], values)


def read_env(paths: Paths, env_file: str) -> str:
    """The live env file, as the live release has it (for config.diff; never printed as is)."""
    return render(["read_env.sh"], {"FILE": posixpath.join(paths.current, env_file)})


def switch(
    paths: Paths,
    number: int | str,
    token: str,
    *,
    mark_rolled_back: int | str | None = None,
    release_lock: bool = False,
    ledger: str | None = None,
    only_from: str | None = None,
) -> str:
    """Point current at releases/N atomically: a temp link renamed over it (rename(2)).

    A str names a foreign release (another tool's directory): it only has to be a directory, and
    nothing is written into it; mark_rolled_back marks only a release of ours. only_from: switch
    only if current points there (what it was switched to), else change nothing (`unchanged`)."""
    n = cast(int, number)  # a foreign release's name makes its path the same way
    mark = paths.release_state(mark_rolled_back) if isinstance(mark_rolled_back, int) else ""
    return render(
        ["lib.sh", "switch.sh"],
        {
            **lock_values(paths, token),
            "CURRENT": paths.current,
            "RELEASE": paths.release(n),
            "NUMBER": str(number),
            "FOREIGN": isinstance(number, str),
            "TARGET": paths.release_target(n),
            "TMP_LINK": paths.tmp_current(token),
            "MARK_STATE": mark,
            "LEDGER_LINE": ledger,
            "UNLOCK": release_lock,
            "ONLY_FROM": only_from,
        },
    )


def unchanged(stdout: str) -> bool:
    """A conditional switch or unswitch found current elsewhere and changed nothing."""
    return any(line.startswith("unchanged\t") for line in stdout.splitlines())


def unswitch(paths: Paths, number: int) -> str:
    """Undo a first deploy's switch: remove current only if it points at releases/N."""
    return render(["unswitch.sh"], {"CURRENT": paths.current, "TARGET": paths.release_target(number)})


def finish(
    paths: Paths,
    token: str,
    *,
    delete: list[str],
    keep_artifacts: list[str],
    ledger: str | None = None,
    done: str | None = None,
    failed: str | None = None,
) -> str:
    """Cleanup (release dirs chosen by the planner, stale cache entries), then release the lock.

    Ledger lines: `done` first, whatever the cleanup does (a deploy's outcome: its release is
    live already); then `ledger` if the cleanup succeeded, `failed` if it did not. A failed
    cleanup still releases the lock and exits 0, emitting `cleanup_failed<TAB>status` (its
    errors are on stderr), so it is never mistaken for a failure of what came before."""
    return render(
        ["lib.sh", "finish.sh"],
        {
            **lock_values(paths, token),
            "DEPLOY_TO": paths.deploy_to,
            "CACHE": paths.cache,
            "DELETE": [posixpath.join(paths.releases, name) for name in delete],
            "KEEP": [f"{sha}.tar.gz" for sha in keep_artifacts],
            "DONE_LINE": done,
            "LEDGER_LINE": ledger,
            "FAILED_LINE": failed,
        },
    )


def switch_then_finish(switch_script: str, finish_script: str) -> str:
    """The switch, then the finish in a subshell of its own once the switch succeeded; the finish's
    exit status is emitted as `finished`, so a failed cleanup is never taken for a failed switch."""
    return f"{switch_script}set +e\n(\n{finish_script})\nf=$?\nset -e\nprintf '%s\\t%s\\n' finished \"$f\"\n"


def finish_cut(paths: Paths, token: str, *, done: str, ledger: str) -> str:
    """After a signal cut a deploy's finish short (its release live), unleased: nothing if the lock
    is no longer this run's (prints `finished`); else the deploy's `done` line unless the finish
    wrote it, then `ledger`, then release the lock. No cleanup."""
    return render(["lib.sh", "finish_cut.sh"], {**lock_values(paths, token), "DONE_LINE": done, "LEDGER_LINE": ledger})


def abort(paths: Paths, number: int | None, token: str, ledger: str | None = None) -> str:
    """Remove this run's temp dirs and its release N (only if this run created it), unlock."""
    values: dict[str, Value] = {
        **lock_values(paths, token),
        "PART": paths.partial_artifact(token),
        "ENV_TMP": paths.env_upload(token),
        "TMP_LINK": paths.tmp_current(token),
        "TMP_RELEASE": "",
        "LEDGER_LINE": ledger,
    }
    if number is not None:
        values |= {
            "TMP_RELEASE": paths.tmp_release(number, token),
            "RELEASE": paths.release(number),
            "CURRENT": paths.current,
            "TARGET": paths.release_target(number),
        }
    return render(["lib.sh", "abort.sh"], values)


def read_ledger(paths: Paths, match: str | None = None) -> str:
    """The ledger's lines (only those containing `match`, when given)."""
    return render(["read_ledger.sh"], {"LEDGER": paths.ledger, "MATCH": match})


def drift(paths: Paths, shared: tuple[str, ...] = (), generated: tuple[str, ...] = ()) -> str:
    """Compare current's files with the manifest that came in the artifact.

    Prints `modified|removed|added<TAB>path` lines, or `no_manifest`. Shared paths are skipped;
    so are paths hooks generate in the release (`generated`) and __pycache__ directories.
    """
    return render(
        ["lib.sh", "manifest.sh", "drift.sh"],
        {"CURRENT": paths.current, "MANIFEST": MANIFEST, "SHARED_PATHS": shared, "SKIP": (*shared, *generated)},
    )


# -- verify, and a release that failed it -----------------------------------------------------


def verify_http(url: str, *, status: int, body: str, timeout: int, retries: int, interval: float) -> str:
    """Fetch url from the host itself (curl, else python3) until it answers `status` (and has `body`)."""
    return render(
        ["verify_http.sh"],
        {
            "URL": url,
            "STATUS": int(status),
            "BODY": body,
            "WITHOUT": " without " + repr(body) if body else "",
            "TIMEOUT": int(timeout),
            "RETRIES": int(retries),
            "INTERVAL": f"{float(interval):g}",
            "FETCH_PY": text("verify_fetch.py"),
        },
    )


def mark_bad(paths: Paths, number: int, reason: str) -> str:
    """Mark release N bad: never a rollback target again, purged first by cleanup. The reason
    (a failed step's output) is written with every secret value masked."""
    return render(["mark_bad.sh"], {"STATE_DIR": paths.release_state(number), "REASON": redact(reason)})
