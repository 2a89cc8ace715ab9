"""Steps through a real nginx load balancer: host-1 has role `lb` (nginx with the python_wsgi
recipe's lb snippet), host-2 and host-3 run the sample app under gunicorn behind their own nginx,
which names itself in an `X-Served-By` header. Requests go to the lb only, one connection each.

- At a 10 % step, between 5 % and 15 % of 2,000 requests reach the canary (host-3).
- Steps 5, 25, 50 with requests running through the lb: not one fails across the reloads, and
  the restore puts back the file as it was, byte for byte.
- An abort at a step puts the earlier weights back: nginx -t refusing the next step's file, a
  SIGTERM during the second step, a canary host lost at the third.
- `deploy --strategy canary` walks the steps and restores the weights; a canary failing its
  health check at the first step, or a SIGTERM at the second: the weights back, then the canary
  back on its release.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import signal
import threading
import time

import jsonschema
import pytest
import toml
from helpers import REPO, cli, cli_popen, wait_until
from test_recipes import commit, deploy_ok, get, sample_repo, web_hosts

from deployer.config import load
from deployer.engine import signals
from deployer.engine.session import Session
from deployer.engine.weights import Balancer, WeightsFailed
from deployer.recipes import python_wsgi
from deployer.report.output import Output
from deployer.sandbox import hosts as sandbox_mod

pytestmark = pytest.mark.slow

WEIGHTS = "/etc/nginx/deployer/sample-weights.conf"
SUDO_RULE = "deploy ALL=(root) NOPASSWD: /usr/sbin/nginx -t, /usr/sbin/nginx -s reload\n"


class Requests:
    """GET / through the lb from `threads` threads, a new connection each (a client keeping an idle
    connection open sees it closed at a reload: it must retry, as browsers do); bounded by count
    and time. Each answer: the X-Served-By header, or the error."""

    def __init__(self, port: int, *, count: int, threads: int = 4, max_seconds: float = 60):
        self.port, self.count, self.max_seconds = port, count, max_seconds
        self.answers: list[str] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._sent = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _take(self) -> bool:
        with self._lock:
            if self._sent >= self.count:
                return False
            self._sent += 1
            return True

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline and self._take():
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", "/", headers={"Connection": "close"})
                response = conn.getresponse()
                response.read()
                conn.close()
                by = response.getheader("X-Served-By", "")
                said = (
                    by
                    if response.status == 200
                    else f"status {response.status} from {by or 'the lb'} at {time.time():.3f}"
                )
            except Exception as exc:  # refused, reset, timeout: what must never happen
                said = f"{type(exc).__name__}: {exc}"
            with self._lock:
                (self.answers if said.startswith("host-") else self.errors).append(said)

    def __enter__(self) -> Requests:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)

    def wait(self) -> None:
        for t in self._threads:
            t.join(self.max_seconds + 15)


def app_site(name: str) -> str:
    """The recipe's own server block, naming the host that answered."""
    site = python_wsgi.nginx_site("/srv/app")
    return site.replace("    location / {\n", f"    add_header X-Served-By {name} always;\n\n    location / {{\n", 1)


@pytest.fixture
def lb_stage(sandbox, tmp_path):
    """host-1 (lb) in front of host-2 and host-3 (v1 deployed there); the lb reaches them by name."""
    repo = sample_repo(tmp_path, "v1")
    sb = web_hosts(
        sandbox,
        repo,
        "python_wsgi",
        3,
        canary={"steps": [5, 25, 50], "upstream": "{name}:80"},
        verify={"retries": 3, "interval": 0.5},
    )
    doc = toml.loads(sb.config_path.read_text())
    doc["stages"]["sandbox"]["hosts"][0]["roles"] = ["lb"]
    sb.config_path.write_text(toml.dumps(doc))
    lb, apps = sb.hosts[0], sb.hosts[1:]
    for h in apps:
        sandbox_mod.serve_nginx(h, app_site(h.name))
    deploy_ok(sb, "--hosts", ",".join(h.name for h in apps))
    ips = {h.name: sb.container(h).attrs["NetworkSettings"]["IPAddress"] for h in apps}
    initial = python_wsgi.lb_weights([f"{name}:80" for name in ips])
    code, out = sb.exec(
        lb,
        "".join(f"echo '{ip} {name}' >> /etc/hosts && " for name, ip in ips.items())
        + f"printf '%s' '{SUDO_RULE}' > /etc/sudoers.d/lb && chmod 440 /etc/sudoers.d/lb && "
        f"install -d -o deploy -g deploy /etc/nginx/deployer && printf '%s' '{initial}' > {WEIGHTS} && "
        f"chown deploy:deploy {WEIGHTS}",
    )
    assert code == 0, out
    sandbox_mod.serve_nginx(lb, python_wsgi.lb_site("sample", WEIGHTS))
    # a reload is asynchronous: the workers of web_hosts' first site (proxying to the lb's own
    # 127.0.0.1:8000, where nothing listens) may answer a moment longer
    wait_until(lambda: served_by(lb.http_port) in ("host-2", "host-3"), 20, "the lb proxying to the app hosts")
    return sb, initial


