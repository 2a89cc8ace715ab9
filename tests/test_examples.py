"""The CI and cron examples cannot rot: each file in examples/ is parsed as its runner would parse
it, and its commands run in order against real hosts, with the CI's variables and secrets stubbed
(a GitHub Actions workflow, a GitLab CI file, a crontab, a systemd service and timer).

Steps that install the deployer or move files between jobs (`uses:` actions, `pip install`) are
the runner's business: the deployer under test is on PATH and every job shares one work tree."""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from datetime import date
from pathlib import Path

import pytest
import toml
from helpers import REPO, git, wait_until
from invoke.vendor import yaml

EXAMPLES = REPO / "examples"
BIN = Path(sys.executable).parent  # `deployer` of the environment under test


@pytest.fixture
def stages(sandbox, app_repo, tmp_path):
    """Two hosts: host-1 is staging, host-2 production (gated on staging). The user's repository
    holds hosts.toml; the key and known_hosts are left to the example to install in ~/.ssh."""
    sb = sandbox(2)
    h1, h2 = sb.hosts
    (app_repo / "hosts.toml").write_text(f"""[app]
name = "shop"
deploy_to = "/srv/app"

[ssh]
user = "deploy"
host_key_policy = "strict"

[stages.staging]
hosts = ["127.0.0.1:{h1.port}"]

[stages.production]
requires = "staging"
hosts = ["127.0.0.1:{h2.port}"]
""")
    (app_repo / ".gitignore").write_text("log/\nartifacts/\n*.json\n")
    git(app_repo, "add", "-A")
    git(app_repo, "commit", "-q", "-m", "deploy config")
    home = tmp_path / "home"
    home.mkdir()
    return sb, app_repo, home


def base_env(home: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DEPLOYER_CONFIG", "SSH_AUTH_SOCK", "PYTHONPATH")}
    env.update(HOME=str(home), PATH=f"{BIN}{os.pathsep}{env['PATH']}", **extra)
    return env


def sh(script: str, cwd: Path, env: dict, shell: str = "bash") -> subprocess.CompletedProcess:
    argv = (
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script] if shell == "bash" else ["sh", "-c", script]
    )
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{script}\n--- exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def install_ssh(sb, home: Path) -> None:
    """What a cron or systemd user has already: the deploy key and the pinned host keys."""
    (home / ".ssh").mkdir(mode=0o700)
    shutil.copy(sb.key_path, home / ".ssh" / "id_ed25519")
    (home / ".ssh" / "id_ed25519").chmod(0o600)
    shutil.copy(sb.known_hosts_path, home / ".ssh" / "known_hosts")


def deployed(sb, host, expect_sha: str) -> None:
    code, out = sb.exec(
        host,
        "cat /srv/app/current/.deployer/release.json 2>/dev/null || cat /srv/app/releases/1/.deployer/release.json",
    )
    assert code == 0 and expect_sha in out, out


def result(path: Path) -> dict:
    data = json.loads(path.read_text())
    assert data["result"] == "ok", data
    return data


def is_install(command: str) -> bool:
    return command.strip().startswith("pip install")


# --- GitHub Actions -------------------------------------------------------------------------------


def github_order(jobs: dict) -> list[str]:
    order: list[str] = []
    while len(order) < len(jobs):
        ready = [
            n
            for n, j in jobs.items()
            if n not in order
            and all(d in order for d in ([j["needs"]] if isinstance(j.get("needs"), str) else j.get("needs", [])))
        ]
        assert ready, f"cycle in needs: {jobs}"
        order.append(ready[0])
    return order


def github_expand(value: str, secrets: dict) -> str:
    def one(m):
        expr = m.group(1).strip()
        assert expr.startswith("secrets."), f"unstubbed expression ${{{{ {expr} }}}}"
        return secrets[expr.removeprefix("secrets.")]

    return re.sub(r"\$\{\{(.*?)\}\}", one, str(value))


