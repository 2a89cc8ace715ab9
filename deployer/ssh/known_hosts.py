"""A known_hosts file checked before any connection, without loading SSH."""

from __future__ import annotations

import base64
import binascii
import os
import re

from deployer.errors import ConfigError


def check_known_hosts(path: str) -> None:
    """ConfigError (exit 2) naming the file and line when a known_hosts line has a key no SSH
    library can decode (two entries run together on one line, say): read the way paramiko reads
    it, which would otherwise fail every host with a raw InvalidHostKey."""
    path = os.path.expanduser(path)
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"known_hosts {path}: cannot read: {exc.strerror or exc}") from None
    for number, line in enumerate(lines, 1):
        fields = re.split(" |\t", line.strip())
        if not fields[0] or fields[0].startswith("#") or len(fields) < 3:
            continue
        try:
            base64.decodebytes(fields[2].encode())
        except binascii.Error:
            raise ConfigError(
                f"known_hosts {path} line {number} is corrupt (not one host, key type and "
                "key: two entries run together?); fix or remove that line"
            ) from None
