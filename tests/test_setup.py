"""`deployer setup`: from a bare systemd host to a first deploy, run once as root; what it
writes (rendered by plan/setup.py, checked here string for string), that a second run changes no
byte, and the hosts and rules it refuses."""

from __future__ import annotations

import hashlib
import json

import pytest
import toml
from helpers import REPO, cli, git
from test_json_contract import document
from test_recipes import commit, deploy_ok, get, sample_repo, web_hosts
from test_systemd_hosts import run

from deployer.config import load as config
from deployer.errors import ConfigError
from deployer.plan import setup as plan
from deployer.recipes import python_wsgi
from deployer.remote import state as host_state

# --- rendering (pure) ----------------------------------------------------------------------------


def test_sudoers_names_exactly_the_commands():
    assert plan.sudo_commands("shop", unit=True, lb=False) == (
        "/usr/bin/systemctl start shop.service",
        "/usr/bin/systemctl reload shop.service",
        "/usr/bin/systemctl restart shop.service",
    )
    assert plan.sudo_commands("shop", unit=False, lb=True) == (
        "/usr/sbin/nginx -t",
        "/usr/bin/systemctl reload nginx.service",
    )
    assert plan.sudoers("shop", "deploy", plan.sudo_commands("shop", unit=True, lb=True)) == (
        "# Written by `deployer setup` for shop: deploy may run exactly these commands as root.\n"
        "# Changes here are overwritten by the next setup; remove the file to take the rule away.\n"
        "deploy ALL=(root) NOPASSWD: /usr/bin/systemctl start shop.service, /usr/bin/systemctl reload shop.service, "
        "/usr/bin/systemctl restart shop.service, /usr/sbin/nginx -t, /usr/bin/systemctl reload nginx.service\n"
    )
    # sudo skips a drop-in whose name holds a dot
    assert plan.sudoers_path("shop") == "/etc/sudoers.d/deployer-shop"
    assert plan.sudoers_path("my.shop") == "/etc/sudoers.d/deployer-my_shop"


def test_the_docs_show_the_rule_and_the_unit_setup_writes():
    """docs/setup.md shows the sudoers file and the unit in full, docs/recipes.md the unit: what
    plan/setup.py writes (and the systemd tests run), not a copy that drifts from it."""
    guide = (REPO / "docs" / "setup.md").read_text()
    rule = plan.sudoers("shop", "deploy", plan.sudo_commands("shop", unit=True, lb=False))
    assert f"```\n{rule}```\n" in guide
    unit = python_wsgi.systemd_unit("shop", "/srv/shop", "deploy")
    assert f"```ini\n{unit}```\n" in guide
    assert f"```ini\n{unit}```\n" in (REPO / "docs" / "recipes.md").read_text()
    lb = plan.sudo_rule("deploy", plan.sudo_commands("shop", unit=True, lb=True))
    shown = " ".join(guide.split("the line goes on with `", 1)[1].split("`", 1)[0].split())
    assert lb == plan.sudo_rule("deploy", plan.sudo_commands("shop", unit=True, lb=False)) + shown


def test_plan_per_recipe_and_role():
    web = plan.plan("shop", "python_wsgi", "/srv/shop", ("log", "tmp/pids"), "deploy", ("web",), create_user=True)
    assert web.unit == plan.File(
        "/etc/systemd/system/shop.service", python_wsgi.systemd_unit("shop", "/srv/shop", "deploy"), "644"
    )
    assert web.site == plan.File("/etc/nginx/sites-available/shop", python_wsgi.nginx_site("/srv/shop"), "644")
    assert web.site_link == "/etc/nginx/sites-enabled/shop"
    assert web.sudoers is not None and web.sudoers.mode == "440"
    assert "nginx" not in web.sudoers.content
    assert web.dirs == (
        "/srv/shop",
        "/srv/shop/releases",
        "/srv/shop/shared",
        "/srv/shop/shared/log",
        "/srv/shop/shared/tmp",
        "/srv/shop/shared/tmp/pids",
    )
    lb = plan.plan("shop", "python_wsgi", "/srv/shop", (), "deploy", ("lb",))
    assert (
        lb.sudoers is not None and "/usr/sbin/nginx -t, /usr/bin/systemctl reload nginx.service" in lb.sudoers.content
    )
    static = plan.plan("site", "static_site", "/srv/site", (), "deploy")
    assert static.unit is None and static.sudoers is None and static.site is not None
    bare = plan.plan("x", "", "/srv/x", (), "deploy")
    assert bare.files == () and bare.dirs == ("/srv/x", "/srv/x/releases", "/srv/x/shared")


