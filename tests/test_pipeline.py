"""The safe pipeline against real hosts: smoke, verify + automatic rollback, migrations, hooks,
rolling and canary strategies, notifications, dry run, --max-fail."""

from __future__ import annotations

import json
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import toml
from helpers import cli, cli_popen, commit_change, current, release_dirs, releases, tree, wait_until


@pytest.fixture
def webhook():
    """A local HTTP receiver collecting JSON posts (loopback only)."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()


def events(received):
    return [r["event"] for r in received]


def test_failing_smoke_on_one_host_switches_none(sandbox, app_repo):
    sb = sandbox(3, smoke={"command": 'test "$DEPLOY_HOST" != host-2 || { echo "selftest broke" >&2; exit 3; }'})
    proc = cli(sb, "deploy")
    assert proc.returncode == 1
    assert "host-2" in proc.stderr and "selftest broke" in proc.stdout
    for h in sb.hosts:
        assert current(sb, h) == "" and release_dirs(sb, h) == []


def _serve_current(sb):
    """A tiny web server on each host serving files through the current symlink."""
    for h in sb.hosts:
        sb.exec(
            h,
            "su deploy -s /bin/sh -c 'nohup python3 -m http.server 8080 --bind 127.0.0.1 "
            "--directory /srv/app/current >/dev/null 2>&1 &'",
        )


def test_failing_http_verify_rolls_back_marks_bad_and_notifies(sandbox, app_repo, webhook):
    url, received = webhook
    sb = sandbox(
        3,
        verify={
            "url": "http://127.0.0.1:8080/health.txt",
            "body": "healthy",
            "retries": 3,
            "interval": 0.3,
            "timeout": 2,
        },
        notify={"webhooks": [url]},
    )
    _serve_current(sb)
    # a first deploy that fails its health check leaves no current at all
    commit_change(app_repo, "health.txt", "sick\n")
    proc = cli(sb, "deploy", "--hosts", "host-1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert current(sb, 0) == ""
    assert events(received) == ["started", "rolled back", "failed"]

    received.clear()
    commit_change(app_repo, "health.txt", "healthy\n")
    proc = cli(sb, "deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    good = current(sb, 0)
    assert good == "releases/2" and all(current(sb, h) == good for h in sb.hosts)
    assert events(received) == ["started", "succeeded"]

    received.clear()
    commit_change(app_repo, "health.txt", "sick\n")
    proc = cli(sb, "deploy")
    assert proc.returncode == 1
    assert "ROLLING BACK" in proc.stdout and "health check failed" in proc.stderr
    assert all(current(sb, h) == good for h in sb.hosts)
    bad = [r for r in releases(sb) if r["bad"] and r["release"] == 3]
    assert {r["host"] for r in bad} == {"host-1", "host-2", "host-3"}
    assert events(received) == ["started", "rolled back", "failed"]
    assert received[-1]["text"].startswith("✖ deploy failed") and received[-1]["stage"] == "sandbox"
    # a bad release is never a rollback target
    proc = cli(sb, "rollback", "--to", "3")
    assert proc.returncode == 1 and "marked bad" in proc.stdout


def test_migration_runs_once_and_rollback_guard(sandbox, app_repo):
    sb = sandbox(
        3,
        migrate={
            "command": "echo up $DEPLOY_RELEASE >> /srv/app/shared/migrations.log; echo migrated",
            "role": "migrate",
            "rollback_command": "echo down $DEPLOY_RELEASE >> /srv/app/shared/migrations.log",
        },
    )
    for i in range(2):
        commit_change(app_repo, "m.txt", str(i))
        proc = cli(sb, "deploy")
        assert proc.returncode == 0, proc.stdout + proc.stderr
    code, log = sb.exec(0, "cat /srv/app/shared/migrations.log")
    assert log.split() == ["up", "1", "up", "2"]
    for h in (1, 2):
        code, out = sb.exec(h, "cat /srv/app/shared/migrations.log")
        assert code != 0
    code, out = sb.exec(0, "cat /srv/app/releases/2/.deployer/migrated")
    assert json.loads(out)["digest"]

    proc = cli(sb, "rollback")
    assert proc.returncode == 1 and "release(s) 2 ran migrations" in proc.stderr
    assert all(current(sb, h) == "releases/2" for h in sb.hosts)
    proc = cli(sb, "rollback", "--with-migrations")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    code, log = sb.exec(0, "cat /srv/app/shared/migrations.log")
    assert log.splitlines() == ["up 1", "up 2", "down 2"]
    assert all(current(sb, h) == "releases/1" for h in sb.hosts)


def test_failed_migration_switches_nothing(sandbox, app_repo):
    sb = sandbox(2, migrate={"command": "echo boom >&2; exit 9"})
    proc = cli(sb, "deploy")
    assert proc.returncode == 1 and "boom" in proc.stdout
    for h in sb.hosts:
        assert current(sb, h) == "" and release_dirs(sb, h) == []


def test_rolling_batch_one_switches_one_at_a_time(sandbox, app_repo):
    sb = sandbox(3, hooks={"after_switch": [{"command": "date +%s.%N > /srv/app/shared/switched_at"}]})
    assert cli(sb, "deploy").returncode == 0
    commit_change(app_repo, "x.txt", "2")
    proc = cli(sb, "deploy", "--strategy", "rolling", "--batch", "1", "--pause", "0.5")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "batch 1/3: host-1" in proc.stdout and "batch 3/3: host-3" in proc.stdout
    stamps = [float(sb.exec(h, "cat /srv/app/shared/switched_at")[1]) for h in sb.hosts]
    assert stamps[0] < stamps[1] < stamps[2]
    assert stamps[1] - stamps[0] >= 0.5 and stamps[2] - stamps[1] >= 0.5


def _locked(sb, h) -> bool:
    return sb.exec(h, "test -e /srv/app/.deployer/lock")[0] == 0


def _said(out: str, host: str, step: str) -> bool:
    """A progress line of host at step (after its timestamp)."""
    return any(line.split()[1:3] == [host, step] for line in out.splitlines())


def test_rolling_failure_in_the_last_batch_puts_every_earlier_batch_back(sandbox, app_repo):
    """Batches 1 and 2 switch and pass; host-3's health check fails in batch 3: the hosts of the
    earlier batches go back too, the new release is marked bad everywhere, locks released."""
    sb = sandbox(3, verify={"command": 'test "$DEPLOY_HOST" != host-3 || test "$DEPLOY_RELEASE" = 1'})
    assert cli(sb, "deploy").returncode == 0
    commit_change(app_repo, "x.txt", "2")
    proc = cli(sb, "deploy", "--strategy", "rolling", "--batch", "1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout
    assert "batch 3/3: host-3" in out and "ROLLING BACK" in out and "health check failed on host-3" in proc.stderr
    # host-1 and host-2 passed their own batch before host-3 switched; all three were put back
    lines = out.splitlines()
    last_batch = lines.index("batch 3/3: host-3")
    assert all(any(line.split()[1:3] == [n, "verify"] for line in lines[:last_batch]) for n in ("host-1", "host-2"))
    for name in ("host-1", "host-2", "host-3"):
        assert _said(out, name, "switch") and _said(out, name, "restore"), (name, out)
    for h in sb.hosts:
        assert current(sb, h) == "releases/1", h.name
        assert not _locked(sb, h), h.name
    bad = {r["host"] for r in releases(sb) if r["bad"] and r["release"] == 2}
    assert bad == {"host-1", "host-2", "host-3"}
    assert cli(sb, "rollback", "--to", "2").returncode == 1  # never a rollback target


def test_canary_failing_during_the_bake_is_put_back_and_the_rest_never_switch(sandbox, app_repo):
    """The canary's health check passes right after its switch and fails on its first re-check
    during --bake (a per-release counter on the host, no clock): the canary goes back to the old
    release, the rest are never switched."""
    count = "/srv/app/shared/verified-$DEPLOY_RELEASE"
    check = f'n=$(($(cat {count} 2>/dev/null || echo 0) + 1)); echo $n > {count}; test "$n" -lt 2'
    sb = sandbox(3, verify={"command": check})
    assert cli(sb, "deploy").returncode == 0
    commit_change(app_repo, "x.txt", "2")
    proc = cli(sb, "deploy", "--strategy", "canary", "--canary", "1", "--bake", "0.5")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "canary: host-1" in proc.stdout and "baking canary" in proc.stdout and "rest:" not in proc.stdout
    assert "health check failed on host-1" in proc.stderr
    assert sb.exec(0, "cat /srv/app/shared/verified-2")[1].strip() == "2"  # passed once, failed on the re-check
    for h in sb.hosts:
        assert current(sb, h) == "releases/1", h.name
        assert not _locked(sb, h), h.name
    for h in sb.hosts[1:]:  # never switched, so never verified
        assert sb.exec(h, "test -e /srv/app/shared/verified-2")[0] != 0, h.name
        assert not _said(proc.stdout, h.name, "switch"), proc.stdout
    assert {r["host"] for r in releases(sb) if r["bad"] and r["release"] == 2} >= {"host-1"}


def test_canary_stops_after_canary_fails_health(sandbox, app_repo):
    sb = sandbox(3, verify={"command": 'test "$DEPLOY_HOST" != host-1 || test "$DEPLOY_RELEASE" = 1'})
    assert cli(sb, "deploy").returncode == 0
    commit_change(app_repo, "x.txt", "2")
    proc = cli(sb, "deploy", "--strategy", "canary", "--canary", "1")
    assert proc.returncode == 1
    assert "canary: host-1" in proc.stdout and "rest:" not in proc.stdout
    assert all(current(sb, h) == "releases/1" for h in sb.hosts)
    assert "switch" not in [
        line.split()[2]
        for line in proc.stdout.splitlines()
        if line.strip() and "host-2" in line and len(line.split()) > 2
    ]


def test_dry_run_changes_nothing_and_prints_commands(sandbox, app_repo):
    sb = sandbox(3, smoke={"command": "bin/run"}, hooks={"after_prepare": [{"command": "echo hi", "roles": ["web"]}]})
    assert cli(sb, "deploy").returncode == 0
    commit_change(app_repo, "y.txt", "2")
    before = [tree(sb, h) for h in sb.hosts]
    proc = cli(sb, "deploy", "--dry-run")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [tree(sb, h) for h in sb.hosts] == before
    out = proc.stdout
    assert "DRY RUN" in out and "release 2 would go to host-1, host-2, host-3" in out
    assert "--- host-2 · prepare (artifact on stdin)" in out and "mv -T" in out and "COMMAND=bin/run" in out


def snapshot(sb, h) -> str:
    """Every path under deploy_to (ledger, lock, cache, env files included) with its type, mode,
    owner, size, mtime, ctime and link target, then every file's sha256."""
    code, out = sb.exec(
        h,
        "cd /srv/app && find . -printf '%p %y %m %U %s %T@ %C@ %l\\n' | sort "
        "&& find . -type f -exec sha256sum {} + | sort",
    )
    assert code == 0, out
    return out


