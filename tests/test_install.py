"""Everything a user needs ships in the sdist and the wheel, built from the tracked files (the wheel
from the sdist): each installs into an empty venv and finds the recipes and the reference config,
as an editable install and a checkout run as is find the checkout's own. Then the wheel, installed
with the `sandbox` extra into a fresh venv outside the repository, from an empty directory: the
first five minutes of a new user: --list, init, sandbox.up, a deploy of the bundled sample app,
status, sandbox.down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import REPO, git

from deployer import DISTRIBUTION, __version__
from deployer.config.example import NAME

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
    home.mkdir(exist_ok=True)
    env.update(HOME=str(home), TESTCONTAINERS_RYUK_DISABLED="true")
    return env


def tracked_copy(dest: Path) -> Path:
    """The files git would ship (nothing untracked-but-ignored: no build/, no .venv), copied to dest."""
    files = (
        subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z"], capture_output=True, check=True
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, files):
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes((REPO / rel).read_bytes())
            (dest / rel).chmod((REPO / rel).stat().st_mode)
    return dest


def new_venv(path: Path) -> Path:
    """A fresh, empty venv (not even pip: `pip()` installs into it from outside); its bin/."""
    run([sys.executable, "-m", "venv", "--without-pip", path], path.parent, dict(os.environ))
    return path / "bin"


def pip(venv_bin: Path, *args: str | Path, cwd: Path) -> None:
    """This interpreter's pip, working on the venv of venv_bin (which must not see this checkout)."""
    run([sys.executable, "-m", "pip", "--python", venv_bin / "python", *args], cwd, clean_env(cwd))


@dataclass
class Dist:
    src: Path  # the copy of the checkout the builds ran from
    sdist: Path
    wheel: Path  # built from the sdist, as a release is
    wheelhouse: Path  # setuptools, for the builds pip makes while installing (offline)


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Dist:
    """The sdist, built from a copy of the checkout through the PEP 517 backend, and the wheel built
    from that sdist (so the sdist is proved complete)."""
    base = tmp_path_factory.mktemp("dist")
    src = tracked_copy(base / "src")
    env = dict(os.environ)
    wheelhouse, out = base / "wheelhouse", base / "out"
    frontend = new_venv(base / "frontend")
    run([sys.executable, "-m", "pip", "download", "-q", "-d", wheelhouse, "setuptools>=77"], base, env)
    pip(frontend, "install", "-q", "--no-index", "--find-links", wheelhouse, "setuptools>=77", cwd=base)
    hook = "import sys; from setuptools import build_meta as b; print(getattr(b, sys.argv[1])(sys.argv[2]))"
    sdist = out / run([frontend / "python", "-c", hook, "build_sdist", out], src, env).stdout.split()[-1]
    with tarfile.open(sdist) as tf:
        tf.extractall(base / "unpacked", filter="data")
    unpacked = base / "unpacked" / sdist.name.removesuffix(".tar.gz")
    wheel = out / run([frontend / "python", "-c", hook, "build_wheel", out], unpacked, env).stdout.split()[-1]
    return Dist(src, sdist, wheel, wheelhouse)


@pytest.fixture(scope="module")
def wheel(dist) -> Path:
    return dist.wheel


def test_the_tree_packages_are_the_ones_pyproject_names():
    """pyproject.toml names every package (recipes/ is mapped to deployer.recipes): none forgotten."""
    tree = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "deployer").rglob("__init__.py")}
    tree |= {"deployer.recipes"} if (REPO / "recipes" / "__init__.py").is_file() else set()
    setuptools_cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(setuptools_cfg["packages"]) == tree
    assert setuptools_cfg["package-dir"] == {"deployer.recipes": "recipes"}


WHERE = (
    "import json, pkgutil, deployer, deployer.recipes as r, deployer.config.example as e; "
    "print(json.dumps({'package': deployer.__file__, 'recipes': r.__path__[0], 'example': str(e.path()), "
    "'names': sorted(m.name for m in pkgutil.iter_modules(r.__path__))}))"
)
RECIPES = sorted(p.stem for p in (REPO / "recipes").glob("*.py") if not p.stem.startswith("_"))


def where(python: Path, tmp_path: Path, env: dict | None = None) -> dict:
    """Where the package, its recipes and the reference config come from, run from an empty directory."""
    empty = tmp_path / "empty"
    empty.mkdir(exist_ok=True)
    return json.loads(run([python, "-c", WHERE], empty, env or clean_env(tmp_path)).stdout)


