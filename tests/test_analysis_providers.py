"""The analysis' sources against the real things, on two nginx + gunicorn hosts (python_wsgi
recipe, its nginx site logging request times) shared by the whole module: the access log (one
command per host per check, a rotation between checks, crafted lines), a real Prometheus server
scraping the sample app's /metrics, an HTTP JSON endpoint, a command; `deployer analyze` with
its exit codes and --json. Order matters: the later tests put v2 (failing 20 %) on host-1."""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import jsonschema
import pytest
import toml
from conftest import _sandbox_factory
from helpers import REPO, cli, wait_until
from test_recipes import WEB, commit, deploy_ok, get, sample_repo

from benchmarks.traffic import Traffic
from deployer.config import load as config_load
from deployer.engine.analysis import run_on
from deployer.engine.analysis_sources import Context, Sources
from deployer.engine.session import Session
from deployer.recipes import python_wsgi
from deployer.report.output import Output
from deployer.sandbox import hosts as sandbox_mod

pytestmark = pytest.mark.slow
SCHEMA = json.loads((REPO / "docs" / "result.schema.json").read_text())
LOG = "/var/log/nginx/access.log"
RATE = {"name": "success rate", "min": 99.0}
P99 = {"name": "p99", "measure": "p99_ms", "max": 2000}


@contextlib.contextmanager
def serving(client_key, tmp: Path, n: int, **extra):
    """n hosts serving v1 through nginx; the deploy user reads nginx's log (group adm)."""
    repo = sample_repo(tmp, "v1")
    make, started, client = _sandbox_factory(client_key, repo, tmp)
    try:
        sb = make(n, source=repo, docker_kwargs=WEB, app={"recipe": "python_wsgi"}, **extra)
        site = python_wsgi.nginx_site("/srv/app")
        for h in sb.hosts:
            sandbox_mod.serve_nginx(h, site)
            code, out = sb.exec(h, f"usermod -aG adm deploy && touch {LOG} && chgrp adm {LOG} && chmod 640 {LOG}")
            assert code == 0, out
        deploy_ok(sb)
        yield sb
    finally:
        sandbox_mod.stop_hosts(started)
        client.close()


@pytest.fixture(scope="module")
def web(sandbox_image, client_key, tmp_path_factory):
    with serving(client_key, tmp_path_factory.mktemp("analysis"), 2) as sb:
        yield sb


def configure(sb, metrics: list[dict], **analysis) -> None:
    doc = toml.loads(sb.config_path.read_text())
    doc["analysis"] = {"interval": 1, "checks": 2, "min_requests": 5, **analysis, "metrics": metrics}
    sb.config_path.write_text(toml.dumps(doc))


def deploy_plain(sb, *args: str) -> None:
    """A deploy without [analysis] (these tests judge with `analyze`)."""
    doc = toml.loads(sb.config_path.read_text())
    doc.pop("analysis", None)
    sb.config_path.write_text(toml.dumps(doc))
    deploy_ok(sb, *args)


def traffic(sb, rate: float = 40, max_seconds: float = 90) -> Traffic:
    ports = {h.name: h.http_port for h in sb.hosts}
    return Traffic(ports, rate=rate, threads=2, max_seconds=max_seconds, max_requests=int(rate * max_seconds) + 1000)


def analyze(sb, *args: str) -> subprocess.CompletedProcess:
    return cli(sb, "analyze", *args, timeout=120)