def while_someone_holds_the_lock(sb, repo: Path, step: str, env: dict, tmp_path: Path) -> str:
    """Run the CI's deploy step while a person's deploy of staging holds the lock (paused before its
    switch); let that one finish once the step says it waits. Returns the step's stderr."""
    flag = tmp_path / "pause-switch"
    person = subprocess.Popen(
        ["deployer", "deploy", "--stage", "staging", "--version", env["GITHUB_SHA"]],
        cwd=repo,
        env={**env, "DEPLOYER_TEST_PAUSE_BEFORE": f"switch:{flag}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: flag.exists() or person.poll() is not None, 90, "the person's deploy to hold the lock")
        assert flag.exists(), person.communicate()
        ci = subprocess.Popen(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step],
            cwd=repo,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        said: list[str] = []
        reader = threading.Thread(target=lambda: said.extend(ci.stderr), daemon=True)
        reader.start()
        wait_until(
            lambda: any("waiting up to" in line for line in said) or ci.poll() is not None,
            60,
            "the CI step to say it waits for the lock",
        )
        assert ci.poll() is None, "".join(said)
        flag.unlink()  # the person's deploy goes on and unlocks
        assert person.wait(timeout=120) == 0, person.communicate()
        assert ci.wait(timeout=120) == 0, "".join(said)
        reader.join(timeout=10)
        return "".join(said)
    finally:
        for p in (person, locals().get("ci")):
            if p is not None and p.poll() is None:
                p.kill()


def test_github_actions_workflow_builds_once_and_promotes_through_the_gate(stages, tmp_path):
    sb, repo, home = stages
    install_ssh(sb, home)  # the person's machine (the CI step writes its own)
    flow = yaml.safe_load((EXAMPLES / "github-actions.yml").read_text())
    secrets = {
        "DEPLOY_SSH_KEY": sb.key_path.read_text().strip(),
        "DEPLOY_KNOWN_HOSTS": sb.known_hosts_path.read_text().strip(),
    }
    sha = git(repo, "rev-parse", "HEAD")
    env = base_env(
        home,
        GITHUB_ACTIONS="true",
        GITHUB_SHA=sha,
        GITHUB_REPOSITORY="your-org/shop",
        GITHUB_RUN_ID="77",
        GITHUB_ACTOR="ci-bot",
        CI="true",
    )
    env.update({k: str(v) for k, v in flow.get("env", {}).items()})
    ran, skipped = [], []
    order = github_order(flow["jobs"])
    assert order == ["build", "staging", "production"]
    waited = ""
    for name in order:
        job = flow["jobs"][name]
        for step in job["steps"]:
            if "uses" in step or is_install(step.get("run", "")):
                skipped.append(step.get("uses") or step["run"])
                continue
            step_env = {**env, **{k: github_expand(v, secrets) for k, v in step.get("env", {}).items()}}
            if "deployer deploy --stage staging" in step["run"]:
                waited = while_someone_holds_the_lock(sb, repo, step["run"], step_env, tmp_path)
            else:
                sh(step["run"], repo, step_env)
            ran.append((name, step["run"].strip().splitlines()[0]))
    assert [r for r in ran if "deployer" in r[1]] == [
        ("build", "deployer build"),
        (
            "staging",
            'deployer deploy --stage staging --version "$GITHUB_SHA" --lock-wait 600 --json > deploy-staging.json',
        ),
        (
            "production",
            'deployer deploy --stage production --version "$GITHUB_SHA" --lock-wait 600 --json '
            "> deploy-production.json",
        ),
    ]
    assert "waiting up to 600s" in waited  # the CI job queued behind the person's deploy
    assert result(repo / "deploy-staging.json")["stage"] == "staging"
    prod = result(repo / "deploy-production.json")
    assert prod["sha256"] == result(repo / "deploy-staging.json")["sha256"]  # the same artifact
    assert len(list((repo / "artifacts").glob("*.tar.gz"))) == 1  # built once
    deployed(sb, 0, sha)
    deployed(sb, 1, sha)
    code, ledger = sb.exec(1, "cat /srv/app/.deployer/ledger.jsonl")
    assert "github your-org/shop run 77 by ci-bot" in ledger  # who, from the CI's variables
    assert set(skipped) >= {"actions/checkout@v4", "actions/upload-artifact@v4", "actions/download-artifact@v4"}


def test_github_actions_gate_refuses_what_staging_never_ran(stages):
    """The production job alone (staging skipped): the gate refuses, exit 4, the JSON kept empty."""
    sb, repo, home = stages
    flow = yaml.safe_load((EXAMPLES / "github-actions.yml").read_text())
    install_ssh(sb, home)
    env = base_env(home, GITHUB_SHA=git(repo, "rev-parse", "HEAD"))
    build = next(s["run"] for s in flow["jobs"]["build"]["steps"] if "deployer build" in s.get("run", ""))
    promote = next(s["run"] for s in flow["jobs"]["production"]["steps"] if "deployer deploy" in s.get("run", ""))
    sh(build, repo, env)
    proc = subprocess.run(
        ["bash", "-eo", "pipefail", "-c", promote], cwd=repo, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 4, proc.stderr
    assert "must pass staging first" in proc.stderr


# --- GitLab CI -------------------------------------------------------------------------------------


def flatten(lines) -> list[str]:
    out = []
    for line in lines:
        out.extend(flatten(line) if isinstance(line, list) else [line])
    return out


def test_gitlab_ci_builds_once_and_promotes_through_the_gate(stages, tmp_path):
    sb, repo, home = stages
    doc = yaml.safe_load((EXAMPLES / "gitlab-ci.yml").read_text())
    key_file = tmp_path / "DEPLOY_SSH_KEY"  # a variable of type File: its value is a path
    key_file.write_text(sb.key_path.read_text())
    sha = git(repo, "rev-parse", "HEAD")
    env = base_env(
        home,
        GITLAB_CI="true",
        CI_JOB_ID="991",
        GITLAB_USER_LOGIN="ci-bot",
        CI_COMMIT_SHA=sha,
        DEPLOY_SSH_KEY=str(key_file),
        DEPLOY_KNOWN_HOSTS=sb.known_hosts_path.read_text().strip(),
    )
    env.update({k: str(v) for k, v in doc.get("variables", {}).items()})
    jobs = {n: j for n, j in doc.items() if isinstance(j, dict) and "script" in j and not n.startswith(".")}
    order = sorted(jobs, key=lambda n: doc["stages"].index(jobs[n]["stage"]))
    assert order == ["build", "deploy-staging", "deploy-production"]
    assert jobs["deploy-production"].get("when") == "manual"
    for name in order:
        job = jobs[name]
        lines = flatten(job.get("before_script", doc.get("default", {}).get("before_script", [])) + job["script"])
        script = "\n".join(line for line in lines if not is_install(line))
        sh(script, repo, env)
    assert result(repo / "deploy-production.json")["sha256"] == result(repo / "deploy-staging.json")["sha256"]
    deployed(sb, 1, sha)
    code, ledger = sb.exec(1, "cat /srv/app/.deployer/ledger.jsonl")
    assert "gitlab job 991 by ci-bot" in ledger


# --- cron and systemd ------------------------------------------------------------------------------


def origin_and_clone(repo: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The deploy machine's checkout (DEPLOY_DIR), cloned from an origin the developers push to."""
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(origin)], check=True)
    clone = tmp_path / "deploy-checkout"
    subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True)
    git(repo, "remote", "add", "origin", str(origin))
    (repo / "VERSION").write_text("pushed after the clone\n")  # the nightly run must pull this
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "a change pushed later")
    git(repo, "push", "-q", "origin", "HEAD:main")
    return origin, clone