def served_by(port: int) -> str:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/", headers={"Connection": "close"})
        response = conn.getresponse()
        response.read()
        conn.close()
        return response.getheader("X-Served-By", "")
    except OSError:
        return ""


def balancer(sb) -> tuple[Session, Balancer]:
    cfg = load.load(str(sb.config_path))
    stage = cfg.stage(None)
    session = Session(stage, stage.hosts, Output(live=False), parallel=4)
    return session, Balancer(session, cfg.canary)


def lb_file(sb) -> str:
    code, out = sb.read(0, f"cat {WEIGHTS}; ls -A /etc/nginx/deployer")
    assert code == 0, out
    return out


def served(sb, count: int) -> dict[str, int]:
    with Requests(sb.hosts[0].http_port, count=count, threads=6) as req:
        req.wait()
    assert req.errors == [] and len(req.answers) == count
    return {name: req.answers.count(name) for name in set(req.answers)}


def test_shares_steps_and_aborts_through_a_real_lb(lb_stage):
    sb, initial = lb_stage
    assert lb_file(sb) == initial + "sample-weights.conf\n"
    session, lb = balancer(sb)
    with session, lb.undoing():
        assert round(lb.set_share(["host-3"], 10), 1) == 10.0
        counts = served(sb, 2000)
        print("10 % step:", counts)
        assert 100 <= counts.get("host-3", 0) <= 300, counts  # 5 % .. 15 % of 2,000

        with Requests(sb.hosts[0].http_port, count=20000, threads=4, max_seconds=60) as traffic:
            seen = []
            for percent in (5, 25, 50):
                lb.set_share(["host-3"], percent)
                before = len(traffic.answers)
                deadline = time.monotonic() + 20
                while len(traffic.answers) < before + 200 and time.monotonic() < deadline:
                    time.sleep(0.05)
                seen.append(len(traffic.answers) - before)
            assert lb.restore() == []
            time.sleep(0.5)
        print(f"steps 5/25/50 and restore: {len(traffic.answers)} requests, {len(traffic.errors)} failed")
        assert traffic.errors == [] and min(seen) >= 200
    assert lb_file(sb) == initial + "sample-weights.conf\n"  # the saved copy gone too

    # -- an abort at each step puts the weights from before the canary back --------------------
    at_start = initial + "sample-weights.conf\n"

    # nginx -t refuses the second step's file (an app host nginx cannot resolve): the first step's
    # weights stay live, then the restore puts back the file from before the canary
    session, lb = balancer(sb)
    broken = Balancer(session, dataclasses.replace(load.load(str(sb.config_path)).canary, upstream="{name}.invalid:80"))
    with session, pytest.raises(WeightsFailed, match="nginx -t rejects the new weights"):
        with lb.undoing():
            lb.set_share(["host-3"], 5)
            broken.set_share(["host-3"], 25)
    assert lb_file(sb) == at_start
    assert 0 < served(sb, 200).get("host-3", 0) < 200

    # SIGTERM while the second step's command runs: the run stops, the weights go back
    session, lb = balancer(sb)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    with session, signals.terminations(), pytest.raises(signals.Terminated):
        with lb.undoing():
            lb.set_share(["host-3"], 5)
            timer.start()
            lb.set_share(["host-3"], 25)
            time.sleep(10)  # the signal comes before this ends
    timer.join()
    assert lb_file(sb) == at_start

    # the canary host lost at the third step: what the flow sees (its health check fails) ends
    # the steps; the lb is reachable, so the weights go back
    session, lb = balancer(sb)
    with session, pytest.raises(RuntimeError, match="host-3 lost"):
        with lb.undoing():
            for percent in (5, 25, 50):
                lb.set_share(["host-3"], percent)
            sb.container(2).kill()
            raise RuntimeError("host-3 lost")
    assert lb_file(sb) == at_start


