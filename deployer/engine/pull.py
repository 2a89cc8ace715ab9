"""What a deploy needs to have hosts pull the artifact from the store instead of receiving it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Pull:
    endpoint: str  # the store endpoint as the hosts reach it ("" is AWS's), for messages
    presign: Callable[[], str]  # a fresh presigned GET URL of the artifact: a secret, stdin only
