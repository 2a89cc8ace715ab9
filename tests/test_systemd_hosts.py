"""Production-shaped sandbox hosts: systemd is PID 1 and runs sshd and nginx, the deploy user is not
root and has no sudo rule, and a host can be rebooted (``restart_host``) keeping its address and
host key."""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
import sys

import toml
from helpers import cli, cli_env, git, host_conn, wait_until
from test_recipes import commit, deploy_ok, get, reload_log, sample_repo, web_hosts, worker_dirs, workers

from deployer.recipes import python_wsgi
from deployer.sandbox import hosts as sandbox_mod
from deployer.sandbox import image as image_mod
from deployer.sandbox import instance
from deployer.sandbox.hosts import restart_host


def run(sb, index: int, *commands: str, **ssh_changes) -> list[tuple[int, str, str]]:
    """Each command over one pinned connection: (exit code, stdout, stderr) per command."""
    conn = host_conn(sb, index, **ssh_changes)
    try:
        return [(r.exit_code, r.stdout, r.stderr) for r in map(conn.run, commands)]
    finally:
        conn.close()


# --- without containers ------------------------------------------------------


def test_flavours_are_two_definitions_of_one_builder():
    base, systemd = image_mod.BASE, image_mod.SYSTEMD
    assert base.tag().startswith("deployer-sandbox:") and systemd.tag().startswith("deployer-sandbox-systemd:")
    assert set(base.packages) < set(systemd.packages) and {"systemd", "systemd-sysv", "dbus"} <= set(systemd.packages)
    assert systemd.changes[0] == 'CMD ["/sbin/init"]'
    # each tag hashes its own definition only
    changed = dataclasses.replace(systemd, setup=systemd.setup + "true\n")
    assert changed.tag() != systemd.tag() and base.tag() == image_mod.image_tag()
    assert list(image_mod.FLAVOURS.values()) == [base, systemd]  # what scripts/setup builds


