"""The sandbox one directory started (`deployer sandbox.up`, `sandbox.down`): its hosts (hosts.py),
their key and known_hosts, and the hosts.toml naming them (deploy_files.py). A label naming the
user and the directory marks its containers: `down` and `running` see only these."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from deployer.sandbox.deploy_files import write_config
from deployer.sandbox.hosts import (
    DEFAULT_LABEL,
    SandboxHost,
    docker_client,
    ensure_client_key,
    published_ports,
    start_hosts,
    stop_all,
    write_known_hosts,
)
from deployer.sandbox.image import BASE, SYSTEMD, ensure_image


def instance(workdir: Path, label: str = DEFAULT_LABEL) -> dict[str, str]:
    """The label naming the hosts one ``up()`` started: this user's, for this sandbox directory.
    ``down()`` and ``running()`` see only these, never another checkout's or another user's."""
    owner = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "")
    digest = hashlib.sha256(f"{owner}:{Path(workdir).resolve()}".encode()).hexdigest()[:16]
    return {f"{label}.instance": digest}


def up(
    n: int,
    workdir: Path = Path(".sandbox"),
    config_path: Path = Path("hosts.sandbox.toml"),
    source: str = ".",
    *,
    label: str = DEFAULT_LABEL,
    systemd: bool = False,
) -> list[SandboxHost]:
    """Replace the sandbox this directory started with n fresh hosts (``systemd``: of the SYSTEMD
    image); write the key, known_hosts and config.

    Each host's port 80 is published on 127.0.0.1 as well (see ``running()`` / ``http_port``).
    """
    down(workdir, label)
    ensure_image(flavour=SYSTEMD if systemd else BASE)
    key = ensure_client_key(workdir)
    # port 80 is published too (loopback only), for `python -m deployer.sandbox serve` and request streams
    hosts = start_hosts(
        n,
        key.with_suffix(".pub").read_text(),
        label=label,
        systemd=systemd,
        ports={"80/tcp": None},
        labels=instance(workdir, label),
    )
    known_hosts = write_known_hosts(Path(workdir) / "known_hosts", hosts)
    write_config(config_path, hosts, key, known_hosts, source=source)
    return hosts


def down(workdir: Path = Path(".sandbox"), label: str = DEFAULT_LABEL) -> int:
    """Remove the hosts up() started for this directory (and no others); return how many."""
    return stop_all(_filter(workdir, label))


def _filter(workdir: Path, label: str) -> str:
    ((key, value),) = instance(workdir, label).items()
    return f"{key}={value}"


def running(workdir: Path = Path(".sandbox"), label: str = DEFAULT_LABEL) -> list[SandboxHost]:
    """The running hosts up() started for this directory, ordered host-1, host-2, ..."""
    hosts = []
    for c in docker_client().containers.list(filters={"label": _filter(workdir, label)}):
        ports = published_ports(c)
        if "22/tcp" in ports:
            hosts.append(
                SandboxHost(
                    name=c.labels[label],
                    host="127.0.0.1",
                    port=ports["22/tcp"],
                    container_id=c.id,
                    label=label,
                    ports=ports,
                    systemd=c.labels.get(f"{label}.flavour") == "systemd",
                )
            )
    return sorted(hosts, key=lambda h: (len(h.name), h.name))
