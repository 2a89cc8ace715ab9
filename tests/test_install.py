"""Everything a user needs ships in the wheel: built from the tracked files, installed with the
`sandbox` extra into a fresh venv outside the repository, then, from an empty directory, the
first five minutes of a new user: --list, init, sandbox.up, a deploy of the bundled sample app,
status, sandbox.down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, git

pytestmark = pytest.mark.slow


def run(argv: list, cwd: Path, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{argv}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def clean_env(tmp_path: Path) -> dict:
    """A user's shell: no PYTHONPATH, no config from the test run, a home of its own."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DEPLOYER_CONFIG", "VIRTUAL_ENV", "PYTHONHOME")
    }
    home = tmp_path / "home"
    home.mkdir()
    env.update(HOME=str(home), TESTCONTAINERS_RYUK_DISABLED="true")
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the files git would ship (nothing untracked-but-ignored)."""
    base = tmp_path_factory.mktemp("wheel")
    files = (
        subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z"], capture_output=True, check=True
        )
        .stdout.decode()
        .split("\0")
    )
    src = base / "src"
    for rel in filter(None, files):
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes((REPO / rel).read_bytes())
            (src / rel).chmod((REPO / rel).stat().st_mode)
    out = base / "dist"
    run([sys.executable, "-m", "pip", "wheel", src, "--no-deps", "-q", "-w", out], base, dict(os.environ))
    found = sorted(out.glob("deployer-*.whl"))
    assert len(found) == 1, found
    return found[0]


def test_wheel_holds_the_sample_app_the_reference_config_and_the_recipes(wheel):
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "deployer/config/hosts.example.toml",
        "deployer/sandbox/sample_app/app.py",
        "deployer/sandbox/sample_app/gunicorn.conf.py",
        "deployer/sandbox/sample_app/bin/selftest",
        "deployer/recipes/python_wsgi.py",
        "deployer/cli/main.py",
        "deployer/remote/scripts/prepare.sh",
        "deployer/remote/scripts/inspect_meta.awk",
    ):
        assert needed in names, needed
    info = zipfile.ZipFile(wheel).getinfo("deployer/sandbox/sample_app/bin/selftest")
    assert (info.external_attr >> 16) & 0o111, "bin/selftest lost its executable bit"
    assert not any(n.startswith(("tests/", "benchmarks/", "sample_app/")) for n in names)


def test_wheel_needs_toml_and_testcontainers_only_with_the_sandbox_extra(wheel):
    """A plain install gets the runtime dependencies; `deployer[sandbox]` adds what the sandbox
    hosts need (tests/test_dependencies.py checks nothing else imports them)."""
    import zipfile

    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as zf:
        meta = next(zf.read(n).decode() for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
    reqs = [Requirement(line.split(":", 1)[1]) for line in meta.splitlines() if line.startswith("Requires-Dist:")]

    def needed(extra: str) -> set[str]:
        return {r.name for r in reqs if r.marker is None or r.marker.evaluate({"extra": extra})}

    assert needed("") == {"fabric", "invoke", "paramiko", "tabulate", "boto3", "botocore"}
    assert needed("sandbox") - needed("") == {"testcontainers", "toml"}


def test_first_deploy_from_a_fresh_venv_in_an_empty_directory(wheel, sandbox_image, tmp_path):
    env = clean_env(tmp_path)
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv], tmp_path, env)
    bin_ = venv / "bin"
    run([bin_ / "pip", "install", "-q", f"{wheel}[sandbox]"], tmp_path, env)
    env["PATH"] = f"{bin_}{os.pathsep}{env['PATH']}"
    work = tmp_path / "empty"
    work.mkdir()

    where = run([bin_ / "python", "-c", "import deployer, deployer.recipes; print(deployer.__file__)"], work, env)
    assert where.stdout.strip().startswith(str(venv)), where.stdout  # the wheel, not the repository
    listing = run(["deployer", "--list"], work, env).stdout
    for name in ("deploy", "rollback", "status", "init", "run", "logs", "ssh", "maintenance", "sandbox.up"):
        assert f"  {name} " in listing, name

    app = work / "myapp"  # init in the user's own (fresh) repository
    app.mkdir()
    (app / "gunicorn.conf.py").write_text("bind = '127.0.0.1:8000'\n")
    git(app, "init", "-q", "-b", "main")
    init = run(["deployer", "init"], app, env)
    assert "recipe: python_wsgi" in init.stdout and (app / "hosts.toml").exists() and (app / "tasks.py").exists()
    ref = Path(
        run(
            [
                bin_ / "python",
                "-c",
                "import deployer, pathlib; "
                "print(pathlib.Path(deployer.__file__).parent / 'config' / 'hosts.example.toml')",
            ],
            work,
            env,
        ).stdout.strip()
    )
    assert ref.is_file() and "[stages.production]" in ref.read_text()

    try:
        up = run(["deployer", "sandbox.up", "--hosts", "2"], work, env)
        assert "config written to hosts.sandbox.toml" in up.stdout
        deploy = run(["deployer", "deploy", "--config", "hosts.sandbox.toml"], work, env)
        assert "as release 1" in deploy.stdout
        status = run(["deployer", "status", "--config", "hosts.sandbox.toml", "--json"], work, env)
        rows = json.loads(status.stdout)["hosts"]
        assert [r["current"] for r in rows] == [1, 1], rows
        assert (work / ".sandbox" / "sample_app" / "app.py").is_file()
    finally:
        down = subprocess.run(
            ["deployer", "sandbox.down"], cwd=work, env=env, capture_output=True, text=True, timeout=120
        )
    assert down.returncode == 0, down.stderr
    after = subprocess.run(
        ["deployer", "status", "--config", "hosts.sandbox.toml"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert after.returncode == 1  # the hosts are gone
