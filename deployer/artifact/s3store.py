"""The artifact store in an S3-compatible bucket ([store] in hosts.toml), behind the same three
calls as LocalStore: list, get, put. Objects are named as in the local store, under the prefix:
`<name>-<version>.tar.gz` and its `.json`; the JSON is written last, so a listed artifact is whole.

`get` downloads into a local directory (the build output) and checks the sha256 there; `presign`
hands out a time-limited GET URL for hosts that pull. Credentials come from the AWS chain only.
Every store failure becomes one StoreError line (exit code STORE) naming the store, never a URL's
signature.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deployer.artifact import signing
from deployer.artifact.fsutil import sha256_file
from deployer.artifact.load import Artifact, load_artifact, meta_problem
from deployer.config.settings import StoreSettings
from deployer.errors import StoreError, UsageError, command_line

CONNECT_TIMEOUT = 10
ATTEMPTS = 2  # each request: the first and one retry (boto3's standard mode), each bounded by
# CONNECT_TIMEOUT and [store] stall_timeout (read): a paused store fails a request within ~1 min
DEFAULT_REGION = "us-east-1"
Names = list[str]  # (the class's `list` method shadows the builtin in its annotations)
_SAME = ("name", "version", "git_sha", "sha256", "size", "manifest_sha256")  # a JSON saying these is current


def _client(settings: StoreSettings, endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    region = settings.region or session.region_name or DEFAULT_REGION
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path" if endpoint else "auto"},
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=settings.stall_timeout,
        retries={"total_max_attempts": ATTEMPTS, "mode": "standard"},
    )
    return session.client("s3", endpoint_url=endpoint or None, region_name=region, config=config)


class S3Store:
    def __init__(self, settings: StoreSettings, cache: Path):
        self.settings = settings
        self.cache = Path(cache)
        self.client = _client(settings, settings.endpoint)
        self._uploading: Any = None  # the transfer in flight (put), for cancel()
        self._cancelled = False
        self._signer: Any = None
        self._trusted: signing.Trusted | None = None
        self._private: Any = None
        self.replaced: Names = []  # objects a put found wrong in the store and uploaded again
        # told of each tarball upload (its name and size); returns what is told the bytes sent so far
        self.progress: Callable[[str, int], Callable[[int], object]] | None = None
        self.where = f"s3://{settings.bucket}/{settings.prefix}" + (
            f" at {settings.endpoint}" if settings.endpoint else ""
        )

    # -- the store interface ----------------------------------------------------------------------

    def list(self) -> list[Artifact]:
        """Every published artifact by its metadata, newest build first (paths are where `get`
        would download them)."""
        found = []
        for key in self._keys(".json"):
            meta = self._json(key)
            if isinstance(meta, dict) and meta.get("sha256") and "size" in meta and meta_problem(meta) is None:
                name = key[len(self.settings.prefix) : -len(".json")]
                found.append(Artifact(path=self.cache / f"{name}.tar.gz", meta=meta))
        return sorted(found, key=lambda a: (a.meta.get("built_at", ""), a.version), reverse=True)

    def get(self, ref: str) -> Artifact:
        """By exact version or a sha256/git sha prefix (>= 7 chars); downloaded into the cache
        unless a copy is there, and its sha256 checked against the metadata (load_artifact).
        With trusted_keys, a .json not signed by one of them is refused before anything else."""
        items = self.list()
        exact = [a for a in items if a.version == ref]
        matches = exact or [
            a for a in items if len(ref) >= 7 and (a.sha256.startswith(ref) or (a.git_sha or "").startswith(ref))
        ]
        if len({a.sha256 for a in matches}) > 1:
            raise UsageError(
                f"{ref!r} matches several artifacts in {self.where}: " + ", ".join(sorted({a.version for a in matches}))
            )
        if not matches:
            raise UsageError(f"no artifact {ref!r} in {self.where} (publish it: {command_line('publish')})")
        art = matches[0]
        if self.settings.trusted_keys:
            signing.verify(art.meta, self.trusted(), art.json_path.name)
        if not (art.path.is_file() and art.json_path.is_file()):
            self.cache.mkdir(parents=True, exist_ok=True)
            part = art.path.with_name(art.path.name + ".part")
            self._call("download", self.client.download_file, self.settings.bucket, self.key(art.path.name), str(part))
            got = sha256_file(part)
            if got != art.sha256:
                part.unlink(missing_ok=True)
                raise StoreError(
                    f"store {self.where}: its copy of {art.path.name} is not the artifact its .json names "
                    f"(sha256 mismatch: .json says {art.sha256[:12]}..., the object is {got[:12]}...); "
                    f"publish it again: {command_line('publish --version ' + art.version)}"
                )
            part.replace(art.path)
            art.json_path.write_text(json.dumps(art.meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return load_artifact(art.path)

    def put(
        self,
        artifact: Artifact,
        before_json: Callable[[], object] | None = None,
        stored: Callable[[], object] | None = None,
    ) -> Names:
        """Upload the tarball, then its JSON (signed with signing_key, when set), each only if the
        store does not hold it yet: the tarball by its sha256 (kept as the object's metadata), the
        JSON by what it says; returns the object names uploaded (none: it was published already;
        a wrong copy in the store is replaced, its name in `replaced`). Between the two, `stored`
        is told the tarball is there (hosts may fetch it) and before_json is waited for; a
        `cancel` meanwhile stops before the JSON (as it stops any upload)."""
        uploaded = []
        if self.settings.signing_key:
            self.private()  # a bad key fails before anything goes up
        tarball = Path(artifact.path)
        key = self.key(tarball.name)
        if not self._holds(key, artifact):
            self._call("upload", self._upload, tarball, key, {"sha256": artifact.sha256})
            uploaded.append(tarball.name)
        if stored is not None:
            stored()
        if before_json is not None:
            before_json()
        body, meta = self._json_body(artifact)
        key = self.key(artifact.json_path.name)
        if not self._json_current(key, meta):
            self._call("upload", self._put_bytes, key, body)
            uploaded.append(artifact.json_path.name)
        return uploaded

    def mend_copy(self, artifact: Artifact) -> str | None:
        """Why the store's copy of the artifact's tarball is not it, or None; a wrong copy is
        replaced by this one (read whole and hashed here: asked only after a host found the
        sha256 it fetched wrong, when the metadata said the copy was right)."""
        name = Path(artifact.path).name

        def digest() -> str:
            body = self.client.get_object(Bucket=self.settings.bucket, Key=self.key(name))["Body"]
            hashed = hashlib.sha256()
            for chunk in iter(lambda: body.read(1 << 20), b""):
                hashed.update(chunk)
            return hashed.hexdigest()

        got = self._call("read", digest)
        if got == artifact.sha256:
            return None
        try:
            self._call("upload", self._upload, Path(artifact.path), self.key(name), {"sha256": artifact.sha256})
            then = "it is replaced by this artifact now: deploy again"
        except StoreError as exc:
            then = f"replacing it failed ({exc}): publish it again"
        return (
            f"the store's copy of {name} is not this artifact (sha256 {got[:12]}..., expected "
            f"{artifact.sha256[:12]}...): the store held a wrong object, not a transfer fault; {then}"
        )

    def cancel(self) -> None:
        """Stop a `put` running in another thread: parts not yet sent are skipped (its `put`
        then raises StoreError); a put after this uploads nothing."""
        self._cancelled = True
        if self._uploading is not None:
            self._uploading.cancel()

    # -- helpers ------------------------------------------------------------------------------------

    def key(self, name: str) -> str:
        return self.settings.prefix + name

    def trusted(self) -> signing.Trusted:
        """trusted_keys, loaded once: fingerprint -> public key."""
        if self._trusted is None:
            self._trusted = signing.load_trusted(self.settings.trusted_keys)
        return self._trusted

    def private(self) -> Any:
        """signing_key, loaded once."""
        if self._private is None:
            self._private = signing.load_private(self.settings.signing_key)
        return self._private

    def _head(self, key: str) -> dict[str, Any] | None:
        """The object's HEAD answer, or None when it is not there."""
        from botocore.exceptions import ClientError

        try:
            answer: dict[str, Any] = self.client.head_object(Bucket=self.settings.bucket, Key=key)
            return answer
        except ClientError as exc:
            if _status(exc) == 404:
                return None
            raise self._error("check", exc) from None
        except Exception as exc:
            raise self._error("check", exc) from None

    def _holds(self, key: str, artifact: Artifact) -> bool:
        """Whether the store holds this tarball: its size, and the sha256 its upload recorded
        (an object of the same size but other bytes, or of unknown sha256, is uploaded again)."""
        head = self._head(key)
        if head is None:
            return False
        if int(head.get("ContentLength", -1)) == artifact.size and head.get("Metadata", {}).get("sha256") == (
            artifact.sha256
        ):
            return True
        self.replaced.append(Path(artifact.path).name)
        return False

    def _json_body(self, artifact: Artifact) -> tuple[bytes, signing.Meta]:
        """The JSON as it goes up (signed with signing_key, when set) and what it says."""
        path = artifact.json_path
        data = path.read_bytes() if path.is_file() else json.dumps(artifact.meta, indent=2, sort_keys=True).encode()
        meta = json.loads(data)
        if not self.settings.signing_key:
            return data, meta
        meta = signing.sign(meta, self.private())
        return (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode(), meta

    def _json_current(self, key: str, ours: signing.Meta) -> bool:
        """Whether the store's JSON already says what ours does (and, when signing, is signed by
        this key): then it stays. Without signing_key, a signed one is never replaced by ours."""
        theirs = self._json(key, missing=None)
        if not isinstance(theirs, dict) or any(theirs.get(k) != ours.get(k) for k in _SAME):
            if theirs is not None:
                self.replaced.append(key[len(self.settings.prefix) :])
            return False
        if not self.settings.signing_key:
            return True
        mine = self.private().public_key()
        return signing.signature_problem(theirs, {signing.fingerprint(mine): mine}) is None

    def signer(self) -> Any:
        """The client that signs the hosts' URLs: this one, unless hosts reach the store by
        another endpoint (made once; making it costs as much as the store's own client)."""
        if self._signer is None:
            same = self.settings.hosts_reach == self.settings.endpoint
            self._signer = (
                self.client if same else self._call("sign a URL for", _client, self.settings, self.settings.hosts_reach)
            )
        return self._signer

    def presign(self, artifact: Artifact) -> str:
        """A GET URL for the artifact, valid url_lifetime seconds, signed for the endpoint the
        hosts reach. A secret: it travels to hosts over stdin only."""
        url: str = self._call(
            "sign a URL for",
            self.signer().generate_presigned_url,
            "get_object",
            Params={"Bucket": self.settings.bucket, "Key": self.key(Path(artifact.path).name)},
            ExpiresIn=self.settings.url_lifetime,
        )
        return url

    def _upload(self, path: Path, key: str, metadata: dict[str, str]) -> None:
        """upload_file's transfer (multipart when large), kept so cancel() can stop it."""
        from boto3.s3.transfer import TransferConfig, create_transfer_manager

        if self._cancelled:
            raise StoreError(f"store {self.where}: upload cancelled")
        shown = self.progress(path.name, path.stat().st_size) if self.progress and path.suffix == ".gz" else None
        with create_transfer_manager(self.client, TransferConfig()) as manager:
            self._uploading = manager.upload(
                str(path),
                self.settings.bucket,
                key,
                extra_args={"Metadata": metadata},
                subscribers=[_counting(shown)] if shown else None,
            )
            if self._cancelled:
                self._uploading.cancel()
            try:
                self._uploading.result()
            finally:
                self._uploading = None

    def _keys(self, suffix: str) -> Names:
        keys: Names = []
        pages = self._call(
            "list",
            lambda: list(
                self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.settings.bucket, Prefix=self.settings.prefix
                )
            ),
        )
        for page in pages:
            keys += [
                o["Key"]
                for o in page.get("Contents", [])
                if o["Key"].endswith(suffix) and "/" not in o["Key"][len(self.settings.prefix) :]
            ]
        return keys

    def _put_bytes(self, key: str, body: bytes) -> None:
        if self._cancelled:
            raise StoreError(f"store {self.where}: upload cancelled")
        self.client.put_object(Bucket=self.settings.bucket, Key=key, Body=body)

    def _json(self, key: str, missing: object = ...) -> object:
        """The object parsed as JSON (None: not JSON); with `missing`, that when it is not there."""
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.settings.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if missing is not ... and _status(exc) == 404:
                return missing
            raise self._error("read", exc) from None
        except Exception as exc:
            raise self._error("read", exc) from None
        try:
            return json.loads(body)
        except ValueError:
            return None

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise self._error(what, exc) from None

    def _error(self, what: str, exc: BaseException) -> StoreError:
        if isinstance(exc, StoreError):
            return exc
        from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError, ReadTimeoutError

        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return StoreError(
                f"store {self.where}: no AWS credentials (set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
            )
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "") or str(_status(exc))
            return StoreError(f"store {self.where}: cannot {what}: {code}")
        if isinstance(exc, ReadTimeoutError):  # it took the connection, then said nothing
            return StoreError(
                f"store {self.where}: cannot {what}: too slow / stalled "
                f"(no answer within stall_timeout, {self.settings.stall_timeout}s; {ATTEMPTS} attempts)"
            )
        if isinstance(exc, OSError) and not type(exc).__module__.startswith("botocore"):
            return StoreError(f"store {self.where}: cannot {what}: {exc}")
        return StoreError(f"store {self.where}: cannot {what}: unreachable or not answering ({type(exc).__name__})")


def _counting(shown: Callable[[int], object]) -> Any:
    """An s3transfer subscriber telling `shown` the bytes sent so far (a retried part counts
    again from where it restarted)."""
    from s3transfer.subscribers import BaseSubscriber

    class Sent(BaseSubscriber):
        sent = 0

        def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
            self.sent = max(self.sent + bytes_transferred, 0)
            shown(self.sent)

    return Sent()


def _status(exc: Any) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