def test_a_checkout_run_as_is_uses_its_own_recipes_and_example(tmp_path):
    """PYTHONPATH=<checkout>, whatever deployer this interpreter has installed: the recipes and the
    reference config of that checkout (recipes/ and hosts.example.toml at its top level)."""
    src = tracked_copy(tmp_path / "src")
    env = {**clean_env(tmp_path), "PYTHONPATH": str(src)}
    found = where(Path(sys.executable), tmp_path, env)
    assert found["package"] == str(src / "deployer" / "__init__.py")
    assert found["recipes"] == str(src / "recipes") and found["names"] == RECIPES
    assert found["example"] == str(src / "hosts.example.toml")


def install_alone(dist: Dist, tmp_path: Path, *target: str | Path) -> Path:
    """Install into a fresh venv with no dependencies and no index (the builds pip makes get setuptools
    from the wheelhouse); the dependencies are then taken from this test's venv, behind the new one's
    own site-packages, so the commands can run. Returns the venv's bin/."""
    bin_ = new_venv(tmp_path / "venv")
    pip(bin_, "install", "-q", "--no-deps", "--no-index", "--find-links", dist.wheelhouse, *target, cwd=tmp_path)
    (site,) = (tmp_path / "venv" / "lib").glob("python3*/site-packages")
    (site / "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return bin_


@pytest.mark.parametrize("kind", ["sdist", "wheel"])
def test_sdist_and_wheel_install_into_an_empty_venv_with_recipes_and_example(dist, tmp_path, kind):
    bin_ = install_alone(dist, tmp_path, getattr(dist, kind))
    venv = tmp_path / "venv"
    found = where(bin_ / "python", tmp_path)
    assert found["package"].startswith(str(venv)) and found["recipes"].startswith(str(venv)), found
    assert found["names"] == RECIPES
    example = Path(found["example"])
    assert example.is_relative_to(venv) and example.read_text() == (REPO / "hosts.example.toml").read_text()
    version = run([bin_ / "deployer", "--version"], tmp_path, clean_env(tmp_path)).stdout
    assert version == f"deployer {__version__} ({DISTRIBUTION})\n"


def test_sdist_carries_what_a_build_needs_and_no_tests(dist):
    with tarfile.open(dist.sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    needed = {"pyproject.toml", "setup.py", "hosts.example.toml", "recipes/python_wsgi.py", "LICENSE", "CHANGELOG.md"}
    assert needed <= names, needed - names
    assert not any(n.startswith(("tests/", "benchmarks/", ".ci/")) for n in names), names


def test_editable_install_finds_the_checkouts_recipes_and_example(dist, tmp_path):
    """The project's own setup (scripts/setup: pip install -e): recipes/ and hosts.example.toml of the
    checkout, through the editable install's mapping of deployer.recipes."""
    src = tracked_copy(tmp_path / "src")
    bin_ = install_alone(dist, tmp_path, "-e", src)
    found = where(bin_ / "python", tmp_path)
    assert found["package"] == str(src / "deployer" / "__init__.py")
    assert found["recipes"] == str(src / "recipes") and found["names"] == RECIPES
    assert found["example"] == str(src / "hosts.example.toml")
    assert not (src / "deployer" / "recipes").exists() and not (src / "deployer" / "config" / NAME).exists()


def test_the_release_metadata_name_version_and_license(wheel):
    """The distribution's name (`deployer` on the package index is another project's), the version
    from deployer.__version__ alone, the license, as the built wheel states them."""
    import zipfile

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "version" not in project and project["dynamic"] == ["version"]
    with zipfile.ZipFile(wheel) as zf:
        meta = next(zf.read(n).decode() for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        licenses = [n for n in zf.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
    fields = [tuple(line.split(": ", 1)) for line in meta.split("\n\n", 1)[0].splitlines() if ": " in line]
    assert ("Name", DISTRIBUTION) in fields and ("Version", __version__) in fields
    assert ("License-Expression", "MIT") in fields and licenses
    assert ("Classifier", "Programming Language :: Python :: 3.11") in fields
    assert wheel.name.startswith(f"{DISTRIBUTION.replace('-', '_')}-{__version__}-")
    assert "## Unreleased" in (REPO / "CHANGELOG.md").read_text()


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

    assert needed("") == {"fabric", "invoke", "paramiko", "tabulate", "boto3", "botocore", "s3transfer", "cryptography"}
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
            [bin_ / "python", "-c", "from deployer.config import example; print(example.path())"], work, env
        ).stdout.strip()
    )
    assert ref.is_relative_to(venv) and "[stages.production]" in ref.read_text()

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
