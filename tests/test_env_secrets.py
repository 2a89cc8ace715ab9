"""Per-stage env, secrets, host discovery and run_as against real hosts."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time

import toml
from helpers import ProcessLists, cli, cli_popen, current, release_dirs, wait_until

from deployer.config import envfile

SECRET = "s3cr3t-Value-7f9a"


def staged(sandbox, **extra):
    """host-1 (web, migrate), host-2 (web) = staging; host-3 (web), host-4 (worker) = production."""
    sb = sandbox(4, **extra)
    doc = toml.loads(sb.config_path.read_text())
    hosts = doc["stages"].pop("sandbox")["hosts"]
    hosts[3]["roles"] = ["worker"]
    doc["env"] = {"LOG_LEVEL": "info", "API_KEY": {"secret": "env:TEST_API_KEY", "roles": ["web"]}}
    doc["stages"]["staging"] = {"hosts": hosts[:2], "env": {"DATABASE_URL": "postgres://staging-db/app"}}
    doc["stages"]["production"] = {
        "hosts": hosts[2:],
        "env": {"DATABASE_URL": "postgres://prod-db/app"},
        "role_env": {"worker": {"QUEUE": "jobs high"}},
    }
    sb.config_path.write_text(toml.dumps(doc))
    return sb


def env_of(sb, host) -> tuple[str, str]:
    code, text = sb.exec(host, "cat /srv/app/current/.env")
    code, mode = sb.exec(host, "stat -L -c %a /srv/app/current/.env")
    return text, mode.strip()


def test_stage_env_differs_secret_only_on_role_hosts_and_never_leaks(sandbox, monkeypatch):
    monkeypatch.setenv("TEST_API_KEY", SECRET)
    sb = staged(sandbox, hooks={"after_prepare": [{"command": "sleep 1"}]})
    ps = ProcessLists(sb, limit=60)
    outputs = []
    for stage in ("staging", "production"):
        dry = cli(sb, "deploy", "--stage", stage, "--dry-run")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        proc = cli(sb, "deploy", "--stage", stage)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        outputs += [dry.stdout, dry.stderr, proc.stdout, proc.stderr]
    ps.stop()

    staging, mode = env_of(sb, 0)
    assert mode == "600"
    assert "DATABASE_URL=postgres://staging-db/app" in staging and f"API_KEY={SECRET}" in staging
    assert "LOG_LEVEL=info" in staging
    prod_web, _ = env_of(sb, 2)
    assert "DATABASE_URL=postgres://prod-db/app" in prod_web and f"API_KEY={SECRET}" in prod_web
    worker, _ = env_of(sb, 3)
    assert "API_KEY" not in worker and 'QUEUE="jobs high"' in worker
    # the same artifact everywhere
    assert len({sb.exec(h, "cat /srv/app/current/REVISION")[1] for h in sb.hosts}) == 1

    assert ps.samples and not ps.showing(SECRET), "secret visible in the host's process list"
    assert all(SECRET not in text for text in outputs)
    for h in sb.hosts:
        _, ledger_text = sb.exec(h, "cat /srv/app/.deployer/ledger.jsonl")
        assert ledger_text and SECRET not in ledger_text
    audit = cli(sb, "audit", "--stage", "production")
    assert SECRET not in audit.stdout


def test_missing_secret_fails_before_any_host_is_touched(sandbox, monkeypatch):
    monkeypatch.delenv("TEST_API_KEY", raising=False)
    sb = staged(sandbox)
    proc = cli(sb, "deploy", "--stage", "staging")
    assert proc.returncode == 2
    assert "secret API_KEY: environment variable TEST_API_KEY is not set" in proc.stderr
    for h in sb.hosts:
        assert sb.exec(h, "ls /srv/app")[0] != 0


def test_config_push_and_diff(sandbox, monkeypatch, tmp_path):
    monkeypatch.setenv("TEST_API_KEY", SECRET)
    sb = staged(sandbox)
    assert cli(sb, "deploy", "--stage", "staging").returncode == 0
    doc = toml.loads(sb.config_path.read_text())
    doc["stages"]["staging"]["env"]["DATABASE_URL"] = "postgres://staging-db-2/app"
    doc["stages"]["staging"]["env"]["FEATURE_X"] = "on"
    sb.config_path.write_text(toml.dumps(doc))
    monkeypatch.setenv("TEST_API_KEY", SECRET + "-rotated")
    proc = cli(sb, "config.diff", "--stage", "staging", "--json")
    assert proc.returncode == 0, proc.stderr
    hosts = json.loads(proc.stdout)["hosts"]
    changes = {(h["host"], r["key"]): r for h in hosts for r in h["changes"]}
    assert changes[("host-1", "DATABASE_URL")]["would_write"] == "postgres://staging-db-2/app"
    assert changes[("host-1", "FEATURE_X")]["change"] == "added"
    assert changes[("host-1", "API_KEY")]["on_host"] == "(secret)"
    assert SECRET not in proc.stdout
    before = release_dirs(sb, 0)
    proc = cli(sb, "config.push", "--stage", "staging")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert release_dirs(sb, 0) == before
    text, mode = env_of(sb, 0)
    assert "postgres://staging-db-2/app" in text and f"API_KEY={SECRET}-rotated" in text and mode == "600"
    entries = json.loads(cli(sb, "audit", "--stage", "staging", "--json").stdout)["entries"]
    pushed = [e for e in entries if e["action"] == "config"]
    assert len(pushed) == 2 and all(len(e["env_sha256"]) == 64 for e in pushed)
    assert SECRET not in json.dumps(entries)
    assert cli(sb, "config.diff", "--stage", "staging").stdout.strip().endswith("no differences")


def test_hosts_command_inventory(sandbox, tmp_path):
    sb = sandbox(2)
    doc = toml.loads(sb.config_path.read_text())
    hosts = doc["stages"]["sandbox"].pop("hosts")
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"hosts": hosts}))
    doc["stages"]["sandbox"]["hosts_command"] = f"{sys.executable} -c \"import sys; print(open('{inventory}').read())\""
    sb.config_path.write_text(toml.dumps(doc))
    proc = cli(sb, "hosts", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [h["host"] for h in json.loads(proc.stdout)["hosts"]] == ["host-1", "host-2"]
    assert cli(sb, "deploy").returncode == 0
    assert all(current(sb, h) == "releases/1" for h in sb.hosts)
    inventory.write_text(json.dumps([{"host": "bad host"}]))
    proc = cli(sb, "hosts")
    assert proc.returncode == 2 and "stages.sandbox.hosts[0].host" in proc.stderr


def test_run_as_and_sudo_needing_a_password_fails_fast(sandbox):
    sb = sandbox(2, app={"run_as": "app"}, smoke={"command": "id -un > /tmp/smoke-user"})
    proc = cli(sb, "deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sb.exec(0, "cat /tmp/smoke-user")[1].strip() == "app"
    doc = toml.loads(sb.config_path.read_text())
    doc["app"]["run_as"] = "root"  # deploy may not sudo to root: sudo would want a password
    sb.config_path.write_text(toml.dumps(doc))
    started = time.monotonic()
    proc = cli(sb, "deploy", timeout=60)
    assert time.monotonic() - started < 10
    assert proc.returncode == 1 and "a password is required" in proc.stdout + proc.stderr
    assert all(current(sb, h) == "releases/1" for h in sb.hosts)


LEAKY = 'L3ak"y$ecret-9b8c7d'  # a quote and a $: its form in the env file differs from the value
# prints the secret whole, as the env file has it, and cut at both ends (a tail cut short, a tail
# starting mid-way), then fails
PRINT_AND_FAIL = (
    '. ./.env; { grep API_KEY .env; echo "key=$API_KEY"; printf "%s\\n" "$API_KEY" | cut -c1-9; '
    'printf "%s\\n" "$API_KEY" | cut -c6-; } >&2; exit 1'
)
PIECES = (LEAKY, 'L3ak\\"y\\$ecret-9b8c7d', 'L3ak\\"y$ecret-9b8c7d', LEAKY[:9], LEAKY[5:], "ecret-9b8c")


class Webhook:
    """A tiny HTTP server on 127.0.0.1 that keeps every request's body and Authorization header."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((self.headers.get("Authorization", ""), body.decode()))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_step_that_prints_the_secret_leaves_it_on_no_host_payload_or_output(sandbox, monkeypatch, tmp_path):
    monkeypatch.setenv("TEST_API_KEY", LEAKY)
    hook = Webhook()
    sink = tmp_path / "notify.jsonl"
    sb = sandbox(2)
    doc = toml.loads(sb.config_path.read_text())
    doc["env"] = {"LOG_LEVEL": "info", "API_KEY": {"secret": "env:TEST_API_KEY"}}
    doc["notify"] = {
        "webhooks": [f"http://hook:pw-W3bh00k@127.0.0.1:{hook.port}/hook/PATH-T0KEN"],
        "command": f"cat >> {sink}; echo >> {sink}",
    }
    sb.config_path.write_text(toml.dumps(doc))
    try:
        outputs = []
        first = cli(sb, "deploy", "--json")
        assert first.returncode == 0, first.stdout + first.stderr
        outputs += [first.stdout, first.stderr]
        for table, body in (("smoke", {"command": PRINT_AND_FAIL}), ("verify", {"command": PRINT_AND_FAIL})):
            doc.pop("smoke", None)
            doc[table] = body
            sb.config_path.write_text(toml.dumps(doc))
            proc = cli(sb, "deploy", "--json")
            assert proc.returncode == 1, proc.stdout + proc.stderr
            outputs += [proc.stdout, proc.stderr]
        assert "rolled back" in outputs[-1] and "release marked bad" in outputs[-1]  # verify: after the switch
        for args in (("audit",), ("audit", "--json"), ("releases", "--json"), ("status",)):
            proc = cli(sb, *args)
            assert proc.returncode == 0, proc.stderr
            outputs += [proc.stdout, proc.stderr]
    finally:
        hook.close()
    audit = json.loads(cli(sb, "audit", "--json").stdout)["entries"]
    failed = [e for e in audit if e["result"] != "ok"]
    assert len(failed) == 4 and all("••••••" in e["error"] for e in failed)  # the errors are kept, masked
    payloads = sink.read_text().splitlines()
    assert len(payloads) >= 4 and any("••••••" in json.loads(p)["error"] for p in payloads)
    assert len(hook.received) == len(payloads) and all(a.startswith("Basic ") for a, _ in hook.received)
    for piece in PIECES:
        for text in outputs + payloads + [body for _, body in hook.received]:
            assert piece not in text
    for h in sb.hosts:  # as root: every file under deploy_to, the env file itself aside
        code, found = sb.exec(h, "cd /srv/app && grep -rlF -e 'ecret-9b8c' -e 'L3ak' . | sort")
        env_files = [f for f in found.split() if f.endswith(("/.env", "/.deployer/env"))]
        assert found.split() == env_files and env_files, found
        assert "••••••" in sb.exec(h, "cat /srv/app/releases/2/.deployer/bad")[1]
    assert "pw-W3bh00k" not in "".join(outputs) and "PATH-T0KEN" not in "".join(outputs)


