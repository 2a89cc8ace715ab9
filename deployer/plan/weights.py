"""A share of requests through the load balancer (pure): the nginx `weight=` of each app host so
that the canary hosts get `percent` % of the requests, and the weights file's text.

nginx's weighted round robin sends each server weight / (sum of weights) of the requests. Every
canary host gets the same weight `wc`, every other host `wo`; the share is k*wc / (k*wc + (n-k)*wo)
for k canary hosts among n. The pair with the smallest lower weight within `TOLERANCE` points of the asked share is
taken (exhaustively checked for 1..99 % and 2..20 hosts: never further than that).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

TOLERANCE = 0.25  # points of percent the realised share may be off the asked one
MAX_SMALL = 100  # the largest value tried for the smaller of the two weights


@dataclass(frozen=True)
class Server:
    """One line of the upstream: an app host, its address as nginx reaches it, its weight."""

    host: str  # the host's name in hosts.toml
    address: str  # host:port, as the lb reaches it
    weight: int


def pair(hosts: int, canary: int, percent: float) -> tuple[int, int]:
    """(weight of each canary host, weight of each other host) giving `percent` % to the canary."""
    if not 0 < canary < hosts:
        raise ValueError(f"a share needs canary hosts and other hosts: {canary} of {hosts}")
    if not 0 < percent < 100:
        raise ValueError(f"a share is a percent between 0 and 100, got {percent}")
    rest = hosts - canary
    best: tuple[float, int, int] | None = None
    for small in range(1, MAX_SMALL + 1):  # the smaller of the two weights, then the other from it
        for wc, wo in (
            (max(1, round(percent * rest * small / ((100 - percent) * canary))), small),
            (small, max(1, round((100 - percent) * canary * small / (percent * rest)))),
        ):
            off = abs(share(canary, wc, rest, wo) - percent)
            if off <= TOLERANCE:
                return wc, wo
            if best is None or off < best[0]:
                best = (off, wc, wo)
    assert best is not None
    return best[1], best[2]


def share(canary: int, wc: int, rest: int, wo: int) -> float:
    """The percent of requests canary hosts of weight wc get beside rest hosts of weight wo."""
    return 100.0 * canary * wc / (canary * wc + rest * wo)


def servers(app_hosts: Sequence[tuple[str, str]], canary: Sequence[str], percent: float) -> tuple[Server, ...]:
    """Each app host (name, address) with its weight for `percent` % to the `canary` names."""
    wc, wo = pair(len(app_hosts), len(canary), percent)
    return tuple(Server(name, address, wc if name in canary else wo) for name, address in app_hosts)


def equal(app_hosts: Sequence[tuple[str, str]]) -> tuple[Server, ...]:
    return tuple(Server(name, address, 1) for name, address in app_hosts)


def realised(lines: Sequence[Server], canary: Sequence[str]) -> float:
    """The percent of requests the canary hosts get with these weights."""
    total = sum(s.weight for s in lines)
    return 100.0 * sum(s.weight for s in lines if s.host in canary) / total


def text(lines: Sequence[Server], note: str) -> str:
    """The weights file: one `server` line per app host, included inside the lb's `upstream`."""
    body = "".join(f"server {s.address} weight={s.weight};  # {s.host}\n" for s in lines)
    return f"# Written by deployer ({note}); put back when the deploy ends.\n{body}"


def upstream_address(template: str, name: str, address: str) -> str:
    """[canary] upstream with {name} and {address} filled in: where the lb reaches one app host."""
    return template.replace("{name}", name).replace("{address}", address)
