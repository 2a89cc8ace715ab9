"""The dependencies as pinned, and the private paramiko surfaces the transport relies on: an
upgrade that moves one fails here, naming it, instead of failing deploys in odd ways."""

from __future__ import annotations

import ast
import inspect
import re
import socket
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import paramiko
import pytest
from packaging.requirements import Requirement

import deployer.ssh as transport_package
from deployer.ssh import tuning

PYPROJECT = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
RUNTIME = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]


@pytest.mark.parametrize("req", RUNTIME, ids=str)
def test_runtime_dependencies_are_pinned_to_the_tested_major_and_installed(req):
    """Every runtime dependency has an upper bound (the next major, or minor for 0.x), and the
    version these tests run on satisfies its range."""
    assert any(s.operator == "<" for s in req.specifier), f"{req.name} has no upper bound: {req}"
    installed = metadata.version(req.name)
    assert req.specifier.contains(installed), f"{req.name} {installed} is outside the pinned range {req}"


# (what, its parameters): each private method the transport (deployer/ssh/) overrides or calls
PRIVATE_METHODS = [
    ("paramiko.Transport._parse_global_request", ["self", "m"]),  # overridden by tuning.AckingTransport
    ("paramiko.Transport._send_message", ["self", "data"]),  # called by that override
    ("paramiko.Transport._send_user_message", ["self", "data"]),  # called by runloop.send_exec
]


def test_every_private_paramiko_method_the_transport_uses_is_listed():
    """PRIVATE_METHODS stays complete: a private name that the modules importing paramiko define
    (an override) or call, and that a paramiko class has, is one of them."""
    listed = {name for name, _ in PRIVATE_METHODS}
    package = Path(transport_package.__file__).parent
    used = set()
    for path in package.glob("*.py"):
        text = path.read_text()
        if not re.search(r"^(import|from) paramiko", text, re.MULTILINE):
            continue
        for name in set(re.findall(r"(?:\.|def )(_[a-z]\w*)\b", text)):
            used |= {
                f"paramiko.{cls}.{name}"
                for cls in ("Transport", "Channel", "SSHClient", "Message")
                if hasattr(getattr(paramiko, cls), name)
            }
    assert "paramiko.Transport._send_user_message" in used  # the scan sees what it must
    assert used <= listed, f"not in PRIVATE_METHODS: {sorted(used - listed)}"


@pytest.mark.parametrize("name, params", PRIVATE_METHODS, ids=[m[0] for m in PRIVATE_METHODS])
def test_the_private_paramiko_methods_the_transport_uses_are_there(name, params):
    _, cls, method = name.split(".")
    fn = getattr(getattr(paramiko, cls), method, None)
    assert callable(fn), f"{name} is gone: deployer/ssh/ relies on it (see its callers)"
    got = list(inspect.signature(fn).parameters)
    assert got == params, f"{name} now takes {got}, deployer/ssh/ expects {params}"


def test_the_transport_override_is_what_paramiko_dispatches_global_requests_to():
    """paramiko routes a server's global request through its per-instance handler table; our
    override must be the entry there, or the ACK it sends never happens (silently slower)."""
    ours, theirs = socket.socketpair()
    try:
        t = tuning.AckingTransport(ours)
        table = getattr(t, "_handler_table", None)
        assert isinstance(table, dict), "paramiko.Transport._handler_table is gone"
        handler = table.get(paramiko.common.MSG_GLOBAL_REQUEST)
        assert getattr(handler, "__func__", None) is tuning.AckingTransport._parse_global_request, (
            "paramiko.Transport._handler_table[MSG_GLOBAL_REQUEST] no longer calls _parse_global_request"
        )
        assert t.server_mode is False, "paramiko.Transport.server_mode is gone"
        t.close()
    finally:
        ours.close()
        theirs.close()


def test_the_private_paramiko_names_the_transport_reads_are_there():
    assert isinstance(getattr(paramiko.common, "cMSG_IGNORE", None), bytes), "paramiko.common.cMSG_IGNORE"
    assert isinstance(getattr(paramiko.common, "cMSG_CHANNEL_REQUEST", None), bytes), (
        "paramiko.common.cMSG_CHANNEL_REQUEST"
    )
    assert hasattr(paramiko.Channel(0), "remote_chanid"), "paramiko.Channel.remote_chanid (used by runloop.send_exec)"
    assert "transport_factory" in inspect.signature(paramiko.SSHClient.connect).parameters, (
        "paramiko.SSHClient.connect(transport_factory=) (how connect._open installs AckingTransport)"
    )
    assert issubclass(paramiko.hostkeys.InvalidHostKey, Exception), "paramiko.hostkeys.InvalidHostKey"


SANDBOX = [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["sandbox"]]
PACKAGE = Path(__file__).resolve().parent.parent / "deployer"
# the import name of each runtime dependency
RUNTIME_IMPORTS = {
    "fabric": "fabric",
    "invoke": "invoke",
    "paramiko": "paramiko",
    "tabulate": "tabulate",
    "boto3": "boto3",
    "botocore": "botocore",
    "s3transfer": "s3transfer",
    "cryptography": "cryptography",
}


@pytest.mark.parametrize("req", SANDBOX, ids=str)
def test_sandbox_extra_is_pinned_to_the_tested_major_and_installed(req):
    assert any(s.operator == "<" for s in req.specifier), f"{req.name} has no upper bound: {req}"
    installed = metadata.version(req.name)
    assert req.specifier.contains(installed), f"{req.name} {installed} is outside the pinned range {req}"


def test_the_runtime_dependencies_are_the_ones_named_here():
    assert sorted(r.name for r in RUNTIME) == sorted(RUNTIME_IMPORTS)
    assert "toml" in {r.name for r in SANDBOX} and "toml" not in {r.name for r in RUNTIME}


def imported_packages(path: Path) -> set[str]:
    """Top-level names of the absolute imports in one module (lazy ones inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_outside_the_sandbox_the_package_imports_only_its_runtime_dependencies():
    """The optional extra's packages (toml, testcontainers, docker) are imported by
    deployer/sandbox/ only: a plain `pip install symlink-deployer` runs every other module (the
    recipes, whose source is recipes/ at the top, included)."""
    allowed = set(sys.stdlib_module_names) | set(RUNTIME_IMPORTS.values()) | {"deployer"}
    modules = [p for p in PACKAGE.rglob("*.py") if "sandbox" not in p.relative_to(PACKAGE).parts]
    modules += sorted((PACKAGE.parent / "recipes").glob("*.py"))
    assert len(modules) > 20
    foreign = {f"{p.relative_to(PACKAGE.parent)}: {name}" for p in modules for name in imported_packages(p) - allowed}
    assert not foreign, sorted(foreign)
    assert "toml" in imported_packages(PACKAGE / "sandbox" / "deploy_files.py")  # the scan sees lazy imports