def live_env(sb, h) -> tuple[dict, dict]:
    """The env the live release runs with, read through current/ and through shared/."""
    through = {}
    for where in ("current", "shared"):
        code, text = sb.exec(h, f"cat /srv/app/{where}/.env")
        assert code == 0, text
        through[where] = envfile.parse(text)
    return through["current"], through["shared"]


def test_the_env_is_versioned_with_its_release(sandbox, tmp_path):
    """A failed, a rolled back and a killed deploy leave the live env as it was; a rollback brings
    back its release's env; config.push writes a new version for the live release only."""
    sb = sandbox(2)

    def configure(mode, smoke="", verify=""):
        doc = toml.loads(sb.config_path.read_text())
        doc["env"] = {"APP_MODE": mode, "NOTE": "two words"}
        doc["restart"] = {"command": "cp .env /tmp/restarted-with"}
        for table, command in (("smoke", smoke), ("verify", verify)):
            doc.pop(table, None)
            if command:
                doc[table] = {"command": command}
        sb.config_path.write_text(toml.dumps(doc))

    def assert_live(mode):
        for h in sb.hosts:
            assert live_env(sb, h) == ({"APP_MODE": mode, "NOTE": "two words"},) * 2
            assert envfile.parse(sb.exec(h, "cat /tmp/restarted-with")[1])["APP_MODE"] == mode

    configure("one")
    assert cli(sb, "deploy").returncode == 0
    assert_live("one")
    for h in sb.hosts:
        assert sb.exec(h, "stat -c %a /srv/app/releases/1/.deployer/env")[1].strip() == "600"
        assert sb.exec(h, "readlink /srv/app/shared/.env")[1].strip() == "../current/.env"

    configure("two", smoke="exit 1")  # fails before the switch
    assert cli(sb, "deploy").returncode == 1
    assert_live("one")
    configure("two", verify="exit 1")  # fails after it: put back, marked bad
    proc = cli(sb, "deploy")
    assert proc.returncode == 1 and "rolled back" in proc.stderr
    assert_live("one")

    configure("three")  # killed after prepare, before the switch
    flag = tmp_path / "paused"
    p = cli_popen(sb, "deploy", env={"DEPLOYER_TEST_PAUSE_BEFORE": f"switch:{flag}"})
    try:
        wait_until(lambda: flag.exists() or p.poll() is not None, 90, "the pause before the switch")
        assert flag.exists(), p.communicate()
        for h in sb.hosts:  # prepared: its own env, not live
            assert envfile.parse(sb.exec(h, "cat /srv/app/releases/3/.env")[1])["APP_MODE"] == "three"
        assert_live("one")
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
    finally:
        flag.unlink(missing_ok=True)
        if p.poll() is None:
            p.kill()
    assert_live("one")
    assert cli(sb, "unlock", "--yes").returncode == 0

    configure("four")
    assert cli(sb, "deploy").returncode == 0
    assert_live("four")
    proc = cli(sb, "rollback")  # past bad 2 and never-live 3, to 1
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(current(sb, h) == "releases/1" for h in sb.hosts)
    assert_live("one")

    configure("five")
    proc = cli(sb, "config.push")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_live("five")
    for h in sb.hosts:
        assert envfile.parse(sb.exec(h, "cat /srv/app/releases/4/.env")[1])["APP_MODE"] == "four"
        assert sb.exec(h, "stat -c %a /srv/app/releases/1/.deployer/env")[1].strip() == "600"
    entries = json.loads(cli(sb, "audit", "--json").stdout)["entries"]
    pushed = [e for e in entries if e["action"] == "config"]
    digest = envfile.HostEnv({"APP_MODE": "five", "NOTE": "two words"}, frozenset()).digest
    assert len(pushed) == 2 and all(e["release"] == 1 and e["env_sha256"] == digest for e in pushed)
    assert cli(sb, "rollback", "--to", "4").returncode == 0
    assert_live("four")


