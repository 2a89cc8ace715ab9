"""[store]: the S3-compatible artifact store's settings, checked against the schema.

Credentials never live in hosts.toml: a key that looks like one is refused with a line saying
where they go (the AWS chain: environment variables, a profile, an instance role)."""

from __future__ import annotations

import re

from deployer.config import schema
from deployer.config.reader import Reader
from deployer.config.settings import StoreSettings

_CREDENTIAL = re.compile(r"access|secret|token|password|credential|session|key_id|api_key", re.IGNORECASE)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def read(reader: Reader, data: object) -> StoreSettings:
    if isinstance(data, dict):
        for name in data:
            if _CREDENTIAL.search(name):
                raise reader.fail(
                    f"store.{name}",
                    "credentials never go in hosts.toml: set AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, in the environment",
                )
    given = reader.table(data, "store", schema.STORE)
    url = given["url"]
    bucket, prefix = split_url(url)
    if not _BUCKET.match(bucket) or any(c.isspace() for c in prefix):
        raise reader.fail("store.url", f"expected s3://bucket or s3://bucket/prefix, got {url!r}")
    for key in ("endpoint", "host_endpoint"):
        value = given.get(key, "")
        if value and (not value.startswith(("http://", "https://")) or any(c.isspace() for c in value)):
            raise reader.fail(f"store.{key}", f"expected an http(s) URL, got {value!r}")
    values = {k: v.rstrip("/") if k.endswith("endpoint") else v for k, v in given.items() if k != "url"}
    if values.get("signing_key"):
        values["signing_key"] = reader.resolve(values["signing_key"])
    trusted = []
    for i, entry in enumerate(values.pop("trusted_keys", [])):
        if not isinstance(entry, str) or not entry.strip():
            raise reader.fail(f"store.trusted_keys[{i}]", "expected an ssh-ed25519 key line or a file path")
        trusted.append(entry.strip() if entry.startswith("ssh-") else reader.resolve(entry))
    return StoreSettings(bucket=bucket, prefix=prefix, trusted_keys=tuple(trusted), **values)


def split_url(url: str) -> tuple[str, str]:
    """s3://bucket/some/prefix -> ("bucket", "some/prefix/"); s3://bucket -> ("bucket", "")."""
    if not url.startswith("s3://"):
        return "", ""
    bucket, _, prefix = url[len("s3://") :].partition("/")
    prefix = prefix.strip("/")
    return bucket, prefix + "/" if prefix else ""