def test_deploy_strategy_canary_goes_through_the_steps_and_restores_the_weights(lb_stage):
    sb, initial = lb_stage
    at_start = initial + "sample-weights.conf\n"
    repo = sb.source
    with Requests(sb.hosts[0].http_port, count=20000, threads=2, max_seconds=120) as traffic:
        commit(repo, "v2", {"VERSION": "v2\n"})
        with_analysis(sb, {"interval": 1, "checks": 1, "metrics": [ERRORS]})
        deployed = cli(sb, "deploy", "--strategy", "canary", "--canary", "1", "--bake", "1", "--json")
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        out = deployed.stderr  # --json: the document on stdout, the lines on stderr
        with_analysis(sb, None)
        assert lb_file(sb) == at_start
        commit(repo, "v3: fails its health check", {"VERSION": "v3\n", "UNHEALTHY": "database unreachable\n"})
        failed = cli(sb, "deploy", "--strategy", "canary", "--canary", "1")
        assert lb_file(sb) == at_start
        commit(repo, "v4", {"VERSION": "v4\n"}, remove=("UNHEALTHY",))
        stopped = terminated_at_step_2(sb)
        assert lb_file(sb) == at_start
    print(f"{len(traffic.answers)} requests through the lb, {len(traffic.errors)} failed")
    assert traffic.errors == [] and len(traffic.answers) > 100
    steps = [line.split("  ")[0] for line in out.splitlines() if line.startswith("canary step")]
    assert steps == [
        "canary step 1/3: 5 % of requests to host-2",
        "canary step 2/3: 25 % of requests to host-2",
        "canary step 3/3: 50 % of requests to host-2",
    ], out
    assert "the lb weights from before the canary go back" in out
    # each step in the run's record (--json) and named by the ledger's analysis line of that step
    doc = json.loads(deployed.stdout)
    VALIDATOR.validate(doc)
    taken = {h["host"]: h.get("canary_steps", []) for h in doc["hosts"]}
    assert [(t["percent"], t["analysis"]) for t in taken["host-2"]] == [(5, "pass"), (25, "pass"), (50, "pass")]
    assert taken["host-1"] == taken["host-3"] == []
    shares = [t["share"] for t in taken["host-2"]]
    assert 0 < shares[0] < shares[1] < shares[2] <= 50 and [t["at"] for t in taken["host-2"]] == sorted(
        t["at"] for t in taken["host-2"]
    )
    ledger = sb.read(sb.hosts[1], "cat /srv/app/.deployer/ledger.jsonl")[1].splitlines()
    analyses = [e for e in map(json.loads, ledger) if e["action"] == "analysis"]
    assert [(a["canary_step"], a["result"]) for a in analyses] == [(5, "pass"), (25, "pass"), (50, "pass")], analyses
    assert [get(h)[1].split()[1] for h in sb.hosts[1:]] == ["v2", "v2"]
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "canary step 1/3" in failed.stdout and "canary step 2/3" not in failed.stdout
    said = failed.stdout
    assert said.index("weights from before the canary are back") < said.index("ROLLING BACK")  # weights first
    assert [get(h)[1].split()[1] for h in sb.hosts[1:]] == ["v2", "v2"]
    code, said = stopped
    assert code == 143, said
    assert said.index("weights from before the canary are back") < said.index("interrupted (SIGTERM)"), said


ERRORS = {"name": "errors", "provider": "command", "local": True, "command": "echo 0", "max": 1}
VALIDATOR = jsonschema.Draft202012Validator(json.loads((REPO / "docs" / "result.schema.json").read_text()))


def with_analysis(sb, table: dict | None) -> None:
    """[analysis] in the sandbox config (None: none)."""
    doc = toml.loads(sb.config_path.read_text())
    doc.pop("analysis", None)
    if table is not None:
        doc["analysis"] = table
    sb.config_path.write_text(toml.dumps(doc))


def terminated_at_step_2(sb) -> tuple[int, str]:
    """A canary deploy (v4) sent SIGTERM while it bakes at its second step: exit code and output."""
    p = cli_popen(sb, "deploy", "--strategy", "canary", "--canary", "1", "--bake", "5")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(p.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any(line.startswith("canary step 2/3") for line in lines), 90, "canary step 2/3")
        p.send_signal(signal.SIGTERM)
        p.wait(90)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    reader.join(10)
    return p.returncode, "".join(lines) + p.stderr.read()
