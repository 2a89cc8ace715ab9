"""What a deployer run against the sandbox hosts reads besides the hosts themselves: the bundled
sample app as a git repository, and a hosts.toml naming the hosts (written with the TOML writer of
the optional extra, ``deployer[sandbox]``)."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployer.sandbox.image import SandboxError

if TYPE_CHECKING:
    from deployer.sandbox.hosts import SandboxHost

BUNDLED_APP = Path(__file__).resolve().parent / "sample_app"  # package data: in the wheel too


def sample_repo(workdir: Path) -> Path:
    """The bundled sample app as a git repository of its own under workdir (one commit), made
    once: a deploy builds from git, and the installed package is no repository."""
    repo = Path(workdir) / "sample_app"
    if (repo / ".git").is_dir():
        return repo
    shutil.rmtree(repo, ignore_errors=True)
    shutil.copytree(BUNDLED_APP, repo, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    ident = ["-c", "user.name=deployer sandbox", "-c", "user.email=sandbox@localhost", "-c", "commit.gpgsign=false"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], [*ident, "commit", "-q", "-m", "sample app"]):
        r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
        if r.returncode != 0:
            raise SandboxError(f"cannot make {repo} a git repository: {r.stderr.strip()}")
    return repo


def _deep_merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def write_config(
    path: Path,
    hosts: list[SandboxHost],
    key_path: Path,
    known_hosts_path: Path,
    *,
    stage: str = "sandbox",
    deploy_to: str = "/srv/app",
    app_name: str = "sample",
    source: str,
    extra: dict | None = None,
) -> Path:
    """Write a hosts.toml for the hosts; the first host has roles web+migrate, the others web."""
    doc: dict[str, Any] = {
        "app": {
            "name": app_name,
            "deploy_to": deploy_to,
            "keep_releases": 5,
            "shared_dirs": ["log"],
            "shared_files": [],
        },
        "build": {"source": str(source)},
        "ssh": {
            "user": "deploy",
            "key": str(Path(key_path).resolve()),
            "known_hosts": str(Path(known_hosts_path).resolve()),
            "host_key_policy": "strict",
            "connect_timeout": 10,
        },
        "stages": {
            stage: {
                "hosts": [
                    {"host": h.host, "port": h.port, "name": h.name, "roles": ["web", "migrate"] if i == 0 else ["web"]}
                    for i, h in enumerate(hosts)
                ]
            }
        },
    }
    _deep_merge(doc, extra or {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(toml_module().dumps(doc))
    return path


def toml_module():
    """The TOML writer, part of the optional extra."""
    try:
        import toml  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        raise SandboxError("sandbox hosts need the optional extra: pip install 'deployer[sandbox]'") from None
    return toml
