"""Notifications that fit CI: webhook URLs from the secret store (env:NAME, file:PATH), one retry
with a short backoff, a notify command that sees the CI's variables, and an undeliverable
notification that still warns. A real local HTTP receiver; one deploy on a real host."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from helpers import cli, cli_env

from deployer.config import load as config
from deployer.config.settings import NotifySettings
from deployer.errors import ConfigError
from deployer.report import notify


@pytest.fixture
def receiver():
    """A loopback HTTP receiver; `answers` is the list of statuses to give, in order (then 200)."""
    state = {"answers": [], "posts": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state["posts"].append((self.path, json.loads(body)))
            code = state["answers"].pop(0) if state["answers"] else 200
            self.send_response(code)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state["base"] = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()


DATA = {"action": "deploy", "app": "shop", "stage": "production", "version": "v1", "release": 3}


def test_env_webhook_is_delivered_and_never_shown(receiver, monkeypatch, capsys):
    url = receiver["base"] + "/services/T000/B000/tok-en-s3cret"
    monkeypatch.setenv("SLACK_URL", url)
    errors = notify.send(NotifySettings(webhooks=("env:SLACK_URL",)), "succeeded", DATA)
    assert errors == []
    assert [(p, b["event"]) for p, b in receiver["posts"]] == [("/services/T000/B000/tok-en-s3cret", "succeeded")]

    receiver["answers"] = [404]  # now undeliverable: the warning names the reference only
    errors = notify.send(NotifySettings(webhooks=("env:SLACK_URL",)), "failed", DATA)
    err = capsys.readouterr().err
    assert len(errors) == 1 and "env:SLACK_URL" in err and "404" in err
    assert "tok-en-s3cret" not in err and "tok-en-s3cret" not in errors[0]


def test_unset_or_bad_reference_warns_and_does_not_raise(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("NO_SUCH_HOOK", raising=False)
    monkeypatch.setenv("NOT_A_URL", "xoxb-not-a-url-secret")
    errors = notify.send(
        NotifySettings(webhooks=("env:NO_SUCH_HOOK", "env:NOT_A_URL", f"file:{tmp_path}/missing")), "failed", DATA
    )
    err = capsys.readouterr().err
    assert errors == [
        "webhook env:NO_SUCH_HOOK: the variable is not set",
        "webhook env:NOT_A_URL: does not hold an http(s) URL",
        f"webhook file:{tmp_path}/missing: cannot read it: No such file or directory",
    ]
    assert err.count("warning: notification 'failed' not delivered") == 3
    assert "xoxb-not-a-url-secret" not in err


def test_one_retry_after_a_failure_then_a_warning(receiver, capsys, monkeypatch):
    monkeypatch.setattr(notify, "BACKOFF", 0.05)
    hook = receiver["base"] + "/hook"
    receiver["answers"] = [503]  # fails once, then delivered
    assert notify.send(NotifySettings(webhooks=(hook,)), "started", DATA) == []
    assert len(receiver["posts"]) == 2 and capsys.readouterr().err == ""

    receiver["posts"].clear()
    receiver["answers"] = [500, 502]  # fails twice: two attempts, then the warning
    errors = notify.send(NotifySettings(webhooks=(hook,)), "started", DATA)
    assert len(receiver["posts"]) == 2
    assert len(errors) == 1 and "after 2 attempts" in errors[0] and "502" in errors[0]
    assert "not delivered" in capsys.readouterr().err

    receiver["posts"].clear()
    receiver["answers"] = [403]  # a client error will not change: no retry
    assert len(notify.send(NotifySettings(webhooks=(hook,)), "started", DATA)) == 1
    assert len(receiver["posts"]) == 1


def test_refused_connection_is_retried_once(monkeypatch, capsys):
    monkeypatch.setattr(notify, "BACKOFF", 0.05)
    calls = []
    real = notify._worth_retrying
    monkeypatch.setattr(notify, "_worth_retrying", lambda exc: calls.append(exc) or real(exc))
    errors = notify.send(NotifySettings(webhooks=("http://127.0.0.1:9/hook",), timeout=2), "failed", DATA)
    assert len(calls) == 1 and len(errors) == 1 and "after 2 attempts" in errors[0]


def test_notify_command_sees_the_ci_variables_and_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("GITHUB_RUN_ID", "4242")
    monkeypatch.setenv("CI_PIPELINE_URL", "https://ci.example.com/p/7")
    sink = tmp_path / "env.txt"
    errors = notify.send(NotifySettings(command=f"env > {sink}; cat > {tmp_path}/payload.json"), "succeeded", DATA)
    assert errors == []
    env = dict(line.split("=", 1) for line in sink.read_text().splitlines() if "=" in line)
    assert env["GITHUB_RUN_ID"] == "4242" and env["CI_PIPELINE_URL"] == "https://ci.example.com/p/7"
    assert (
        env["DEPLOY_EVENT"],
        env["DEPLOY_STAGE"],
        env["DEPLOY_APP"],
        env["DEPLOY_VERSION"],
        env["DEPLOY_RELEASE"],
    ) == ("succeeded", "production", "shop", "v1", "3")
    assert json.loads((tmp_path / "payload.json").read_text())["event"] == "succeeded"


def test_config_accepts_secret_references_for_webhooks(tmp_path):
    base = '[app]\ndeploy_to = "/srv/app"\n[stages.p]\nhosts = ["h"]\n[notify]\nwebhooks = {}\n'
    cfg = config.parse(
        base.format('["env:SLACK_URL", "file:secrets/hook.url", "https://x.example.com/h"]'), tmp_path / "hosts.toml"
    )
    assert cfg.stage("p").pipeline.notify.webhooks == (
        "env:SLACK_URL",
        f"file:{tmp_path}/secrets/hook.url",
        "https://x.example.com/h",
    )
    for bad in ('["ftp://x.example.com/h"]', '["env:"]', '["cmd:echo http://x"]', '["env://x"]'):
        with pytest.raises(ConfigError) as info:
            config.parse(base.format(bad), tmp_path / "hosts.toml")
        assert "env:NAME or file:PATH" in str(info.value)


def test_deploy_notifies_a_webhook_from_the_environment(sandbox, receiver):
    sb = sandbox(1, notify={"webhooks": ["env:DEPLOY_HOOK"], "events": ["started", "succeeded"]})
    env = {**cli_env(), "DEPLOY_HOOK": receiver["base"] + "/hook/s3cr3t-path"}
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "deployer", "deploy", "--config", str(sb.config_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [b["event"] for _, b in receiver["posts"]] == ["started", "succeeded"]
    assert "s3cr3t-path" not in proc.stdout + proc.stderr

    proc = cli(sb, "deploy")  # the variable unset: the deploy goes on, the warning says why
    assert proc.returncode == 0
    assert "webhook env:DEPLOY_HOOK: the variable is not set" in proc.stderr