def test_crontab_lines_deploy_nightly_and_analyze_the_live_release(stages, tmp_path):
    sb, repo, home = stages
    install_ssh(sb, home)
    # the live release's own error counter, read on the host (a FAILS file, as the sample app's)
    metric = {"name": "fails", "provider": "command", "command": "cat FAILS 2>/dev/null || echo 0", "max": 1}
    doc = toml.loads((repo / "hosts.toml").read_text())
    doc["analysis"] = {"interval": 1, "checks": 1, "metrics": [metric]}
    (repo / "hosts.toml").write_text(toml.dumps(doc))
    git(repo, "commit", "-q", "-am", "[analysis]")
    _, clone = origin_and_clone(repo, tmp_path)
    logs = tmp_path / "log"
    logs.mkdir()
    assigns, jobs = {}, []
    for line in (EXAMPLES / "crontab").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", line):
            k, v = line.split("=", 1)
            assigns[k] = v
            continue
        fields = line.split(None, 5)
        assert len(fields) == 6 and all(re.match(r"^[\d*/,-]+$", f) for f in fields[:5]), line
        assert not re.search(r"(?<!\\)%", fields[5]), "an unescaped % ends a cron command"
        jobs.append(fields[5].replace("\\%", "%"))
    assert set(assigns) == {"DEPLOY_DIR", "LOG_DIR", "PATH"} and len(jobs) == 2
    deploy, analyze = jobs
    stubs = {"DEPLOY_DIR": str(clone), "LOG_DIR": str(logs), "PATH": f"{BIN}{os.pathsep}/usr/bin:/bin"}
    env = {"HOME": str(home), "SHELL": "/bin/sh", "LOGNAME": "deploy", **stubs}  # cron's small environment
    sh(deploy, home, env, shell="sh")
    out = result(logs / f"staging-{date.today():%Y-%m-%d}.json")
    assert out["stage"] == "staging"
    deployed(sb, 0, git(repo, "rev-parse", "HEAD"))  # the commit pushed after the clone
    analyses = logs / f"staging-analysis-{date.today():%Y-%m-%d}.json"
    assert sh(analyze, home, env, shell="sh").stdout == ""  # healthy: nothing for cron to mail
    # the live release turns bad (20 % of its requests fail): the next run exits 1 and alerts
    assert sb.exec(sb.hosts[0], "echo 20 > /srv/app/current/FAILS")[0] == 0
    command = analyze.split(" || ")[0]
    proc = subprocess.run(["sh", "-c", command], cwd=home, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    mailed = sh(analyze, home, env, shell="sh").stdout
    assert mailed.startswith("staging: the live release failed its analysis, see ") and str(analyses) in mailed
    docs = json_documents(analyses.read_text())
    assert [(d["task"], d["analysis"]["verdict"]) for d in docs] == [("analyze", "pass")] + [("analyze", "fail")] * 2
    assert docs[-1]["analysis"]["failing"]["canary"] == 20


def json_documents(text: str) -> list[dict]:
    """The JSON documents appended one after another to a file (as `jq -s` reads them)."""
    decoder, docs, at = json.JSONDecoder(), [], 0
    while text[at:].strip():
        doc, end = decoder.raw_decode(text, at + len(text[at:]) - len(text[at:].lstrip()))
        docs.append(doc)
        at = end
    return docs


def test_systemd_service_and_timer(stages, tmp_path):
    sb, repo, home = stages
    install_ssh(sb, home)
    _, clone = origin_and_clone(repo, tmp_path)

    def unit(name: str) -> configparser.ConfigParser:
        cp = configparser.ConfigParser(interpolation=None, strict=True)
        cp.optionxform = str
        cp.read_string((EXAMPLES / "systemd" / name).read_text())
        return cp

    service, timer = unit("deployer-staging.service"), unit("deployer-staging.timer")
    assert service["Service"]["Type"] == "oneshot"
    assert re.match(r"^\*-\*-\* \d\d:\d\d:\d\d$", timer["Timer"]["OnCalendar"])
    assert timer["Install"]["WantedBy"] == "timers.target"  # the timer starts the service of its name
    env = {"PATH": "/usr/bin:/bin", **dict(a.split("=", 1) for a in service["Service"]["Environment"].split())}
    env["HOME"] = str(home)  # stubbed: the deploy user's home
    for key in ("ExecStartPre", "ExecStart"):
        argv = shlex.split(service["Service"][key])
        assert argv[0].startswith("/"), "systemd wants an absolute program path"
        program = shutil.which(Path(argv[0]).name, path=f"{BIN}{os.pathsep}/usr/bin:/bin")
        proc = subprocess.run([program, *argv[1:]], cwd=clone, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{key}: {proc.stdout}\n{proc.stderr}"
    assert json.loads(proc.stdout)["result"] == "ok"
    deployed(sb, 0, git(repo, "rev-parse", "HEAD"))
