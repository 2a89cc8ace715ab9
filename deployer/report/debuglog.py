"""`--debug`: Python's logging at DEBUG on stderr, minus what would let a reader of the log act
as this machine's store credentials. botocore's signer logs each request's canonical request,
string to sign and signature (enough, with a presigned URL's query, to rebuild a working URL):
those records are dropped; a signature, credential or session token left in any other record (a
request's Authorization header, a URL) is masked, and so is every registered secret."""

from __future__ import annotations

import logging
import re

from deployer.redact import MASK, redact

SIGNER = "botocore.auth"  # logs the canonical request, the string to sign and the signature at DEBUG
_SIGNED = re.compile(r"""((?:Signature|Credential|Security-Token)['"]?\s*[:=]\s*(?:b?['"])?)[^\s&,;'"]+""", re.I)


class Redacting(logging.Filter):
    """Drops the signer's DEBUG records; masks signatures, credentials, tokens and secrets."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == SIGNER or record.name.startswith(SIGNER + "."):
            return record.levelno >= logging.INFO
        text = record.getMessage()
        masked = redact(_SIGNED.sub(lambda m: m.group(1) + MASK, text))
        if masked != text:
            record.msg, record.args = masked, None
        return True


def enable() -> None:
    """Log at DEBUG on stderr through the redacting filter (on every handler of the root logger,
    also one INVOKE_DEBUG set up before us)."""
    from invoke.util import enable_logging

    enable_logging()
    logging.getLogger(SIGNER).setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, Redacting) for f in handler.filters):
            handler.addFilter(Redacting())
