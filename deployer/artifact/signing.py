"""Signed artifact metadata: an Ed25519 signature inside the published .json, over its other keys.

The .json holds the tarball's sha256, so a valid signature vouches for the tarball too. Keys are
the ones `ssh-keygen -t ed25519` makes: `[store] signing_key` is the private key file (OpenSSH or
PEM, without a passphrase), `[store] trusted_keys` lists public keys (`ssh-ed25519 AAAA...` lines,
or files of them). Keys are named by their OpenSSH fingerprint (`SHA256:...`); key material is
never printed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployer.errors import ArtifactError, ConfigError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

Meta = dict[str, Any]  # an artifact's .json
Trusted = dict[str, "Ed25519PublicKey"]  # fingerprint -> key

FIELD = "signature"  # the .json key holding {"key": fingerprint, "ed25519": base64 signature}
_CONTEXT = b"deployer artifact metadata v1\n"


def payload(meta: Meta) -> bytes:
    """The bytes signed: every key but the signature, in one canonical JSON form."""
    rest = {k: v for k, v in meta.items() if k != FIELD}
    return _CONTEXT + json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def fingerprint(public: Ed25519PublicKey) -> str:
    """The OpenSSH fingerprint of an Ed25519 public key: SHA256:<base64, unpadded>."""
    from cryptography.hazmat.primitives import serialization

    line = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    blob = base64.b64decode(line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def load_private(path: str) -> Ed25519PrivateKey:
    """The Ed25519 private key in the file at `path`; ConfigError naming the file (never its
    content) when it is missing, not a key, another kind of key, or passphrase-protected."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    where = f"store.signing_key: {path}"
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it ({exc.strerror or type(exc).__name__})") from None
    openssh = b"OPENSSH PRIVATE KEY" in data
    key: object
    try:
        if openssh:
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(f"{where}: the key has a passphrase; use one without for signing") from None
    except (ValueError, binascii.Error, IndexError):
        raise ConfigError(f"{where}: not a private key (make one: ssh-keygen -t ed25519 -N '' -f FILE)") from None
    except Exception as exc:  # an unsupported cipher or KDF
        raise ConfigError(f"{where}: cannot load the key ({type(exc).__name__})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{where}: not an Ed25519 key (make one: ssh-keygen -t ed25519 -N '' -f FILE)")
    return key


def parse_public(line: str) -> Ed25519PublicKey | None:
    """An `ssh-ed25519 AAAA... [comment]` line as a public key, or None when it is not one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    parts = line.split()
    if len(parts) < 2 or parts[0] != "ssh-ed25519":
        return None
    try:
        key = serialization.load_ssh_public_key(f"{parts[0]} {parts[1]}".encode())
    except (ValueError, binascii.Error, IndexError):
        return None
    return key if isinstance(key, Ed25519PublicKey) else None


def load_trusted(entries: tuple[str, ...]) -> Trusted:
    """Fingerprint -> public key for each trusted_keys entry: a key line, or a file of them (an
    authorized_keys-like file: blank lines and # comments skipped). ConfigError naming the entry
    that holds no Ed25519 key."""
    trusted = {}
    for entry in entries:
        if entry.startswith("ssh-"):
            lines, where = [entry], f"store.trusted_keys: {entry[:40]}"
        else:
            where = f"store.trusted_keys: {entry}"
            try:
                lines = Path(entry).read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                why = getattr(exc, "strerror", None) or type(exc).__name__
                raise ConfigError(f"{where}: cannot read it ({why})") from None
        keys = [parse_public(line) for line in lines if line.strip() and not line.lstrip().startswith("#")]
        found = [k for k in keys if k is not None]
        if not keys or len(found) < len(keys):
            raise ConfigError(f"{where}: expected ssh-ed25519 key lines (a .pub file of ssh-keygen -t ed25519)")
        trusted.update({fingerprint(k): k for k in found})
    return trusted


def sign(meta: Meta, private: Ed25519PrivateKey) -> Meta:
    """meta with its signature by `private` (replacing any earlier one)."""
    signature = private.sign(payload(meta))
    return {
        **{k: v for k, v in meta.items() if k != FIELD},
        FIELD: {"key": fingerprint(private.public_key()), "ed25519": base64.b64encode(signature).decode()},
    }


def signature_problem(meta: Meta, trusted: Trusted) -> str | None:
    """Why meta's signature is not a valid one by a trusted key (None: it is)."""
    from cryptography.exceptions import InvalidSignature

    field = meta.get(FIELD)
    if field is None:
        return "is not signed"
    if not (isinstance(field, dict) and isinstance(field.get("key"), str) and isinstance(field.get("ed25519"), str)):
        return "has a malformed signature"
    fp = field["key"][:80]
    key = trusted.get(fp)
    if key is None:
        return f"is signed by {fp}, which is not in trusted_keys"
    try:
        key.verify(base64.b64decode(field["ed25519"], validate=True), payload(meta))
    except (InvalidSignature, binascii.Error, ValueError):
        return f"does not match its signature by {fp} (altered after signing)"
    return None


def verify(meta: Meta, trusted: Trusted, name: str) -> str:
    """The fingerprint of the trusted key that signed meta; else ArtifactError, one line naming
    the .json and the key."""
    problem = signature_problem(meta, trusted)
    if problem:
        keys = ", ".join(sorted(trusted)) or "none"
        raise ArtifactError(f"refusing {name} from the store: it {problem} (trusted: {keys})")
    return str(meta[FIELD]["key"])  # a str: signature_problem checked it