def test_hosts_with_the_earlier_shared_env_file_keep_each_release_working(sandbox):
    """Before, one shared/.env was linked into every release. The first deploy after that gives
    every such release its own copy, so none links to itself through shared/ after a rollback."""
    sb = sandbox(1)
    doc = toml.loads(sb.config_path.read_text())
    doc["env"] = {"APP_MODE": "new"}
    sb.config_path.write_text(toml.dumps(doc))
    assert cli(sb, "deploy").returncode == 0
    code, out = sb.exec(
        0,
        "cd /srv/app && rm releases/1/.deployer/env shared/.env && "
        "printf 'APP_MODE=legacy\\n' > shared/.env && chmod 600 shared/.env && "
        "chown deploy shared/.env && ln -sfn /srv/app/shared/.env releases/1/.env",
    )
    assert code == 0, out
    assert cli(sb, "deploy").returncode == 0
    assert live_env(sb, 0) == ({"APP_MODE": "new"},) * 2
    assert sb.exec(0, "stat -c %a /srv/app/releases/1/.deployer/env")[1].strip() == "600"
    assert cli(sb, "rollback").returncode == 0
    assert live_env(sb, 0) == ({"APP_MODE": "legacy"},) * 2


def test_a_rollback_hook_that_prints_the_secret_leaves_it_nowhere(sandbox, monkeypatch):
    """A rollback writes no env, but its hooks run in releases that have one."""
    monkeypatch.setenv("TEST_API_KEY", LEAKY)
    sb = sandbox(1)
    doc = toml.loads(sb.config_path.read_text())
    doc["env"] = {"API_KEY": {"secret": "env:TEST_API_KEY"}}
    sb.config_path.write_text(toml.dumps(doc))
    assert cli(sb, "deploy").returncode == 0 and cli(sb, "deploy").returncode == 0
    doc["hooks"] = {"before_rollback": [{"command": PRINT_AND_FAIL}]}
    sb.config_path.write_text(toml.dumps(doc))
    proc = cli(sb, "rollback")
    assert proc.returncode == 1 and "••••••" in proc.stdout + proc.stderr
    audit = cli(sb, "audit", "--json")
    failed = [e for e in json.loads(audit.stdout)["entries"] if e["action"] == "rollback"]
    assert len(failed) == 1 and "••••••" in failed[0]["error"]
    for text in (proc.stdout, proc.stderr, audit.stdout):
        assert not any(piece in text for piece in PIECES)
    code, found = sb.exec(0, "cd /srv/app && grep -rlF -e 'ecret-9b8c' -e 'L3ak' . | sort")
    assert found.split() and all(f.endswith(("/.env", "/.deployer/env")) for f in found.split()), found