def test_systemd_run_options_merge_with_the_callers():
    kwargs = sandbox_mod._systemd_kwargs({"tmpfs": {"/srv": "size=1m"}, "environment": {"X": "1"}, "mem_limit": "1g"})
    assert kwargs["tmpfs"] == {"/run": "", "/run/lock": "", "/srv": "size=1m"}
    assert kwargs["environment"] == {"container": "docker", "X": "1"}
    assert kwargs["volumes"] == {"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "ro"}}
    assert kwargs["stop_signal"] == "SIGRTMIN+3" and kwargs["mem_limit"] == "1g"
    assert "privileged" not in kwargs
    assert sandbox_mod._fixed_port() in sandbox_mod.FIXED_PORTS


# --- real containers ---------------------------------------------------------


def test_systemd_host_boots_runs_services_and_logs_in_as_deploy(systemd_sandbox):
    sb = systemd_sandbox(1)
    (h,) = sb.hosts
    assert h.systemd and h.port in sandbox_mod.FIXED_PORTS
    assert sb.exec(0, "systemctl is-system-running") == (0, "running\n")
    assert sb.exec(0, "ps -o comm= -p 1") == (0, "systemd\n")
    code, out = sb.exec(0, "systemctl is-active sandbox-firstboot ssh nginx")
    assert (code, out.split()) == (0, ["active", "active", "active"])
    # a service can be started, reloaded (same main process) and stopped
    unit = "[Service]\nExecStart=/bin/sleep infinity\nExecReload=/usr/bin/touch /run/probe.reloaded\n"
    code, out = sb.exec(
        0,
        f"printf '%s' {shlex.quote(unit)} > /etc/systemd/system/probe.service && systemctl daemon-reload && "
        "systemctl start probe && systemctl show -p MainPID --value probe",
    )
    assert code == 0, out
    pid = out.strip()
    code, out = sb.exec(0, "systemctl reload probe && systemctl show -p MainPID --value probe && ls /run/probe.*")
    assert (code, out.split()) == (0, [pid, "/run/probe.reloaded"])
    assert sb.exec(0, "systemctl stop probe && systemctl is-active probe")[1] == "inactive\n"
    # nginx reloads under systemd, keeping its master
    nginx = sb.exec(0, "systemctl show -p MainPID --value nginx")[1]
    assert sb.exec(0, "systemctl reload nginx && systemctl show -p MainPID --value nginx") == (0, nginx)

    # sshd answers as deploy, pinned (strict known_hosts); deploy is no root and has no sudo
    who, uid, sudo, home = run(sb, 0, "id -un", "id -u", "sudo -n true", "stat -c %U /srv/app")
    assert who == (0, "deploy\n", "") and uid[0] == 0 and int(uid[1]) != 0
    assert sudo[0] != 0 and home == (0, "deploy\n", "")
    assert run(sb, 0, "id -u", user="root") == [(0, "0\n", "")]  # root logs in with the key
    assert sb.known_hosts_path.read_text().strip().endswith(" " + sandbox_mod.served_host_key(h))
    assert toml.loads(sb.config_path.read_text())["ssh"]["user"] == "deploy"


def test_first_deploy_as_deploy_with_the_python_wsgi_recipe(systemd_sandbox, tmp_path):
    repo = sample_repo(tmp_path, "v1")
    sb = web_hosts(systemd_sandbox, repo, "python_wsgi", 1)  # the nginx site put in place as root
    (h,) = sb.hosts
    out = deploy_ok(sb)
    assert "verify" in out and "HTTP 200" in out
    assert get(h) == (200, f"sample v1 {git(repo, 'rev-parse', '--short=7', 'HEAD')}\n")
    code, out = sb.exec(
        0, "stat -c %U /srv/app/current/app.py; ps -o user= -p $(cat /srv/app/shared/tmp/pids/gunicorn.pid)"
    )
    assert (code, out.split()) == (0, ["deploy", "deploy"])


def test_restart_keeps_address_and_host_key(systemd_sandbox):
    sb = systemd_sandbox(1)
    (h,) = sb.hosts
    pinned = sb.known_hosts_path.read_text()
    sb.exec(0, "touch /run/before-reboot")
    booted = sb.exec(0, "systemctl show -p ActiveEnterTimestampMonotonic --value ssh")[1]
    after = restart_host(h)
    assert (after.port, after.ports) == (h.port, h.ports)
    assert sb.exec(0, "test -e /run/before-reboot; echo $?")[1] == "1\n"  # /run is new: a reboot
    assert sb.exec(0, "systemctl is-system-running") == (0, "running\n")
    assert sb.exec(0, "systemctl show -p ActiveEnterTimestampMonotonic --value ssh")[1] != booted
    # the known_hosts written at the first boot still pins what sshd serves
    assert sandbox_mod.write_known_hosts(sb.known_hosts_path, [after]).read_text() == pinned
    assert run(sb, 0, "id -un") == [(0, "deploy\n", "")]
    proc = cli(sb, "check")  # the deployer itself, strict known_hosts
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_sandbox_up_systemd_and_down(systemd_image, tmp_path):
    """`deployer sandbox.up --systemd`: systemd hosts and a config logging in as deploy."""
    workdir = tmp_path / ".sandbox"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "deployer", "sandbox.up", "--systemd", "--hosts", "1"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=180,
            env=cli_env(),
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        (h,) = instance.running(workdir)
        assert h.systemd and h.http_port
        assert sandbox_mod.exec_root(h, "systemctl is-system-running") == (0, "running\n")
        doc = toml.loads((tmp_path / "hosts.sandbox.toml").read_text())
        assert doc["ssh"]["user"] == "deploy" and doc["stages"]["sandbox"]["hosts"][0]["port"] == h.port
        assert (workdir / "known_hosts").read_text().strip().endswith(" " + sandbox_mod.served_host_key(h))
        assert instance.down(workdir) == 1 and instance.running(workdir) == []
    finally:
        instance.down(workdir)


# --- the recipe's systemd unit under a real systemd ------------------------------------------------

SUDOERS = "deploy ALL=(root) NOPASSWD: {cmds}\n"


def install_unit(sb, name: str = "sample") -> None:
    """As root, what the docs tell an operator: python_wsgi's unit (enabled), a sudoers rule letting
    deploy start, reload and restart it, and shared/bin/start-gunicorn for the first deploy."""
    unit = python_wsgi.systemd_unit(name=name, deploy_to="/srv/app", user="deploy")
    cmds = ", ".join(f"/usr/bin/systemctl {verb} {name}.service" for verb in ("start", "reload", "restart"))
    start = f"#!/bin/sh\nexec sudo -n systemctl start {name}.service\n"
    code, out = sb.exec(
        0,
        f"printf '%s' {shlex.quote(unit)} > /etc/systemd/system/{name}.service && systemctl daemon-reload && "
        f"systemctl enable -q {name} && printf '%s' {shlex.quote(SUDOERS.format(cmds=cmds))} > /etc/sudoers.d/{name} "
        f"&& chmod 0440 /etc/sudoers.d/{name} && visudo -c -q && "
        f"install -d -o deploy -g deploy /srv/app/shared /srv/app/shared/bin && "
        f"printf '%s' {shlex.quote(start)} > /srv/app/shared/bin/start-gunicorn && "
        "chown deploy:deploy /srv/app/shared/bin/start-gunicorn && chmod 0755 /srv/app/shared/bin/start-gunicorn",
    )
    assert code == 0, out


def test_python_wsgi_unit_under_systemd(systemd_sandbox, tmp_path):
    """The recipe's unit as docs/recipes.md installs it: the first deploy starts it through sudo
    (shared/bin/start-gunicorn), later deploys and rollbacks reload the master systemd watches, the
    deploy user's sudo rule reloads and restarts it, and it comes back after a reboot."""
    repo = sample_repo(tmp_path, "v1")
    sb = web_hosts(systemd_sandbox, repo, "python_wsgi", 1)
    (h,) = sb.hosts
    install_unit(sb)

    def state() -> tuple[str, int, int]:
        """(systemd's ActiveState, its MainPID, the recipe's pid file)."""
        code, out = sb.exec(
            0, "systemctl show -p ActiveState,MainPID sample; cat /srv/app/shared/tmp/pids/gunicorn.pid"
        )
        *props, pidfile = out.split()
        shown = dict(prop.split("=", 1) for prop in props)
        return shown["ActiveState"], int(shown["MainPID"]), int(pidfile)

    def version() -> str:
        return get(h)[1].split()[1]

    deploy_ok(sb)  # Type=notify: Debian's gunicorn 20.1 tells systemd it is ready
    active, master, pidfile = state()
    assert active == "active" and master == pidfile and version() == "v1"
    assert reload_log(sb, h)[-1][2].startswith(f"started master {master}:")

    commit(repo, "v2", {"VERSION": "v2\n"})
    deploy_ok(sb)  # the recipe signals the master itself: systemd keeps watching the same one
    assert state() == ("active", master, master) and version() == "v2"
    assert worker_dirs(sb, h) == {"/srv/app/releases/2"}

    proc = cli(sb, "rollback")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert state() == ("active", master, master) and version() == "v1"

    before = workers(sb, h, master)
    # the sudo rule: exactly these command lines, nothing else (sudo compares arguments literally)
    reload, unsuffixed, stop = run(
        sb,
        0,
        "sudo -n systemctl reload sample.service",
        "sudo -n systemctl reload sample",
        "sudo -n systemctl stop sample.service",
    )
    assert reload[0] == 0 and unsuffixed[0] != 0 and stop[0] != 0
    assert state() == ("active", master, master)
    # ExecReload is the same HUP: the master replaces its workers (a reload returns before that)
    wait_until(
        lambda: (now := workers(sb, h, master)) and not now.keys() & before.keys(), 30, "new workers after the reload"
    )
    ((code, _, err),) = run(sb, 0, "sudo -n systemctl restart sample.service")
    assert code == 0, err
    active, new_master, pidfile = state()
    assert active == "active" and new_master == pidfile != master and version() == "v1"

    # a reboot: systemd starts the enabled unit, serving what current points at
    restart_host(h)
    active, booted, pidfile = state()
    assert active == "active" and booted == pidfile and version() == "v1"
    assert worker_dirs(sb, h) == {"/srv/app/releases/1"}