def test_drift_is_a_present_file_setup_would_write_otherwise():
    web = plan.plan("shop", "python_wsgi", "/srv/shop", (), "deploy")
    assert web.readable == (web.unit, web.site)  # the sudoers file is root's alone: probed, not read
    assert web.unit is not None and web.site is not None
    digest = hashlib.sha256(web.unit.content.encode()).hexdigest()
    assert plan.expected(web.unit) == f"{digest} 644:root:root"
    same = {web.unit.path: plan.expected(web.unit)}
    assert plan.drift(web.readable, same) == ()  # the site is not there: setup has not run
    for seen in (f"{'0' * 64} 644:root:root", f"{digest} 664:root:root", f"{digest} 644:deploy:root"):
        assert plan.drift(web.readable, {**same, web.site.path: seen}) == (web.site.path,)
    assert plan.drift_note(web.unit.path) == (
        "unit /etc/systemd/system/shop.service differs from what setup writes (changed by hand?)"
    )
    assert plan.drift_note(web.site.path).startswith("nginx site /etc/nginx/sites-available/shop differs")
    # what inspect.sh reports, read back
    state = host_state.parse(f"setup_file\t{digest} 644:root:root {web.unit.path}\nsetup_file\tbroken\n")
    assert state.setup_files == ((web.unit.path, f"{digest} 644:root:root"),)


@pytest.mark.parametrize("name", ["a b", "shop;id", "../etc", "a/b", "$(id)", "-x", ".x", "shop\n", "", "x" * 65])
def test_app_name_with_shell_or_path_characters_is_refused(tmp_path, name):
    text = f'[app]\nname = {json.dumps(name)}\ndeploy_to = "/srv/x"\n[stages.s]\nhosts = ["h"]\n'
    with pytest.raises(ConfigError, match=r"app\.name: expected letters, digits"):
        config.parse(text, tmp_path / "hosts.toml")
    ok = config.parse(text.replace(json.dumps(name), '"my-shop_2.0"'), tmp_path / "hosts.toml")
    assert ok.app.name == "my-shop_2.0"


# --- real systemd hosts --------------------------------------------------------------------------

WRITTEN = (
    "/etc/systemd/system/sample.service",
    "/etc/sudoers.d/deployer-sample",
    "/etc/nginx/sites-available/sample",
)


def bare(sb, index: int = 0) -> None:
    """The host as a fresh server: no deploy user, no /srv/app, no nginx site of ours."""
    code, out = sb.exec(index, "userdel -r deploy && rm -rf /srv/app && rm -f /etc/nginx/sites-enabled/app")
    assert code == 0, out


def fingerprint(sb, index: int = 0) -> str:
    """Bytes, mode, owner and mtime of everything setup may write."""
    paths = " ".join(WRITTEN)
    code, out = sb.exec(
        index,
        f"sha256sum {paths}; stat -c '%n %a %U:%G %Y.%y' {paths} /srv/app /srv/app/* /srv/app/shared/* "
        "/home/deploy/.ssh/authorized_keys /etc/nginx/sites-enabled/* "
        "/etc/systemd/system/multi-user.target.wants/sample.service",
    )
    assert code == 0, out
    return out


def setup_cli(sb, *args: str):
    return cli(sb, "setup", "--login", "root", *args)


