"""Mistakes a user makes on the command line, run against the installed console script: each is
answered with exit 2 and one line on stderr naming the flag, task, stage or key (with a "did you
mean" where one is close), never a traceback. No host is needed: every one is caught before
anything connects."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, cli_env

DEPLOYER = Path(sys.executable).parent / "deployer"
INV = Path(sys.executable).parent / "inv"

HOSTS_TOML = """\
[app]
name = "shop"
deploy_to = "/srv/shop"

[stages.staging]
hosts = [ { host = "127.0.0.1", port = 9, name = "web-1", roles = ["web"] } ]

[stages.production]
hosts = ["127.0.0.1:9"]
requires = "staging"
"""

# (command line, a substring of the one stderr line); every one exits 2
MISTAKES = [
    # invoke's core flags that mean nothing here (--dry used to run a REAL deploy)
    ("--dry deploy", "unknown option --dry (did you mean --dry-run after the task name?)"),
    ("--pty status", "unknown option --pty"),
    ("--hide both status", "unknown option --hide"),
    ("-T 5 status", "unknown option -T"),
    ("--prompt-for-sudo-password status", "unknown option --prompt-for-sudo-password"),
    ("-f invoke.yaml status", "unknown option -f"),
    ("deploy --warn-only", "deploy: unknown option --warn-only"),
    # short flags invoke used to generate: -e was --reason, -v --version, -d --dry-run (and core debug)
    ("deploy -e why", "deploy: unknown option -e"),
    ("deploy -d", "deploy: unknown option -d"),
    ("deploy -v 1.2", "deploy: unknown option -v"),
    # misspelt tasks and options
    ("deploi", "no task 'deploi' (did you mean deploy?); see: deployer --list"),
    ("help deploi", "no task 'deploi' (did you mean deploy?)"),
    ("--help rolback", "no task 'rolback' (did you mean rollback?)"),
    ("status relases", "no task 'relases' (did you mean releases?)"),
    ("deploy --stagee staging", "deploy: unknown option --stagee (did you mean --stage?); see: deployer deploy -h"),
    ("rollback --too 3", "rollback: unknown option --too (did you mean --to?)"),
    ("--list sandbx", "no namespace 'sandbx' (did you mean sandbox?)"),
    ("deploy staging", "deploy: unexpected argument 'staging' (options take a name, e.g. --stage staging)"),
    # values: missing, not numbers, out of range
    ("deploy --stage", "deploy: --stage needs a value"),
    ("--config", "--config needs a value"),
    ("deploy --batch x", "--batch expects a whole number, got 'x'"),
    ("deploy --canary 1.5", "--canary expects a whole number, got '1.5'"),
    ("deploy -j 0", "--parallel must be at least 1, got '0'"),
    ("status --parallel many", "--parallel expects a whole number, got 'many'"),
    ("deploy --pause soon", "--pause expects a number of seconds, got 'soon'"),
    ("deploy --bake -5", "--bake must be at least 0, got '-5'"),
    ("deploy --bake nan", "--bake expects a number of seconds, got 'nan'"),
    ("deploy --max-fail some", "--max-fail expects a whole number, got 'some'"),
    ("rollback -c hosts.toml -s staging --to ../1", "--to expects a release number or a foreign release's name"),
    ("sandbox.up --hosts lots", "--hosts expects a whole number, got 'lots'"),
    ("deploy --lock-wait soon", "--lock-wait expects a number of seconds, got 'soon'"),
    ("cleanup --foriegn", "cleanup: unknown option --foriegn (did you mean --foreign?)"),
    # stages, hosts, roles (the config is read: --config before the task name)
    ("--config hosts.toml status --stage prod", "no stage 'prod' (did you mean production?)"),
    ("-c hosts.toml status -s stagin", "no stage 'stagin' (did you mean staging?)"),
    ("status --config hosts.toml", "say which stage with --stage (stages: staging, production)"),
    ("status -c hosts.toml -s staging -H web-9", "no host web-9"),
    ("status -c hosts.toml -s staging -r db", "no host has role db"),
    ("status --config missing.toml -s staging", "config file missing.toml not found"),
    # options that need or exclude each other
    ("deploy -c hosts.toml -s production --force", '--force needs --reason "why"'),
    ("deploy -c hosts.toml -s staging --strategy blue-green", "--strategy must be one of all, rolling, canary"),
    ("deploy -c hosts.toml -s staging --artifact a.tar.gz --version v1", "--artifact and --version exclude"),
    ("deploy -c hosts.toml -s staging --version v9", "no artifact 'v9' in"),
    ("rollback -c hosts.toml -s staging --with-migrations --ignore-migrations", "exclude each other"),
    ("unlock -c hosts.toml -s staging", "add --yes once you know it is gone"),
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("mistakes")
    (d / "hosts.toml").write_text(HOSTS_TOML)
    return d


def run(args: list[str], cwd: Path, program: Path = DEPLOYER) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(program), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
    )


def test_the_table_is_long_enough():
    assert len(MISTAKES) >= 30 and len({m for m, _ in MISTAKES}) == len(MISTAKES)


@pytest.mark.parametrize("argv,expected", MISTAKES, ids=[m for m, _ in MISTAKES])
def test_mistake_is_one_line_and_exit_2(workdir, argv, expected):
    proc = run(argv.split(), workdir)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert proc.stdout == ""


def test_every_problem_of_a_config_in_one_run_with_lines(workdir):
    (workdir / "typos.toml").write_text(
        '[app]\nname = "shop"\ndeploy_to = "/srv/shop"\nkeep_relases = 3\n\n'
        "[ssh]\nprot = 2222\n\n"
        '[stages.staging]\nhosts = [ { host = "a", rolez = ["web"] },\n          "b:x" ]\n'
        'requires = "prodution"\n\n'
        '[stages.production]\nhosts = ["c"]\n'
    )
    proc = run(["status", "-c", "typos.toml", "-s", "staging"], workdir)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        "error: typos.toml:4: app.keep_relases: unknown key (did you mean keep_releases?)",
        "error: typos.toml:7: ssh.prot: unknown key (did you mean port?)",
        "error: typos.toml:10: stages.staging.hosts[0].rolez: unknown key (did you mean roles?)",
        "error: typos.toml:10: stages.staging.hosts[1]: bad port 'x' in host 'b:x'",  # the key's line
        "error: typos.toml:12: stages.staging.requires: 'prodution' is not another stage "
        "(did you mean production?) (stages: staging, production)",
    ]


def test_invalid_toml_names_its_line(workdir):
    (workdir / "broken.toml").write_text('[app]\nname = "shop"\ndeploy_to = /srv\n')
    proc = run(["status", "-c", "broken.toml"], workdir)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: broken.toml:3: invalid TOML") and len(proc.stderr.splitlines()) == 1


def test_untracked_config_named_when_the_tree_is_dirty(tmp_path):
    from helpers import git

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "app.py").write_text("print('hi')\n")
    git(repo, "init", "-q")
    git(repo, "add", "app.py")
    git(repo, "commit", "-q", "-m", "one")
    (repo / "hosts.toml").write_text(HOSTS_TOML)
    proc = run(["build"], repo)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "is dirty: hosts.toml (untracked); commit, or ignore (.gitignore) what is untracked" in proc.stderr


def test_config_before_or_after_the_task(workdir):
    for argv in (["--config", "hosts.toml", "hosts", "-s", "staging"], ["hosts", "-s", "staging", "-c", "hosts.toml"]):
        proc = run(argv + ["--json"], workdir)
        assert proc.returncode == 0, proc.stderr
        assert '"web-1"' in proc.stdout


def test_help_at_both_levels_and_version(workdir):
    from deployer import DISTRIBUTION, __version__

    assert run(["--version"], workdir).stdout == f"deployer {__version__} ({DISTRIBUTION})\n"
    for argv in (["-h"], ["--help"], ["help"], []):
        proc = run(argv, workdir)
        assert proc.returncode == 0 and "Usage: deployer [--config PATH] TASK" in proc.stdout, argv
        assert "--dry" not in proc.stdout and "--pty" not in proc.stdout and "--echo" not in proc.stdout
    for argv in (["deploy", "-h"], ["deploy", "--help"], ["help", "deploy"], ["-h", "deploy"]):
        proc = run(argv, workdir)
        assert proc.returncode == 0, (argv, proc.stderr)
        out = proc.stdout
        assert "Usage: deployer deploy [options]" in out
        assert "-s, --stage NAME" in out and "-H, --hosts A,B" in out and "-n, --dry-run" in out
        assert "--batch N" in out and "(default 1)." in out and "--pause SECONDS" in out


def test_messages_name_the_program_that_runs(workdir):
    # the console script says `deployer ...`; invoke's own program (`inv` in the repo) says `inv ...`
    proc = run(["deploy", "-c", "hosts.toml", "-s", "staging", "--version", "v9"], workdir)
    assert "(see: deployer artifacts)" in proc.stderr
    proc = subprocess.run(
        [str(INV), "deploy", "-c", str(workdir / "hosts.toml"), "-s", "staging", "--version", "v9"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
    )
    assert "(see: inv artifacts)" in proc.stderr, proc.stderr


def test_inv_in_the_repo_has_the_same_tasks_and_flags():
    proc = subprocess.run([str(INV), "--list"], cwd=REPO, capture_output=True, text=True, timeout=60, env=cli_env())
    assert proc.returncode == 0 and "deploy" in proc.stdout and "sandbox.up" in proc.stdout
    proc = subprocess.run(
        [str(INV), "deploy", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60, env=cli_env()
    )
    assert proc.returncode == 0 and "-s STRING, --stage=STRING" in proc.stdout and "-n, --dry-run" in proc.stdout
    assert "-d," not in proc.stdout and "-e," not in proc.stdout
    proc = subprocess.run(
        [str(INV), "deploy", "--batch", "x"], cwd=REPO, capture_output=True, text=True, timeout=60, env=cli_env()
    )
    assert "Traceback" not in proc.stderr and "--batch expects a whole number, got 'x'" in proc.stderr


def test_no_runtime_config_is_read(workdir):
    # invoke would read INVOKE_RUNTIME_CONFIG (and --config) as its own runtime config, refusing TOML
    proc = subprocess.run(
        [str(DEPLOYER), "--config", "hosts.toml", "hosts", "-s", "staging"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        env={**cli_env(), "INVOKE_RUNTIME_CONFIG": str(workdir / "hosts.toml")},
    )
    assert proc.returncode == 0, proc.stderr
    assert os.path.exists(DEPLOYER)