def test_access_log_one_command_per_host_per_check_and_exit_0(web):
    configure(web, [{**RATE, "max_vs_baseline": 1.0}, P99, {"name": "requests", "measure": "requests", "min": 1}])
    before = [web.command_count(h) for h in web.hosts]
    with traffic(web):
        proc = analyze(web, "--checks", "3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("check ")]
    assert [line.split(":")[0] for line in lines] == ["check 1/3", "check 2/3", "check 3/3"], proc.stdout
    assert all(line.endswith(": pass") and "success rate 100.0 %" in line and " ms" in line for line in lines)
    # per host: the live release read once, the window marked once, then one command per check
    assert [web.command_count(h) - b for h, b in zip(web.hosts, before, strict=True)] == [5, 5]


def sources_for(sb):
    cfg = config_load.load(str(sb.config_path))
    stage = cfg.stage("sandbox")
    session = Session(stage, stage.hosts, Output(), 2, action="analyze")
    assert cfg.analysis is not None
    return session, Sources(cfg.analysis, run_on(session), Context("sandbox"), session.paths)


def test_rotation_between_checks_and_crafted_lines_lose_nothing(web):
    configure(web, [RATE, P99, {"name": "requests", "measure": "requests", "min": 0}])
    session, sources = sources_for(web)
    h1 = web.hosts[0]
    with session:
        runs = session.runs[:1]
        sources.start(runs)
        for _ in range(7):
            assert get(h1)[0] == 200
        # crafted lines: quotes where fields end, a 2 MB line, binary bytes, no newline ending them
        crafted = (
            'printf \'%s\\n\' \'1.2.3.4 - - [x] "GET /" 500 1 "\\" 200 " "ua" 0.1 0.1\' >> LOG && '
            "head -c 2000000 /dev/zero | tr '\\0' '\"' >> LOG && printf '\\n\\001\\377\\000 ] \"\" 99\\n' >> LOG"
        ).replace("LOG", LOG)
        assert web.exec(h1, crafted)[0] == 0
        for _ in range(3):
            assert get(h1)[0] == 200
        first = sources.read(runs)
        assert first["requests"][h1.name].value == 11  # 10 through nginx + the crafted 500 line
        assert first["success rate"][h1.name].value == pytest.approx(100 * 10 / 11)
        assert any("not in the combined shape" in n for n in sources.notes)
        sources.notes.clear()
        # rotation between two checks: 4 requests before it, 6 after; every one counted once
        for _ in range(4):
            assert get(h1)[0] == 200
        code, out = web.exec(h1, f"mv {LOG} {LOG}.1 && kill -USR1 $(cat /run/nginx.pid) && sleep 0.5")
        assert code == 0, out
        wait_until(lambda: web.exec(h1, f"test -f {LOG}")[0] == 0, 10, "nginx reopened its log")
        web.exec(h1, f"chgrp adm {LOG} && chmod 640 {LOG}")
        for _ in range(6):
            assert get(h1)[0] == 200
        second = sources.read(runs)
        assert second["requests"][h1.name].value == 10 and second["success rate"][h1.name].value == 100.0
        assert sources.notes == [f"{h1.name}: rotated (read the rest of {LOG}.1)"]
        sources.notes.clear()
        third = sources.read(runs)  # nothing since: zero requests, no number to judge
        assert third["requests"][h1.name].value == 0 and third["success rate"][h1.name].value is None


def test_an_unreadable_log_fails_the_check_with_one_line(web):
    configure(web, [{**RATE, "path": "/var/log/nginx/missing.log"}], checks=1)
    proc = analyze(web)
    assert proc.returncode == 1
    assert "success rate on host-1: cannot read /var/log/nginx/missing.log: No such file" in proc.stdout, proc.stdout
    assert "Traceback" not in proc.stderr


def test_too_few_requests_follow_inconclusive(web):
    """min_requests above what a 1 s window gets: inconclusive, never a pass unless told."""
    few = re.compile(
        r"check (\d)/(\d): success rate .*: inconclusive \(success rate on host-\d: (\d+) requests, fewer than 1000\)"
    )

    def run(mode: str, checks: int) -> tuple[subprocess.CompletedProcess, list[tuple[str, ...]]]:
        configure(web, [RATE], checks=checks, min_requests=1000, inconclusive=mode)
        with traffic(web, rate=20):
            proc = analyze(web)
        found = [m.groups() for line in proc.stdout.splitlines() if (m := few.fullmatch(line))]
        assert all(int(n) < 1000 for *_, n in found), proc.stdout
        return proc, [(a, b) for a, b, _ in found]

    proc, checks = run("fail", 2)
    assert proc.returncode == 1 and checks == [("1", "2")], proc.stdout  # failure_limit 1
    ended = r"^analysis: fail: check 1: success rate on host-\d: \d+ requests, fewer than 1000 \(canary 100.0 %\)$"
    assert re.search(ended, proc.stdout, re.M), proc.stdout
    proc, checks = run("pass", 2)
    assert proc.returncode == 0 and checks == [("1", "2"), ("2", "2")], proc.stdout
    assert "analysis: pass" in proc.stdout
    proc, checks = run("extend", 1)  # one more check, then an inconclusive one counts as failed
    assert proc.returncode == 1 and checks == [("1", "1"), ("2", "2")], proc.stdout


@pytest.fixture(scope="module")
def canary(web):
    """v2 on host-1 only, failing 20 % of requests (not /health): host-1 canary, host-2 baseline."""
    commit(web.source, "v2 fails 20 %", {"VERSION": "v2\n", "FAILS": "20\n"})
    deploy_plain(web, "--hosts", "host-1")
    return web


def test_canary_against_baseline_fails_with_both_values_and_json(canary):
    configure(canary, [{**RATE, "max_vs_baseline": 1.0}, P99], checks=3)
    with traffic(canary):
        proc = analyze(canary, "--json")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)
    a = doc["analysis"]
    assert (doc["task"], a["verdict"], a["canary"], a["baseline"]) == ("analyze", "fail", ["host-1"], ["host-2"])
    assert len(a["checks"]) == 1 and a["failing"]["metric"] == "success rate"  # failure_limit 1
    assert 70 < a["failing"]["canary"] < 90 and a["failing"]["baseline"] == 100.0
    assert "check 1/3: success rate" in proc.stderr and "(baseline 100.0 %)" in proc.stderr
    assert doc["error"].startswith("analysis failed: check 1: success rate on host-1:")