def test_setup_a_bare_host_then_deploy_and_roll_back(systemd_sandbox, tmp_path):
    repo = sample_repo(tmp_path, "v1")
    sb = web_hosts(systemd_sandbox, repo, "python_wsgi", 1)
    (h,) = sb.hosts
    bare(sb)

    proc = setup_cli(sb, "--user", "deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [
        "host-1: user deploy",
        "host-1: dir /srv/app",
        "host-1: dir /srv/app/releases",
        "host-1: dir /srv/app/shared",
        "host-1: dir /srv/app/shared/log",
        "host-1: file /etc/sudoers.d/deployer-sample",
        "host-1: file /etc/systemd/system/sample.service",
        "host-1: enable sample.service",
        "host-1: file /etc/nginx/sites-available/sample",
        "host-1: link /etc/nginx/sites-enabled/sample",
        "host-1: reload nginx.service",
    ]
    unit = python_wsgi.systemd_unit("sample", "/srv/app", "deploy")
    assert sb.exec(0, "cat /etc/systemd/system/sample.service") == (0, unit)
    rule = plan.sudo_rule("deploy", plan.sudo_commands("sample", unit=True, lb=False))
    assert sb.exec(0, "tail -n 1 /etc/sudoers.d/deployer-sample") == (0, rule + "\n")
    assert sb.exec(0, "systemctl is-enabled sample.service; systemctl is-active sample.service")[1].split() == [
        "enabled",
        "inactive",
    ]

    # a second run: no change reported, no byte changed
    before = fingerprint(sb)
    proc = setup_cli(sb, "--user", "deploy")
    assert (proc.returncode, proc.stdout) == (0, ""), proc.stderr
    assert fingerprint(sb) == before

    # the deploy user (its key: root's) deploys; the first deploy starts the unit through sudo
    deploy_ok(sb)
    status = sb.exec(
        0,
        "systemctl show -p ActiveState --value sample; systemctl show -p MainPID --value sample; "
        "cat /srv/app/shared/tmp/pids/gunicorn.pid",
    )
    active, master, pidfile = status[1].split()
    assert active == "active" and master == pidfile
    assert get(h)[1].split()[1] == "v1"
    commit(repo, "v2", {"VERSION": "v2\n"})
    deploy_ok(sb)  # a reload through systemd: same master
    assert get(h)[1].split()[1] == "v2"
    assert sb.exec(0, "systemctl show -p MainPID --value sample")[1].strip() == master
    proc = cli(sb, "rollback")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert get(h) == (200, f"sample v1 {git(repo, 'rev-parse', '--short=7', 'HEAD~1')}\n")
    code, out = sb.exec(
        0, "journalctl -q --no-pager _COMM=sudo | grep -c 'COMMAND=/usr/bin/systemctl reload sample.service'"
    )
    assert int(out.strip() or 0) == 2, out  # the deploy of v2 and the rollback

    # the rule allows exactly that: anything else through sudo is refused for deploy
    answers = run(
        sb,
        0,
        "sudo -n systemctl reload sample.service",
        "sudo -n systemctl stop sample.service",
        "sudo -n id",
        "sudo -n systemctl reload nginx.service",
    )
    assert [code for code, _, _ in answers] == [0, 1, 1, 1], answers
    assert sb.exec(0, "systemctl is-active sample.service") == (0, "active\n")


def test_dry_run_shows_the_files_and_writes_nothing(systemd_sandbox, tmp_path):
    sb = systemd_sandbox(1, app={"recipe": "python_wsgi"})
    bare(sb)
    before = sb.exec(0, "find /etc /srv /home -newer /etc/hostname -print | sort")
    proc = setup_cli(sb, "--user", "deploy", "--dry-run")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    unit = python_wsgi.systemd_unit("sample", "/srv/app", "deploy")
    assert f"--- /etc/systemd/system/sample.service (mode 644, owner root)\n{unit}" in proc.stdout
    assert "--- /etc/sudoers.d/deployer-sample (mode 440, owner root)\n" in proc.stdout
    lines = proc.stdout.splitlines()
    assert "host-1: would user deploy" in lines and "host-1: would file /etc/systemd/system/sample.service" in lines
    assert "host-1: would unlink /etc/nginx/sites-enabled/default" in lines  # Debian's own site
    assert sb.exec(0, "find /etc /srv /home -newer /etc/hostname -print | sort") == before
    assert sb.exec(0, "id deploy")[0] == 1 and sb.exec(0, "test -e /srv/app")[0] == 1

    # JSON: one document, each host's changes
    proc = setup_cli(sb, "--user", "deploy", "--json")
    doc = document(proc, "setup", "ok")
    [host] = doc["hosts"]
    assert host["result"] == "ok" and {"kind": "enable", "target": "sample.service"} in host["changed"]
    doc = document(setup_cli(sb, "--user", "deploy", "--json"), "setup", "ok")
    assert doc["hosts"][0]["changed"] == []