def test_dry_run_changes_no_byte_mode_or_mtime_even_with_a_delta_and_a_stale_lock(sandbox, app_repo, tmp_path):
    """A dry run reads each host's state and prints; with a delta-eligible redeploy, an env file
    that would change, and a stale lock a real run would take over, every file, mode, mtime and
    ctime under deploy_to stays as it was."""
    sb = sandbox(3, app={"lock_ttl": 2}, env={"LOG_LEVEL": "info"})
    assert cli(sb, "deploy").returncode == 0
    commit_change(app_repo, "app.py", "VERSION = 2\n")
    assert cli(sb, "deploy").returncode == 0
    commit_change(app_repo, "app.py", "VERSION = 3\n")
    doc = toml.loads(sb.config_path.read_text())
    doc["env"]["LOG_LEVEL"] = "debug"
    sb.config_path.write_text(toml.dumps(doc))

    def dry_run_changes_nothing() -> str:
        before = [snapshot(sb, h) for h in sb.hosts]
        assert all(".deployer/ledger.jsonl" in b and ".env" in b for b in before)
        proc = cli(sb, "deploy", "--dry-run")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "DRY RUN" in proc.stdout
        assert [snapshot(sb, h) for h in sb.hosts] == before
        return proc.stdout

    assert "delta" in dry_run_changes_nothing()

    # a deploy killed before its switch leaves its lock, its orphan release and its cached artifact
    flag = tmp_path / "pause-switch"
    p = cli_popen(sb, "deploy", env={"DEPLOYER_TEST_PAUSE_BEFORE": f"switch:{flag}"})
    try:
        wait_until(lambda: flag.exists() or p.poll() is not None, 90, "the deploy to reach its switch")
        assert p.poll() is None, p.communicate()
    finally:
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=10)
        flag.unlink(missing_ok=True)
    for h in sb.hosts:  # its lease long expired: stale
        assert sb.exec(h, "touch -d '-1 hour' /srv/app/.deployer/lock/beat")[0] == 0
    dry_run_changes_nothing()

    # the lock was stale indeed: a real run takes it over
    proc = cli(sb, "deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("took over a stale lock") == 3


def test_hook_env_vars_and_local_hook(sandbox, app_repo, tmp_path):
    local_file = tmp_path / "local-env"
    sb = sandbox(
        2,
        hooks={
            "after_prepare": [
                {
                    "command": "env | grep ^DEPLOY_ | sort > /srv/app/shared/env-$DEPLOY_RELEASE; pwd -P >> "
                    "/srv/app/shared/env-$DEPLOY_RELEASE"
                }
            ],
            "after_finish": [{"local": f"env | grep ^DEPLOY_ | sort > {local_file}"}],
            "after_rollback": [{"command": "echo $DEPLOY_RELEASE $DEPLOY_PREVIOUS_RELEASE > /srv/app/shared/rolled"}],
        },
    )
    assert cli(sb, "deploy").returncode == 0
    commit_change(app_repo, "z.txt", "2")
    proc = cli(sb, "deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    code, out = sb.exec(1, "cat /srv/app/shared/env-2")
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert env["DEPLOY_STAGE"] == "sandbox" and env["DEPLOY_RELEASE"] == "2"
    assert env["DEPLOY_PREVIOUS_RELEASE"] == "1" and env["DEPLOY_TO"] == "/srv/app"
    assert env["DEPLOY_RELEASE_PATH"] == "/srv/app/releases/2" and env["DEPLOY_HOST"] == "host-2"
    assert len(env["DEPLOY_GIT_SHA"]) == 40 and env["DEPLOY_VERSION"].endswith(env["DEPLOY_GIT_SHA"][:7])
    assert out.splitlines()[-1] == "/srv/app/releases/2"
    local = dict(line.split("=", 1) for line in local_file.read_text().splitlines())
    assert local["DEPLOY_RELEASE"] == "2" and local["DEPLOY_STEP"] == "after_finish"
    assert cli(sb, "rollback").returncode == 0
    assert all(sb.exec(h, "cat /srv/app/shared/rolled")[1].split() == ["1", "2"] for h in sb.hosts)


def test_failing_hook_fails_its_step_with_output(sandbox):
    sb = sandbox(2, hooks={"before_switch": [{"command": "echo 'cache warmup failed: no redis' >&2; exit 4"}]})
    proc = cli(sb, "deploy")
    assert proc.returncode == 1
    assert "cache warmup failed: no redis" in proc.stderr
    for h in sb.hosts:
        assert current(sb, h) == "" and release_dirs(sb, h) == []


def test_max_fail_skips_dead_host_loudly_exit_5(sandbox):
    sb = sandbox(3, ssh={"connect_timeout": 3})
    sb.container(2).stop(timeout=1)
    proc = cli(sb, "deploy", "--max-fail", "1")
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert "SKIPPED" in proc.stdout and "host-3" in proc.stderr
    assert current(sb, 0) == "releases/1" and current(sb, 1) == "releases/1"
    proc = cli(sb, "deploy")
    assert proc.returncode == 1 and "host-3" in proc.stdout


def test_undeliverable_webhook_is_reported_not_fatal(sandbox):
    sb = sandbox(1, notify={"webhooks": ["http://127.0.0.1:9/hook"]})
    proc = cli(sb, "deploy")
    assert proc.returncode == 0
    assert "notification 'started' not delivered" in proc.stderr
    assert "notification 'succeeded' not delivered" in proc.stderr


def test_after_hooks_skip_hosts_skipped_during_their_step(sandbox):
    """A host skipped under --max-fail during prepare gets no after_prepare hook (its release was
    removed: the hook would fail there and abort everyone's deploy)."""
    sb = sandbox(3, hooks={"after_prepare": [{"command": "touch /srv/app/shared/after-prepare"}]})
    # host-3: deploy_to is writable (the lock is taken) but releases/ is not (prepare fails)
    code, _ = sb.exec(2, "mkdir -p /srv/app/releases && chown deploy /srv/app && chown root /srv/app/releases")
    assert code == 0
    proc = cli(sb, "deploy", "--max-fail", "1")
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert "SKIPPED" in proc.stdout and "host-3" in proc.stderr
    assert [sb.exec(h, "test -f /srv/app/shared/after-prepare")[0] == 0 for h in sb.hosts] == [True, True, False]
    assert current(sb, 0) == "releases/1" and current(sb, 1) == "releases/1" and current(sb, 2) == ""
