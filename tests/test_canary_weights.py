"""[canary] steps as nginx weights, without sandbox hosts: the weights (every share 1..99 % for
2..20 app hosts), the weights file, the script's inputs, the config errors (exit 2, one line
each), and the deploy flow on local hosts (dry run, an lb refusing the first step)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import cli_env
from test_flows_local import Fleet, current, releases
from test_flows_local import artifacts as artifacts  # a fixture, for the flow tests below

from deployer.config import load
from deployer.config.settings import CanarySettings
from deployer.errors import ConfigError, UsageError
from deployer.plan import weights
from deployer.plan.batches import Strategy
from deployer.recipes import python_wsgi
from deployer.remote import weights as remote
from deployer.ssh.local import serving


def test_every_share_for_2_to_20_hosts_is_within_the_tolerance():
    worst, largest = 0.0, 0
    for hosts in range(2, 21):
        for canary in range(1, hosts):
            for percent in range(1, 100):
                wc, wo = weights.pair(hosts, canary, percent)
                assert wc >= 1 and wo >= 1
                off = abs(weights.share(canary, wc, hosts - canary, wo) - percent)
                assert off <= weights.TOLERANCE, (hosts, canary, percent, wc, wo)
                worst, largest = max(worst, off), max(largest, wc, wo)
    assert worst <= weights.TOLERANCE < 1
    assert largest < 2000  # 99 % for 1 of 20 hosts: 1881 against 1


@pytest.mark.parametrize(
    "hosts, canary, percent, expected",
    [(2, 1, 10, (1, 9)), (3, 1, 10, (2, 9)), (3, 1, 50, (2, 1)), (2, 1, 50, (1, 1)), (10, 1, 10, (1, 1))],
)
def test_small_weights(hosts, canary, percent, expected):
    assert weights.pair(hosts, canary, percent) == expected


def test_a_share_needs_canary_and_other_hosts():
    for hosts, canary, percent in [(2, 0, 10), (2, 2, 10), (3, 1, 0), (3, 1, 100)]:
        with pytest.raises(ValueError):
            weights.pair(hosts, canary, percent)


def test_weights_file_text():
    apps = [("app-1", "10.0.0.1:80"), ("app-2", "10.0.0.2:80"), ("app-3", "10.0.0.3:80")]
    lines = weights.servers(apps, ["app-3"], 10)
    assert weights.text(lines, "10 % to app-3") == (
        "# Written by deployer (10 % to app-3); put back when the deploy ends.\n"
        "server 10.0.0.1:80 weight=9;  # app-1\n"
        "server 10.0.0.2:80 weight=9;  # app-2\n"
        "server 10.0.0.3:80 weight=2;  # app-3\n"
    )
    assert round(weights.realised(lines, ["app-3"]), 2) == 10.0
    assert weights.upstream_address("{name}.internal:8080", "app-1", "1.2.3.4") == "app-1.internal:8080"
    assert weights.upstream_address("{address}:80", "app-1", "1.2.3.4") == "1.2.3.4:80"


def test_the_script_gets_every_value_quoted():
    script = remote.set_weights("/etc/nginx/deployer/a b-weights.conf", "server x;  # it's\n")
    assert "WEIGHTS_FILE='/etc/nginx/deployer/a b-weights.conf'\n" in script
    assert "SAVED='/etc/nginx/deployer/.a b-weights.conf.deployer-saved'\n" in script
    assert "CONTENT='server x;  # it'\"'\"'s\n'\n" in script
    assert "ACTION=set\n" in script and "NGINX=/usr/sbin/nginx\n" in script
    assert "ACTION=restore\n" in remote.restore("/etc/nginx/deployer/a-weights.conf")


def test_lb_snippet_includes_the_weights_file():
    site = python_wsgi.lb_site("shop", "/etc/nginx/deployer/shop-weights.conf")
    assert "upstream shop {\n    zone shop_upstream 64k;\n    include /etc/nginx/deployer/shop-weights.conf;\n}" in site
    assert "proxy_pass http://shop;" in site
    assert python_wsgi.lb_weights(["10.0.0.1:80", "10.0.0.2:80"]) == (
        "server 10.0.0.1:80 weight=1;\nserver 10.0.0.2:80 weight=1;\n"
    )


BASE = """\
[app]
name = "shop"
deploy_to = "/srv/shop"

[canary]
{canary}