def test_a_host_without_systemd_is_refused_and_nothing_is_written(sandbox, systemd_sandbox):
    plain = sandbox(1, app={"recipe": "python_wsgi"})
    proc = cli(plain, "setup")  # root cannot log in there: as deploy
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "error: setup failed on host-1: no systemd on this host (/run/systemd/system is missing) "
        "(nothing written on any host)"
    ]
    assert (
        plain.exec(0, "ls /etc/systemd/system/sample.service /etc/sudoers.d/deployer-sample 2>&1 | grep -c 'No such'")[
            1
        ]
        == "2\n"
    )

    # two hosts, one of them cannot take it: the other is not touched either
    sb = systemd_sandbox(2, app={"recipe": "python_wsgi"})
    sb.exec(1, "systemctl mask --now nginx.service && rm /usr/sbin/nginx")
    proc = setup_cli(sb)
    assert proc.returncode == 2, proc.stderr
    assert "host-2: no /usr/sbin/nginx: install nginx" in proc.stderr
    assert sb.exec(0, "test -e /etc/systemd/system/sample.service")[0] == 1


def test_a_rule_visudo_rejects_is_never_installed(systemd_sandbox):
    sb = systemd_sandbox(1, app={"recipe": "python_wsgi"})
    # a visudo that rejects everything, first in root's PATH
    fake = '#!/bin/sh\necho "$2: syntax error near line 3" >&2\nexit 1\n'
    code, out = sb.exec(0, f"printf '%s' '{fake}' > /usr/local/sbin/visudo && chmod 755 /usr/local/sbin/visudo")
    assert code == 0, out
    proc = setup_cli(sb)
    assert proc.returncode == 2
    assert "visudo rejects the sudo rule" in proc.stderr and "syntax error near line 3" in proc.stderr
    code, out = sb.exec(0, "ls -A /etc/sudoers.d; test -e /etc/systemd/system/sample.service; echo $?")
    assert out.split() == ["README", "1"], out  # no drop-in, no temp file, no unit


def test_setup_through_sudo_and_check_names_a_missing_rule(systemd_sandbox, tmp_path):
    sb = systemd_sandbox(1, app={"recipe": "python_wsgi"})
    # deploy may not sudo: setup as deploy is refused in one line
    proc = cli(sb, "setup")
    assert proc.returncode == 2
    assert "this login may not run sudo without a password (log in as root: --login root)" in proc.stderr
    # an admin who may sudo without a password sets it up for deploy
    code, out = sb.exec(
        0,
        "useradd -m -s /bin/sh admin && install -d -o admin -m 700 /home/admin/.ssh && "
        "install -o admin -m 600 /root/.ssh/authorized_keys /home/admin/.ssh/ && "
        "echo 'admin ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/admin && chmod 440 /etc/sudoers.d/admin",
    )
    assert code == 0, out
    proc = cli(sb, "setup", "--login", "admin")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "host-1: file /etc/sudoers.d/deployer-sample" in proc.stdout.splitlines()
    proc = cli(sb, "check")
    assert proc.returncode == 0, proc.stdout + proc.stderr

    sb.exec(0, "rm /etc/sudoers.d/deployer-sample")
    proc = cli(sb, "check")
    assert proc.returncode == 1
    rule = plan.sudo_rule("deploy", plan.sudo_commands("sample", unit=True, lb=False))
    assert proc.stderr.splitlines() == [
        f"error: check failed: host-1: sudo rule missing: {rule} (deployer setup writes it)"
    ]


def test_an_lb_host_may_also_check_and_reload_nginx(systemd_sandbox):
    sb = systemd_sandbox(1, app={"recipe": "python_wsgi"})
    doc = toml.loads(sb.config_path.read_text())
    (host,) = doc["stages"]["sandbox"]["hosts"]
    doc["stages"]["sandbox"]["hosts"] = [{**host, "roles": ["web", "lb"]} if isinstance(host, dict) else host]
    sb.config_path.write_text(toml.dumps(doc))
    proc = setup_cli(sb)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rule = plan.sudo_rule("deploy", plan.sudo_commands("sample", unit=True, lb=True))
    assert sb.exec(0, "tail -n 1 /etc/sudoers.d/deployer-sample") == (0, rule + "\n")
    nginx = sb.exec(0, "systemctl show -p MainPID --value nginx")[1]
    answers = run(
        sb,
        0,
        "sudo -n /usr/sbin/nginx -t",
        "sudo -n systemctl reload nginx.service",
        "sudo -n systemctl stop nginx.service",
        "sudo -n /usr/sbin/nginx -s stop",
    )
    assert [code for code, _, _ in answers] == [0, 0, 1, 1], answers
    assert sb.exec(0, "systemctl show -p MainPID --value nginx") == (0, nginx)
    assert cli(sb, "check").returncode == 0
