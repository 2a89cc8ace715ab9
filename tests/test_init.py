"""`deployer init`: a fresh git repository goes init -> check -> deploy against real hosts; the
recipe is guessed from the tree; nothing is ever overwritten (or written through a link)
without --force; the CI workflow on request is one the CI can read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import cli_env, git
from invoke.vendor import yaml

from deployer.cli import scaffold


def deployer(cwd: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deployer", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(),
    )


def repo_with(tmp_path: Path, name: str, *files: str) -> Path:
    repo = tmp_path / name
    repo.mkdir()
    for f in files:
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        (repo / f).write_text("x\n")
    git(repo, "init", "-q", "-b", "main")
    return repo


@pytest.mark.parametrize(
    "files, recipe",
    [
        (("manage.py", "gunicorn.conf.py"), "django"),
        (("gunicorn.conf.py", "app.py"), "python_wsgi"),
        (("public/index.html",), "static_site"),
        (("README.md", "src/gunicorn.conf.py"), ""),
    ],
)
def test_recipe_is_guessed_from_the_tree(tmp_path, files, recipe):
    repo = repo_with(tmp_path, "shop", *files)
    assert scaffold.guess_recipe(repo)[0] == recipe
    proc = deployer(repo, "init")
    assert proc.returncode == 0, proc.stderr
    from deployer.config import load as config

    cfg = config.parse((repo / "hosts.toml").read_text(), repo / "hosts.toml")
    assert cfg.stage("production").app.recipe == recipe
    assert cfg.stage("production").app.name == "shop" and cfg.stage("production").app.deploy_to == "/srv/shop"
    assert "next: put your server(s)" in proc.stdout and "deployer check" in proc.stdout


def test_built_artifacts_are_ignored_so_the_next_build_is_clean(tmp_path):
    repo = repo_with(tmp_path, "shop", "app.py")
    (repo / ".gitignore").write_text("*.pyc")  # the user's own lines stay
    assert deployer(repo, "init").returncode == 0
    assert (repo / ".gitignore").read_text() == "*.pyc\nartifacts/\n"
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "deploy config")
    for _ in range(2):
        proc = deployer(repo, "build")
        assert proc.returncode == 0, proc.stderr
    assert deployer(repo, "init", "--force").returncode == 0  # already ignored: not added twice
    assert (repo / ".gitignore").read_text() == "*.pyc\nartifacts/\n"


def test_app_name_from_the_repository_directory(tmp_path):
    assert scaffold.app_name(tmp_path / "My Shop.v2") == "my-shop.v2"
    assert scaffold.app_name(tmp_path / "--") == "app"


def test_outside_a_git_repository_is_bad_input(tmp_path):
    proc = deployer(tmp_path, "init")
    assert proc.returncode == 2 and "not in a git repository" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_never_overwrites_without_force(tmp_path):
    repo = repo_with(tmp_path, "shop")
    (repo / "tasks.py").write_text("# mine\n")
    proc = deployer(repo, "init", "--ci", "github")
    assert proc.returncode == 2 and "tasks.py" in proc.stderr and "--force" in proc.stderr
    assert (repo / "tasks.py").read_text() == "# mine\n"
    assert not (repo / "hosts.toml").exists() and not (repo / ".github").exists()  # nothing half-done

    outside = tmp_path / "outside.toml"
    outside.write_text("keep me\n")
    (repo / "hosts.toml").symlink_to(outside)
    proc = deployer(repo, "init", "--force")
    assert proc.returncode == 0, proc.stderr
    assert outside.read_text() == "keep me\n"  # the link was replaced, not written through
    assert not (repo / "hosts.toml").is_symlink() and "[stages.production]" in (repo / "hosts.toml").read_text()
    assert "deployer.cli.tasks import ns" in (repo / "tasks.py").read_text()


@pytest.mark.parametrize(
    "bad",
    [
        ["--ci", "jenkins"],
        ["--stage", "prod uction"],
        ["--hosts", "a b"],
        ["--deploy-to", "srv/app"],
        ["--recipe", "rails"],
    ],
)
def test_bad_options_are_bad_input(tmp_path, bad):
    repo = repo_with(tmp_path, "shop")
    proc = deployer(repo, "init", *bad)
    if bad[0] == "--recipe":  # an unknown recipe is refused by the config check itself
        assert proc.returncode == 0
        proc = deployer(repo, "check")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_ci_workflows_parse(tmp_path):
    repo = repo_with(tmp_path, "shop")
    assert deployer(repo, "init", "--ci", "github", "--stage", "live").returncode == 0
    flow = yaml.safe_load((repo / ".github/workflows/deploy.yml").read_text())
    runs = [s.get("run", "") for s in flow["jobs"]["deploy"]["steps"]]
    assert any('deployer deploy --stage live --version "$GITHUB_SHA" --lock-wait 600 --json' in r for r in runs)
    repo2 = repo_with(tmp_path, "shop2")
    assert deployer(repo2, "init", "--ci", "gitlab").returncode == 0
    job = yaml.safe_load((repo2 / ".gitlab-ci.yml").read_text())["deploy"]
    assert (
        'deployer deploy --stage production --version "$CI_COMMIT_SHA" --lock-wait 600 --json > deploy.json'
        in job["script"]
    )


def test_init_check_deploy_on_a_fresh_repository(sandbox, app_repo):
    """A new user's first deploy: init in their repository, point it at the hosts, check, deploy."""
    sb = sandbox(2)
    hosts = ",".join(f"127.0.0.1:{h.port}" for h in sb.hosts)
    proc = deployer(app_repo, "init", "--hosts", hosts, "--deploy-to", "/srv/app", "--ci", "github")
    assert proc.returncode == 0, proc.stderr
    assert "next: deployer check" in proc.stdout
    # what the user edits: their key and known_hosts (uncommenting the lines init wrote)
    text = (app_repo / "hosts.toml").read_text()
    text = text.replace('# key = "~/.ssh/id_ed25519"', f'key = "{sb.key_path}"')
    text = text.replace('# known_hosts = "~/.ssh/known_hosts"', f'known_hosts = "{sb.known_hosts_path}"')
    (app_repo / "hosts.toml").write_text(text)
    git(app_repo, "add", "-A")
    git(app_repo, "commit", "-q", "-m", "deploy config")

    proc = deployer(app_repo, "check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the deploy: the steps of the workflow init wrote, as its CI would run them (from a clean checkout)
    flow = yaml.safe_load((app_repo / ".github/workflows/deploy.yml").read_text())
    steps = [s["run"] for s in flow["jobs"]["deploy"]["steps"] if s.get("run", "").startswith("deployer ")]
    assert len(steps) == 2, steps
    env = {
        **cli_env(),
        "PATH": f"{Path(sys.executable).parent}:{cli_env()['PATH']}",
        "GITHUB_SHA": git(app_repo, "rev-parse", "HEAD"),
    }
    for step in steps:
        proc = subprocess.run(
            ["bash", "-eo", "pipefail", "-c", step], cwd=app_repo, env=env, capture_output=True, text=True, timeout=180
        )
        assert proc.returncode == 0, step + "\n" + proc.stdout + proc.stderr
    assert json.loads((app_repo / "deploy.json").read_text())["result"] == "ok"
    proc = deployer(app_repo, "status", "--json")
    rows = json.loads(proc.stdout)["hosts"]
    assert [r["current"] for r in rows] == [1, 1], rows
    for h in sb.hosts:
        code, out = sb.exec(h, "cat /srv/app/current/app.py /srv/app/current/hosts.toml")
        assert code == 0 and "hello from sample" in out and "[stages.production]" in out

    inv = Path(sys.executable).with_name("inv")  # the tasks.py init wrote serves `inv` too
    proc = subprocess.run([str(inv), "--list"], cwd=app_repo, capture_output=True, text=True, env=cli_env())
    assert proc.returncode == 0 and "deploy" in proc.stdout and "maintenance" in proc.stdout
