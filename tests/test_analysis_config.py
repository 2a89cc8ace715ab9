"""[analysis] at load: every mistake is one line naming the key (exit 2 through the CLI), and
what a metric cannot give (a latency from a log without request times) is refused there."""

import subprocess
import sys

import pytest

from deployer.config import load
from deployer.errors import ConfigError

BASE = '[app]\ndeploy_to = "/srv/a"\n[stages.s]\nhosts = ["h"]\n[analysis]\ninterval = 2\n'


def parse(tmp_path, metrics: str, extra: str = ""):
    return load.parse(BASE + extra + metrics, tmp_path / "hosts.toml")


def test_defaults_and_every_provider(tmp_path):
    cfg = parse(
        tmp_path,
        '[[analysis.metrics]]\nname = "ok"\nmin = 99\nmax_vs_baseline = 1\n'
        '[[analysis.metrics]]\nname = "p99"\nmeasure = "p99_ms"\nmax_ratio_vs_baseline = 1.5\n'
        '[[analysis.metrics]]\nname = "prom"\nprovider = "prometheus"\nurl = "http://p:9090"\nquery = "up"\nmin = 1\n'
        '[[analysis.metrics]]\nname = "web"\nprovider = "http"\nurl = "http://{host}/s"\njson_path = "a.b"\nmax = 3\n'
        '[[analysis.metrics]]\nname = "cmd"\nprovider = "command"\ncommand = "echo 1"\nlocal = true\nmax = 3\n',
    )
    a = cfg.analysis
    assert (a.interval, a.checks, a.failure_limit, a.min_requests, a.inconclusive) == (2, 6, 1, 50, "fail")
    ok, p99, prom, web, cmd = a.metrics
    assert (ok.provider, ok.path, ok.measure, ok.min, ok.max_vs_baseline) == (
        "access_log",
        "/var/log/nginx/access.log",
        "success_rate",
        99.0,
        1.0,
    )
    assert ok.higher_is_better and not p99.higher_is_better and prom.higher_is_better and not web.higher_is_better
    assert (prom.query, web.json_path, cmd.local, cmd.max) == ("up", "a.b", True, 3.0)


def test_no_analysis_table_is_none(tmp_path):
    assert load.parse(BASE.replace("[analysis]\ninterval = 2\n", ""), tmp_path / "h.toml").analysis is None


@pytest.mark.parametrize(
    "metrics, extra, expected",
    [
        ('[[analysis.metrics]]\nname = "x"\nprovider = "statsd"\nmin = 1\n', "", "provider: expected one of"),
        (
            '[[analysis.metrics]]\nname = "x"\nmeasure = "p99_ms"\nlog_format = "combined"\nmax = 1\n',
            "",
            "measure: p99_ms needs $request_time in the log; log_format 'combined' has none",
        ),
        ('[[analysis.metrics]]\nname = "x"\nmeasure = "p95_ms"\nmax = 1\n', "", "measure: expected one of"),
        (
            '[[analysis.metrics]]\nname = "x"\nprovider = "prometheus"\nurl = "http://p"\nmax = 1\n',
            "",
            "query: missing",
        ),
        ('[[analysis.metrics]]\nname = "x"\nprovider = "prometheus"\nquery = "up"\nmax = 1\n', "", "url: missing"),
        ('[[analysis.metrics]]\nname = "x"\nprovider = "http"\nurl = "http://p"\nmax = 1\n', "", "json_path: missing"),
        ('[[analysis.metrics]]\nname = "x"\nprovider = "command"\nmax = 1\n', "", "command: missing"),
        ('[[analysis.metrics]]\nname = "x"\nprovider = "http"\nurl = "ftp://p"\njson_path = "a"\nmax = 1\n', "", "url"),
        (
            '[[analysis.metrics]]\nname = "x"\nprovider = "http"\nurl = "http://p"\njson_path = "a..b"\nmax = 1\n',
            "",
            "json_path",
        ),
        ('[[analysis.metrics]]\nname = "x"\nquery = "up"\nmax = 1\n', "", "query: applies to provider prometheus only"),
        ('[[analysis.metrics]]\nname = "x"\n', "", "has no bound"),
        ('[[analysis.metrics]]\nname = "x"\nmin = 5\nmax = 1\n', "", "min 5 is above max 1"),
        ('[[analysis.metrics]]\nname = "x"\nmax = nan\n', "", "expected a finite number"),
        ('[[analysis.metrics]]\nname = "x"\nmax_ratio_vs_baseline = 0.5\n', "", "max_ratio_vs_baseline: expected"),
        ('[[analysis.metrics]]\nname = "x"\npath = "log/access.log"\nmin = 1\n', "", "path: expected an absolute path"),
        ('[[analysis.metrics]]\nname = "x"\nmin = 1\n[[analysis.metrics]]\nname = "x"\nmin = 2\n', "", "names two"),
        ('[[analysis.metrics]]\nname = "x"\nmin = 1\nwindow = 3\n', "", "window: unknown key"),
        ("", "", "analysis.metrics: missing"),
        ('[[analysis.metrics]]\nname = "x"\nmin = 1\n', 'inconclusive = "maybe"\n', "inconclusive: expected one of"),
        ('[[analysis.metrics]]\nname = "x"\nmin = 1\n', "checks = 0\n", "checks: expected"),
    ],
)
def test_mistakes_are_one_line_each(tmp_path, metrics, extra, expected):
    with pytest.raises(ConfigError) as err:
        parse(tmp_path, metrics, extra)
    text = str(err.value)
    assert expected in text and len(text.splitlines()) == 1, text


def test_cli_exit_2_one_line_no_host_touched(tmp_path):
    """Unreachable hosts: a config error must stop everything before any connection."""
    (tmp_path / "hosts.toml").write_text(
        '[app]\ndeploy_to = "/srv/a"\n[stages.s]\nhosts = ["192.0.2.1"]\n[analysis]\n'
        '[[analysis.metrics]]\nname = "p99"\nmeasure = "p99_ms"\nlog_format = "combined"\nmax = 300\n'
    )
    for args in (["check"], ["deploy", "--dry-run"]):
        proc = subprocess.run(
            [sys.executable, "-m", "deployer", "--config", str(tmp_path / "hosts.toml"), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "analysis.metrics[0].measure: p99_ms needs $request_time" in lines[0], lines
        assert "Traceback" not in proc.stderr and "192.0.2.1" not in proc.stdout + proc.stderr


def test_config_keys_lists_analysis(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "deployer", "config.keys"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for key in (
        "analysis.interval",
        "analysis.inconclusive",
        "analysis.metrics.max_ratio_vs_baseline",
        "analysis.metrics.json_path",
    ):
        assert key in proc.stdout
