"""What a production-shaped host shows after `deployer setup`, with every deploy run as the
unprivileged deploy user: python_wsgi and django deploy, roll back and fail a deploy under a steady
request stream through nginx with not one failed request and the same gunicorn master (systemd's
MainPID); a pushed env reloads through systemd too; a stopped app is started by the next deploy; a
reboot serves what current names without the deployer; the deploy user can write nowhere but
deploy_to, its home and the world's temp directories, and sudo runs nothing but the rule; a unit or
site changed by hand is reported by `check` (and shown by `status`) and never rewritten by a deploy."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import django_shop
import pytest
import toml
from helpers import cli, current, git
from test_json_contract import document
from test_recipes import WEB, commit, deploy_ok, get, make_repo, sample_repo, worker_dirs
from test_setup import bare, setup_cli
from test_systemd_hosts import run

from benchmarks.traffic import Traffic, format_summary
from deployer.plan import setup as plan
from deployer.recipes import python_wsgi
from deployer.sandbox.hosts import restart_host

pytestmark = pytest.mark.slow

RATE = 120  # the stream's pace, requests/s through the host's nginx, 4 client threads
SETTLE = 1.0  # seconds of traffic between the steps
UNIT = "/etc/systemd/system/sample.service"
SITE = "/etc/nginx/sites-available/sample"
DB = "/srv/app/shared/shop.sqlite3"  # the Django project's (django_shop.py)


def set_up(systemd_sandbox, repo: Path, recipe: str):
    """One systemd host made bare, then `setup --login root --user deploy`; deploys log in as deploy."""
    sb = systemd_sandbox(
        1, source=repo, docker_kwargs=WEB, app={"recipe": recipe}, verify={"retries": 3, "interval": 0.5}
    )
    bare(sb)
    proc = setup_cli(sb, "--user", "deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return sb


def main_pid(sb) -> int:
    """systemd's MainPID of the app's unit, once it is active (0: not running)."""
    code, out = sb.read(0, "systemctl show -p MainPID --value sample.service")
    assert code == 0, out
    return int(out)


def sudo_calls(sb, verb: str) -> int:
    """How many times sudo ran `systemctl VERB sample.service` (the journal of the host's sudo)."""
    code, out = sb.read(0, "journalctl -q --no-pager _COMM=sudo")
    return out.count(f"COMMAND=/usr/bin/systemctl {verb} sample.service")


def version(h) -> str:
    status, body = get(h)
    assert status == 200, body
    return body.split()[1]


def under_traffic(sb, repo: Path, steps) -> dict:
    """Run steps (name, args, expected exit, files committed first or None) through a bounded
    request stream to the host's nginx; each step must keep systemd's MainPID. The stream's counts."""
    (h,) = sb.hosts
    master = main_pid(sb)
    during: dict[str, tuple[float, float]] = {}
    with Traffic({h.name: h.http_port}, rate=RATE, threads=4, max_seconds=240, max_requests=30000) as traffic:
        for name, args, expect, files in steps:
            if files:
                commit(repo, name, files)
            time.sleep(SETTLE)
            start = time.time()
            proc = cli(sb, *args)
            during[name] = (start, time.time())
            assert proc.returncode == expect, name + ": " + proc.stdout + proc.stderr
            assert main_pid(sb) == master, name  # a reload through systemd: the same master
        time.sleep(SETTLE)
    samples = traffic.samples
    summary = traffic.summary(samples)
    print("\n" + format_summary(summary))
    # the stream kept its pace: it ran at least through the pauses, so it sent at least what a paced
    # run sends in them; and requests went out while each step ran
    assert summary["requests"] >= traffic.paced(SETTLE * (len(steps) + 1)), summary
    for name, (start, end) in during.items():
        assert sum(start <= s.sent <= end for s in samples) >= len(traffic.workers), name
    # not one failure: every request answered 2xx, no refused, reset or timed-out connection
    assert (summary["failed"], summary["errors"]) == (0, 0), summary["first_errors"]
    return summary


# --- python_wsgi: deploys under traffic, a stopped app, a reboot -----------------------------------


def test_python_wsgi_after_setup_under_traffic_then_stopped_then_rebooted(systemd_sandbox, tmp_path):
    repo = sample_repo(tmp_path, "v1")
    sb = set_up(systemd_sandbox, repo, "python_wsgi")
    (h,) = sb.hosts

    deploy_ok(sb)  # the first deploy: `sudo -n systemctl start sample.service`
    # Type=notify with the gunicorn the host has (Debian's 20.1): start returned once it was ready
    code, out = sb.read(0, "systemctl show -p Type,ActiveState,SubState sample.service")
    assert out.split() == ["Type=notify", "ActiveState=active", "SubState=running"], out
    assert version(h) == "v1" and sudo_calls(sb, "start") == 1

    summary = under_traffic(
        sb,
        repo,
        [
            ("v2", ["deploy"], 0, {"VERSION": "v2\n"}),
            ("rollback", ["rollback"], 0, None),
            ("v3: fails verify, put back", ["deploy"], 1, {"VERSION": "v3\n", "UNHEALTHY": "database down\n"}),
        ],
    )
    assert {"v1", "v2"} <= set(summary["versions"][h.name]), summary
    assert current(sb, h) == "releases/1" and version(h) == "v1"
    # every reload went through systemd: v2, the rollback, v3 and its put-back
    assert (sudo_calls(sb, "reload"), sudo_calls(sb, "start")) == (4, 1)

    # a changed env pushed: its restart reloads through systemd too, the same master
    master = main_pid(sb)
    doc = toml.loads(sb.config_path.read_text())
    doc["env"] = {"GREETING": "hello from config.push"}
    sb.config_path.write_text(toml.dumps(doc))
    proc = cli(sb, "config.push")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sb.read(0, "cat /srv/app/current/.env") == (0, 'GREETING="hello from config.push"\n')
    assert (sudo_calls(sb, "reload"), sudo_calls(sb, "start"), main_pid(sb)) == (5, 1, master)

    # the app stopped by hand: the next deploy's restart starts it again
    master = main_pid(sb)
    code, out = sb.exec(0, "systemctl stop sample.service && systemctl is-active sample.service")
    assert out == "inactive\n", out
    commit(repo, "v4", {"VERSION": "v4\n"}, remove=("UNHEALTHY",))
    deploy_ok(sb)
    started = main_pid(sb)
    assert started not in (0, master) and sudo_calls(sb, "start") == 2
    assert current(sb, h) == "releases/4" and version(h) == "v4"

    # a reboot: systemd starts the enabled unit on what current names, no deployer involved
    served = get(h)[1]
    restart_host(h)
    booted = main_pid(sb)
    assert booted != 0 and get(h) == (200, served)
    assert served == f"sample v4 {git(repo, 'rev-parse', '--short=7', 'HEAD')}\n"
    assert worker_dirs(sb, h) == {"/srv/app/releases/4"}
    assert sb.read(0, "cat /srv/app/shared/tmp/pids/gunicorn.pid")[1].strip() == str(booted)


# --- django: the same unit, a real migration once per deploy, static files from current ---------


def migrations_applied(sb) -> list[str]:
    """The orders app's migrations recorded in the Django project's database on the host."""
    script = f"""import sqlite3
q = "select name from django_migrations where app = 'orders' order by id"
print(*(name for name, in sqlite3.connect("{DB}").execute(q)))"""
    code, out = sb.read(0, f"python3 -c {shlex.quote(script)}")
    assert code == 0, out
    return out.split()


def test_django_after_setup_under_traffic(systemd_sandbox, tmp_path):
    """A real Django project (Debian's Django): v2 adds a migration that runs once, before the
    switch, as deploy; its unit is python_wsgi's, so the same reloads; /static/ comes from the
    live release."""
    repo = make_repo(tmp_path / "shop", django_shop.PROJECT)
    sb = set_up(systemd_sandbox, repo, "django")
    (h,) = sb.hosts
    assert sb.read(0, f"cat {UNIT}") == (0, python_wsgi.systemd_unit("sample", "/srv/app", "deploy"))
    deploy_ok(sb)
    assert get(h) == (200, f"sample v1 {git(repo, 'rev-parse', '--short=7', 'HEAD')} orders=0\n")
    assert get(h, "/static/site.css") == (200, "/* v1 */\n") and migrations_applied(sb) == ["0001_initial"]
    assert sb.read(0, f"stat -c %U {DB}") == (0, "deploy\n")

    summary = under_traffic(
        sb,
        repo,
        [
            ("v2", ["deploy"], 0, django_shop.V2),  # its workers read the new column: migrated first
            ("rollback", ["rollback", "--ignore-migrations"], 0, None),
            ("v3: fails verify, put back", ["deploy"], 1, {"VERSION": "v3\n", "UNHEALTHY": "database down\n"}),
        ],
    )
    assert {"v1", "v2"} <= set(summary["versions"][h.name]), summary
    assert current(sb, h) == "releases/1" and version(h) == "v1"  # v1's code on the migrated table
    assert get(h, "/static/site.css") == (200, "/* v1 */\n")
    assert migrations_applied(sb) == ["0001_initial", "0002_order_note"]
    assert (sudo_calls(sb, "reload"), sudo_calls(sb, "start")) == (4, 1)
    # migrate ran on each deploy, in its release, before the switch
    code, out = sb.read(0, "ls /srv/app/releases/*/.deployer/migrated")
    assert out.split() == [f"/srv/app/releases/{n}/.deployer/migrated" for n in (1, 2, 3)], out


# --- the deploy user's reach, and files changed by hand -------------------------------------------

# World-writable sticky directories every user may write to (/tmp and the X11 socket dirs in it).
TEMP_DIRS = {"/tmp", "/tmp/.X11-unix", "/tmp/.ICE-unix", "/tmp/.XIM-unix", "/tmp/.font-unix", "/var/tmp", "/run/lock"}

WRITABLE = (
    "find / \\( -path /proc -o -path /sys -o -path /dev -o -path /srv/app -o -path /home/deploy \\) -prune "
    "-o \\( -type f -o -type d \\) -writable -print 2>/dev/null"
)


def test_deploy_user_is_confined_and_a_unit_changed_by_hand_is_reported(systemd_sandbox, tmp_path):
    repo = sample_repo(tmp_path, "v1")
    sb = set_up(systemd_sandbox, repo, "python_wsgi")
    (h,) = sb.hosts
    deploy_ok(sb)
    master = main_pid(sb)
    code, out = sb.exec(0, "useradd -m -s /bin/sh other && sha256sum /etc/passwd /etc/shadow")
    assert code == 0, out

    # as deploy over the deployer's own connection: nothing outside deploy_to and its home
    tries = [
        "touch /etc/probe",
        "touch /usr/local/bin/probe",
        "mkdir /srv/other",
        "touch /srv/probe",
        "touch /root/probe",
        "touch /home/other/probe",
        "touch /var/log/probe",
        f"echo '# by hand' >> {UNIT}",
        f"echo '# by hand' >> {SITE}",
        "touch /etc/sudoers.d/probe",
        "touch /etc/systemd/system/probe.service",
        "ln -s /srv/app/current /etc/nginx/sites-enabled/probe",
    ]
    answers = run(sb, 0, *tries, f"({WRITABLE}) | sort", "touch /srv/app/probe /home/deploy/probe")
    *refused, (code, writable, _), allowed = answers
    assert [(t, a[0] != 0) for t, a in zip(tries, refused, strict=True)] == [(t, True) for t in tries], refused
    assert code == 0 and set(writable.split()) <= TEMP_DIRS, writable
    assert allowed[0] == 0, allowed
    assert sb.read(0, "sha256sum /etc/passwd /etc/shadow") == (0, out)

    # sudo: exactly the rule, nothing else
    (code, listed, _), *others = run(
        sb,
        0,
        "sudo -n -l",
        "sudo -n id",
        "sudo -n sh -c id",
        "sudo -n systemctl stop sample.service",
        "sudo -n systemctl daemon-reload",
        "sudo -n systemctl edit sample.service",
        "sudo -n systemctl reload sample.service nginx.service",
        "sudo -n systemctl start nginx.service",
        "sudo -n systemctl reload nginx.service",
        "sudo -n -u other true",
        "sudo -n -e /etc/systemd/system/sample.service",
        "sudo -n /usr/sbin/nginx -s stop",
    )
    assert code == 0, listed
    rules = listed.split("may run the following commands on")[1].split(":", 1)[1]
    assert " ".join(rules.split()) == "(root) NOPASSWD: " + ", ".join(
        plan.sudo_commands("sample", unit=True, lb=False)
    ), listed
    assert [a[0] for a in others] == [1] * len(others), others
    assert main_pid(sb) == master

    # the deploy still works, through the rule
    commit(repo, "v2", {"VERSION": "v2\n"})
    deploy_ok(sb)
    assert version(h) == "v2" and main_pid(sb) == master
    proc = cli(sb, "check")
    assert proc.returncode == 0, proc.stdout + proc.stderr

    # the unit changed by hand (root): check names it; a deploy warns and leaves it as it is
    code, out = sb.exec(
        0, f"sed -i 's/^Restart=on-failure$/Restart=always/' {UNIT} && systemctl daemon-reload && sha256sum {UNIT}"
    )
    assert code == 0 and "Restart=always" in sb.read(0, f"cat {UNIT}")[1], out
    proc = cli(sb, "check")
    assert proc.returncode == 1
    drift = f"unit {UNIT} differs from what setup writes (changed by hand?)"
    assert proc.stderr.splitlines() == [f"error: check failed: host-1: {drift}"]
    commit(repo, "v3", {"VERSION": "v3\n"})
    shown = deploy_ok(sb)
    assert shown.count(f"{drift}: left as it is") == 1, shown
    assert sb.read(0, f"sha256sum {UNIT}") == (0, out) and version(h) == "v3"

    # the site too, by its mode alone (the deploy user can no longer read it)
    sb.exec(0, f"chmod 600 {SITE}")
    (host,) = document(cli(sb, "check", "--json"), "check", "failed")["hosts"]
    assert host["setup_drift"] == [UNIT, SITE]
    # status shows both too, and exits 0: it reports, check judges
    proc = cli(sb, "status")
    assert proc.returncode == 0 and "setup drift" in proc.stdout, proc.stdout + proc.stderr
    assert f"{UNIT}, {SITE}" in proc.stdout, proc.stdout
    (host,) = document(cli(sb, "status", "--json"), "status", "ok")["hosts"]
    assert host["setup_drift"] == [UNIT, SITE]

    # setup puts both back; check is green again
    proc = setup_cli(sb)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [
        f"host-1: file {UNIT}",
        "host-1: enable sample.service",
        f"host-1: file {SITE}",
        "host-1: reload nginx.service",
    ]
    proc = cli(sb, "check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = cli(sb, "status")
    assert proc.returncode == 0 and "setup drift" not in proc.stdout, proc.stdout + proc.stderr
    (host,) = document(cli(sb, "status", "--json"), "status", "ok")["hosts"]
    assert host["setup_drift"] == []