[stages.production]
hosts = [ {hosts} ]
"""
LB = '{ host = "127.0.0.1", port = 9, name = "lb-1", roles = ["lb"] }'
APP1 = '{ host = "127.0.0.1", port = 9, name = "web-1", roles = ["web"] }'
APP2 = '{ host = "127.0.0.1", port = 9, name = "web-2" }'


def parse(canary: str, hosts: str) -> str:
    try:
        cfg = load.parse(BASE.format(canary=canary, hosts=hosts), Path("h.toml"))
    except ConfigError as exc:
        return str(exc)
    return f"ok {cfg.canary.steps} {cfg.canary.weights_file('shop')}"


def test_steps_read_with_an_lb_and_two_app_hosts():
    assert parse("steps = [5, 25, 50]", f"{LB}, {APP1}, {APP2}") == (
        "ok (5, 25, 50) /etc/nginx/deployer/shop-weights.conf"
    )
    assert parse("", APP1) == "ok () /etc/nginx/deployer/shop-weights.conf"  # no steps: a share of hosts


@pytest.mark.parametrize(
    "canary, hosts, message",
    [
        (
            "steps = [5, 25, 25]",
            f"{LB}, {APP1}, {APP2}",
            "h.toml:6: canary.steps: steps must increase strictly, got 25 then 25",
        ),
        ("steps = [50, 25]", f"{LB}, {APP1}, {APP2}", "canary.steps: steps must increase strictly, got 50 then 25"),
        ("steps = [0, 25]", f"{LB}, {APP1}, {APP2}", "canary.steps: each step is a percent of requests 1-99, got 0"),
        ("steps = [5, 100]", f"{LB}, {APP1}, {APP2}", "canary.steps: each step is a percent of requests 1-99, got 100"),
        ("steps = [5.5]", f"{LB}, {APP1}, {APP2}", "canary.steps: expected whole percents 1-99, got 5.5"),
        ("steps = 5", f"{LB}, {APP1}, {APP2}", "canary.steps: expected a list of whole percents 1-99"),
        ("steps = [5]", f"{APP1}, {APP2}", "canary.steps: steps need a host with role 'lb'"),
        ("steps = [5]", f"{LB}, {APP1}", "stages.production.hosts: [canary] a share is not possible with one app host"),
        ('steps = [5]\nupstream = "web:80"', f"{LB}, {APP1}, {APP2}", "canary.upstream: expected {name} or {address}"),
        ('weights_dir = "nginx"', f"{LB}, {APP1}, {APP2}", "canary.weights_dir: expected an absolute path"),
    ],
)
def test_config_errors(canary, hosts, message):
    said = parse(canary, hosts)
    assert message in said and "\n" not in said


def test_config_error_through_the_cli_is_exit_2_one_line(tmp_path):
    (tmp_path / "hosts.toml").write_text(BASE.format(canary="steps = [5, 25]", hosts=f"{LB}, {APP1}"))
    proc = subprocess.run(
        [sys.executable, "-m", "deployer", "deploy", "--strategy", "canary", "--config", str(tmp_path / "hosts.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "a share is not possible with one app host" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_config_keys_lists_the_canary_table(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "deployer", "config.keys"], capture_output=True, text=True, timeout=60, env=cli_env()
    )
    assert proc.returncode == 0, proc.stderr
    for key in ("canary.steps", "canary.upstream", "canary.weights_dir"):
        assert key in proc.stdout


# --- the weights in the deploy flow, on local hosts (no nginx there: tests/test_canary_lb.py has one)


def lb_fleet(tmp_path: Path) -> Fleet:
    """3 local hosts, host-3 with role lb (host-1 and host-2 the app hosts behind it)."""
    fleet = Fleet(tmp_path, 3)
    hosts = list(fleet.stage.hosts)
    hosts[2] = dataclasses.replace(hosts[2], roles=("lb",))
    fleet.stage = dataclasses.replace(fleet.stage, hosts=tuple(hosts))
    return fleet


def test_canary_steps_dry_run_shows_each_weights_command_and_changes_nothing(tmp_path, artifacts):
    fleet = lb_fleet(tmp_path)
    steps = CanarySettings(steps=(5, 50))
    with serving(fleet.hosts):
        fleet.deploy(artifacts[0], strategy=Strategy("canary"), shares=steps, dry_run=True)
    printed = fleet.printed.getvalue()
    assert [line for line in printed.splitlines() if line.startswith("canary step")] == [
        "canary step 1/2: 5 % of requests to host-1",
        "canary step 2/2: 50 % of requests to host-1",
    ]
    assert printed.count("--- host-3 · weights") == 2 and printed.count("--- host-3 · restore") == 1
    assert "server " + fleet[0].address + ":80 weight=1;  # host-1" in printed  # 50 %: 1 to 1
    assert all(releases(h) == [] for h in fleet.hosts)


def test_canary_steps_refused_by_the_lb_switch_nothing(tmp_path, artifacts):
    """The first step's weights go out before the canary switches: an lb that cannot take them
    (no weights file here) fails the deploy with no host switched."""
    fleet = lb_fleet(tmp_path)
    with serving(fleet.hosts):
        failed = fleet.failed(
            fleet.deploy, artifacts[0], strategy=Strategy("canary"), shares=CanarySettings(steps=(5,))
        )
    assert "no /etc/nginx/deployer/sample-weights.conf" in fleet.printed.getvalue(), fleet.printed.getvalue()
    assert failed.exit_code == 1 and all(current(h) == "" for h in fleet.hosts)


def test_canary_steps_need_app_hosts_beside_the_canary(tmp_path, artifacts):
    fleet = lb_fleet(tmp_path)
    with serving(fleet.hosts), pytest.raises(UsageError, match="--canary 2: a share of requests needs app hosts"):
        fleet.deploy(artifacts[0], strategy=Strategy("canary", canary=2), shares=CanarySettings(steps=(5,)))