@pytest.fixture(scope="module")
def prometheus(web, tmp_path_factory):
    """A real Prometheus on loopback scraping each host's /metrics every second, label host=NAME."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed (scripts/setup installs it)"
    tmp = tmp_path_factory.mktemp("prometheus")
    scrape = [{"targets": [f"127.0.0.1:{h.http_port}"], "labels": {"host": h.name}} for h in web.hosts]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "sample", "static_configs": scrape}],
    }
    (tmp / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "log", "w"),  # noqa: SIM115 - closed with the process
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def scraped() -> bool:
            try:
                with urllib_open(f"{url}/api/v1/query?query=sample_fail_percent") as r:
                    return len(json.load(r)["data"]["result"]) == len(web.hosts)
            except OSError:
                return False

        wait_until(scraped, 30, "prometheus scraped both hosts")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def urllib_open(url: str):
    return urllib.request.urlopen(url, timeout=5)


def test_prometheus_instant_query_per_host(canary, prometheus):
    wait_until(
        lambda: (
            b'"20"'
            in urllib_open(f"{prometheus}/api/v1/query?query=sample_fail_percent%7Bhost%3D%22host-1%22%7D").read()
        ),
        30,
        "prometheus saw v2's FAILS",
    )
    query = 'max(sample_fail_percent{host="{host}"})'
    metric = {"name": "fail percent", "provider": "prometheus", "url": prometheus, "query": query}
    configure(canary, [{**metric, "max": 1}], checks=1)
    proc = analyze(canary)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "fail percent on host-1: 20 above max 1" in proc.stdout
    configure(canary, [{**metric, "max": 25, "max_vs_baseline": 30}], checks=2)
    proc = analyze(canary)
    assert proc.returncode == 0 and "check 2/2: fail percent 20 (baseline 0): pass" in proc.stdout, proc.stdout
    # no series for a query: no number, the check fails (never a pass)
    configure(canary, [{**metric, "query": 'sample_fail_percent{host="nowhere-{host}"}', "max": 1}], checks=1)
    proc = analyze(canary)
    assert proc.returncode == 1 and "no series (empty vector)" in proc.stdout, proc.stdout


class _Stats(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        name = self.path.rsplit("/", 1)[-1]
        body = json.dumps({"hosts": {"host-1": {"errors": 4.5}, "host-2": {"errors": 0.5}}, "for": name}).encode()
        if self.path.startswith("/stats/"):
            body = json.dumps({"queue": {"depth": 3 if name == "host-1" else 1}, "text": "x"}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def stats_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stats)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_json_path_and_unreachable_sources(canary, stats_server):
    metric = {"name": "queue", "provider": "http", "url": stats_server + "/stats/{host}", "json_path": "queue.depth"}
    configure(canary, [{**metric, "max": 5, "max_ratio_vs_baseline": 2}], checks=1)
    proc = analyze(canary)
    assert proc.returncode == 1 and "queue: 3 vs baseline 1, more than 2 x worse" in proc.stdout, proc.stdout
    configure(canary, [{**metric, "max": 5}], checks=1)
    assert analyze(canary).returncode == 0
    configure(canary, [{**metric, "json_path": "text", "max": 5}], checks=1)
    assert "queue on host-1: text is not a number" in analyze(canary).stdout
    configure(canary, [{**metric, "url": "http://127.0.0.1:9/stats/{host}", "max": 5}], checks=1)
    proc = analyze(canary)
    assert proc.returncode == 1 and "queue on host-1: http://127.0.0.1:9/stats/host-1 unreachable" in proc.stdout


def test_command_on_hosts_and_locally(canary):
    remote = {"name": "fails file", "provider": "command", "command": "cat FAILS 2>/dev/null || echo 0"}
    configure(canary, [{**remote, "max": 10}], checks=1)
    proc = analyze(canary)
    assert proc.returncode == 1 and "fails file on host-1: 20 above max 10" in proc.stdout, proc.stdout
    local = {"name": "local", "provider": "command", "local": True, "command": "echo {host} | tr -dc 0-9"}
    configure(canary, [{**local, "max": 1}], checks=1)
    proc = analyze(canary)  # {host} quoted into the command: host-1 -> 1; the baseline's 2 is not bounded
    assert proc.returncode == 0 and "check 1/1: local 1 (baseline 2): pass" in proc.stdout, proc.stdout
    configure(canary, [{**remote, "command": "echo many", "max": 1}], checks=1)
    proc = analyze(canary)
    assert proc.returncode == 1 and "fails file on host-1: not a number: 'many'" in proc.stdout, proc.stdout


def test_analyze_without_analysis_table_is_exit_2(web, tmp_path):
    doc = toml.loads(web.config_path.read_text())
    doc.pop("analysis", None)
    path = tmp_path / "hosts.toml"
    path.write_text(toml.dumps(doc))
    proc = subprocess.run(
        [sys.executable, "-m", "deployer", "analyze", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "no [analysis] table" in proc.stderr


def test_a_slow_canary_fails_p99_against_the_baseline(canary):
    commit(canary.source, "v3: / takes 300 ms longer", {"VERSION": "v3\n", "FAILS": "0\n", "SLOW": "/ 300\n"})
    deploy_plain(canary, "--hosts", "host-1")
    configure(canary, [{"name": "p99", "measure": "p99_ms", "max_ratio_vs_baseline": 2.0}], checks=2)
    with traffic(canary):
        proc = analyze(canary)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "check 1/2: p99 " in proc.stdout and "more than 2 x worse" in proc.stdout, proc.stdout


def test_a_background_error_rate_both_share_is_no_false_alarm(canary):
    """Old and new both fail 2 % of requests: only a difference from the baseline fails."""
    commit(canary.source, "v4: 2 % fail", {"VERSION": "v4\n", "FAILS": "2\n", "SLOW": "/ 0\n"})
    deploy_plain(canary)
    commit(canary.source, "v5: 2 % fail too", {"VERSION": "v5\n"})
    deploy_plain(canary, "--hosts", "host-1")
    # windows of about 150 requests per host: one failed request moves a rate by under 0.7 points
    configure(canary, [{"name": "success rate", "max_vs_baseline": 2.5}], checks=1, interval=2, min_requests=50)
    runs = []
    with traffic(canary, rate=150, max_seconds=300):
        for _ in range(10):  # ten separate runs, each its own window from its own offsets
            proc = analyze(canary, "--checks", "1", "--json")
            runs.append(json.loads(proc.stdout)["analysis"])
            assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    assert [a["verdict"] for a in runs] == ["pass"] * 10, [c["metrics"] for a in runs for c in a["checks"]]
    metrics = [m for a in runs for c in a["checks"] for m in c["metrics"]]
    assert len(metrics) == 10 and all(a["canary"] == ["host-1"] and a["baseline"] == ["host-2"] for a in runs)
    rates = [m["canary"] for m in metrics] + [m["baseline"] for m in metrics]
    assert all(90 < r < 100 for r in rates), rates  # both really fail some requests
