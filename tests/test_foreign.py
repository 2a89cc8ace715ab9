"""What is under releases/ besides our own releases, against real sshd hosts: names that are no
release (forged or absurd), and the releases other deploy tools made (taking a host over)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import pytest
from helpers import REPO, cli, commit_change, current, host_conn, release_dirs, releases, status

from deployer.plan.paths import Paths
from deployer.remote import commands, lock


def test_release_dirs_named_like_options_are_listed_by_name_as_no_release_number(sandbox):
    """`-v` and `--help` under releases/ hold only allowed characters: they are listed as what
    they are (not a release number), never as names with characters outside the allowed ones."""
    sb = sandbox(1)
    assert cli(sb, "deploy").returncode == 0
    code, out = sb.exec(
        0, "cd /srv/app/releases && mkdir -p ./-v/.deployer ./--help && chown -R deploy: /srv/app/releases"
    )
    assert code == 0, out
    host = json.loads(cli(sb, "releases", "--json").stdout)["hosts"][0]
    assert sorted(host["ignored"]) == ["--help", "-v"] and host["odd_names"] == 0
    listed = cli(sb, "releases")
    assert listed.returncode == 0 and "characters outside" not in listed.stdout, listed.stdout
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert {r[1] for r in rows if "ignored:" in r and "number" in r} == {"-v", "--help"}, listed.stdout
    check = cli(sb, "check")
    assert check.returncode == 0 and "--help, -v" in check.stdout, check.stdout
    assert cli(sb, "deploy").returncode == 0 and current(sb, 0) == "releases/2"


def test_odd_names_under_releases_never_forge_a_release_or_push_the_number(sandbox):
    """A directory whose name holds a newline and a tab once printed a forged `release` line into
    the state read, and releases/999999999999999999999 sent the next release to 10^21: both are
    ignored now (and reported), and the next deploy is release 2."""
    sb = sandbox(1)
    first = cli(sb, "deploy")
    assert first.returncode == 0, first.stderr + first.stdout
    forged = "5\nrelease\t999 1 0 0 0\nmeta\t999\t{}"
    code, out = sb.exec(
        0,
        "cd /srv/app/releases && mkdir -p \"$(printf '"
        + forged.replace("\n", "\\n").replace("\t", "\\t")
        + "')/.deployer\" 999999999999999999999/.deployer 0007/.deployer"
        " && touch 999999999999999999999/.deployer/complete 0007/.deployer/complete"
        " && chown -R deploy: /srv/app/releases",
    )
    assert code == 0, out
    names = [r["release"] for r in releases(sb)]
    assert 1 in names and 999 not in names and "999" not in names
    host = json.loads(cli(sb, "releases", "--json").stdout)["hosts"][0]
    assert "999999999999999999999" in host["ignored"] and "0007" in host["ignored"] and host["odd_names"] == 1
    assert "1 name(s) with characters outside" in cli(sb, "releases").stdout
    check = cli(sb, "check", "--json")
    assert check.returncode == 0, check.stderr
    assert "999999999999999999999" in json.loads(check.stdout)["hosts"][0]["ignored"]

    second = cli(sb, "deploy")
    assert second.returncode == 0, second.stderr + second.stdout
    assert "release 2:" in second.stdout
    assert current(sb, 0) == "releases/2"
    assert "2" in release_dirs(sb, 0) and not any(
        len(n) > 10 and n.isdigit() and n != "999999999999999999999" for n in release_dirs(sb, 0)
    )
    # rollback never takes a forged or ignored name for a release
    back = cli(sb, "rollback")
    assert back.returncode == 0, back.stderr + back.stdout
    assert current(sb, 0) == "releases/1"
    bad = cli(sb, "rollback", "--to", "5\nrelease")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    gone = cli(sb, "rollback", "--to", "999999999999999999999")
    assert gone.returncode == 1 and "does not exist" in gone.stdout + gone.stderr


def test_a_release_linking_out_of_deploy_to_is_never_switched_to(sandbox, app_repo):
    """releases/99 (our marks: complete, rolled back) and releases/theirs (another tool's look),
    each a symlink to a directory outside deploy_to: `rollback --to` refuses each in one line and
    nothing switches; the host's switch refuses one too (planted after the read); `current`
    pointing at one fails `check`, naming it."""
    sb = sandbox(1)
    for n in (1, 2):
        commit_change(app_repo, "app.py", f"VERSION = {n}\n")
        assert cli(sb, "deploy").returncode == 0
    code, out = sb.exec(
        0,
        "mkdir -p /tmp/elsewhere/.deployer /tmp/theirs && touch /tmp/elsewhere/.deployer/complete"
        " /tmp/elsewhere/.deployer/rolled_back && chown -R deploy: /tmp/elsewhere /tmp/theirs"
        " && cd /srv/app/releases && ln -s /tmp/elsewhere 99 && ln -s /tmp/theirs theirs && chown -h deploy: 99 theirs",
    )
    assert code == 0, out
    for name in ("99", "theirs"):
        proc = cli(sb, "rollback", "--to", name)
        said = proc.stdout + proc.stderr
        assert proc.returncode == 1 and f"releases/{name} is a symlink" in said and "Traceback" not in said, said
        assert current(sb, 0) == "releases/2"
    conn = host_conn(sb, 0)
    try:
        result = conn.run(lock.unleased(commands.switch(Paths("/srv/app"), 99, "0" * 16)))
    finally:
        conn.close()
    assert result.exit_code == commands.RELEASE_INCOMPLETE and "symlink" in result.stderr, result
    assert current(sb, 0) == "releases/2"
    assert cli(sb, "check").returncode == 0
    sb.exec(0, "cd /srv/app && ln -sfn releases/99 current")
    check = cli(sb, "check")
    assert check.returncode == 1 and "releases/99" in check.stderr and "symlink" in check.stderr, check.stderr


# --- taking over hosts that another deploy tool manages -------------------------------------

CAPFILE = """
require "capistrano/setup"
require "capistrano/deploy"
require "capistrano/scm/plugin"

# The tarball strategy: upload a .tar.gz and extract it into the new release (no repository on the host).
class TarballStrategy < Capistrano::SCM::Plugin
  def register_hooks
    after "deploy:new_release_path", "tarball:create_release"
    before "deploy:set_current_revision", "tarball:set_current_revision"
  end

  def define_tasks
    namespace :tarball do
      task :create_release do
        on release_roles(:all) do
          execute :mkdir, "-p", release_path
          upload! fetch(:tarball), "#{release_path}.tar.gz"
          execute :tar, "-xzf", "#{release_path}.tar.gz", "-C", release_path
          execute :rm, "-f", "#{release_path}.tar.gz"
        end
      end
      task :set_current_revision do
        set :current_revision, fetch(:tarball_revision)
      end
    end
  end
end
install_plugin TarballStrategy
"""

DEPLOY_RB = """
set :application, "benchapp"
set :deploy_to, "/srv/benchapp"
set :branch, "main"
set :keep_releases, 5
set :linked_dirs, %w[log]
set :linked_files, %w[config/app.env]
set :tarball, ENV.fetch("TARBALL")
set :tarball_revision, ENV.fetch("REVISION")
set :log_level, :info
"""


def _tarball(path: Path, version: str) -> Path:
    """The app as another tool would ship it: VERSION says which one is live."""
    src = path.with_suffix(".d")
    src.mkdir(parents=True)
    (src / "VERSION").write_text(version + "\n")
    (src / "app.txt").write_text(f"served by {version}\n")
    with tarfile.open(path, "w:gz") as tar:
        tar.add(src, arcname=".")
    return path


def _prepare_host(sb, deploy_to: str) -> None:
    code, out = sb.exec(
        0,
        f"mkdir -p {deploy_to}/shared/config {deploy_to}/shared/log && "
        f"echo 'SECRET_FROM_OLD_TOOL=1' > {deploy_to}/shared/config/app.env && "
        f"chown -R deploy: {deploy_to}",
    )
    assert code == 0, out


def _capistrano(sb, tmp_path: Path) -> Path:
    """A Capistrano 3 project (Debian's package) for the sandbox host: Capfile, deploy.rb, stage."""
    work = tmp_path / "capistrano"
    (work / "config" / "deploy").mkdir(parents=True, exist_ok=True)
    (work / "Capfile").write_text(CAPFILE)
    (work / "config" / "deploy.rb").write_text(DEPLOY_RB)
    host = sb.hosts[0]
    (work / "config" / "deploy" / "sandbox.rb").write_text(
        f'server "{host.host}", port: {host.port}, user: "deploy", roles: %w[app]\n'
        f'set :ssh_options, {{ keys: ["{sb.key_path}"], auth_methods: %w[publickey], '
        f'user_known_hosts_file: "{sb.known_hosts_path}", verify_host_key: :always }}\n'
    )
    return work


def _cap(work: Path, *args: str, tarball: Path | None = None, revision: str = "") -> None:
    cap = shutil.which("cap")
    assert cap, "Capistrano is not installed (scripts/setup installs Debian's capistrano)"
    env = {**os.environ, "TARBALL": str(tarball or ""), "REVISION": revision}
    proc = subprocess.run([cap, "sandbox", *args], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _capistrano_deploys(sb, tmp_path: Path, versions: list[str], first: int = 1) -> Path:
    """Run Capistrano 3 for real, one `cap sandbox deploy` per version."""
    work = _capistrano(sb, tmp_path)
    for i, version in enumerate(versions, first):
        _cap(work, "deploy", tarball=_tarball(tmp_path / f"cap-{i}.tar.gz", version), revision=f"{i:040x}")
        time.sleep(1.1)  # Capistrano names releases by the second
    return work


def _listing(sb, path: str, host: int = 0) -> str:
    return sb.exec(host, f"cd {path} && find . -printf '%p %y %s %T@ %l\\n' | sort")[1]


def _take_over(sb, deploy_to: str, old_live: str, old_version: str, foreign: list[str], ours: int) -> None:
    """check is green, deploy makes our first release, releases shows both kinds, rollback goes
    back to the release that was live (and current/VERSION is the old one again), cleanup leaves
    foreign releases alone and cleanup --foreign removes them, never the live one."""
    before = {name: _listing(sb, f"{deploy_to}/releases/{name}") for name in foreign}
    check = cli(sb, "check")
    assert check.returncode == 0, check.stdout + check.stderr

    deployed = cli(sb, "deploy")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert f"release {ours}:" in deployed.stdout
    assert current(sb, 0, deploy_to) == f"releases/{ours}"
    assert sb.exec(0, f"cat {deploy_to}/current/VERSION")[1].strip() == "ours"
    # the other tool's shared/ is used as it is
    assert sb.exec(0, f"cat {deploy_to}/current/config/app.env")[1].strip() == "SECRET_FROM_OLD_TOOL=1"

    rows = releases(sb)
    kinds = {str(r["release"]): "foreign" if r["foreign"] else "ours" for r in rows}
    assert {name: kinds.get(name) for name in foreign} == {name: "foreign" for name in foreign}
    assert kinds[str(ours)] == "ours" and [r["release"] for r in rows if r["current"]] == [ours]
    assert status(sb)[0]["current"] == ours

    back = cli(sb, "rollback")
    assert back.returncode == 0, back.stdout + back.stderr
    assert current(sb, 0, deploy_to) == f"releases/{old_live}"
    assert sb.exec(0, f"cat {deploy_to}/current/VERSION")[1].strip() == old_version
    assert (status(sb)[0]["current"], status(sb)[0]["foreign"]) == (old_live, True)
    # nothing written into a foreign release; ours is marked rolled back
    assert {name: _listing(sb, f"{deploy_to}/releases/{name}") for name in foreign} == before
    assert sb.exec(0, f"test -f {deploy_to}/releases/{ours}/.deployer/rolled_back")[0] == 0

    clean = cli(sb, "cleanup")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert set(foreign) <= set(release_dirs(sb, 0, deploy_to))
    clean = cli(sb, "cleanup", "--foreign")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert release_dirs(sb, 0, deploy_to) == sorted([old_live, str(ours)])
    assert sb.exec(0, f"cat {deploy_to}/current/VERSION")[1].strip() == old_version

    again = cli(sb, "rollback", "--to", str(ours))  # and forward again
    assert again.returncode == 0, again.stdout + again.stderr
    assert sb.exec(0, f"cat {deploy_to}/current/VERSION")[1].strip() == "ours"


@pytest.fixture
def ours_repo(app_repo):
    commit_change(app_repo, "VERSION", "ours\n")
    (app_repo / "config").mkdir(exist_ok=True)
    return app_repo


def _config(deploy_to: str) -> dict:
    return {"app": {"deploy_to": deploy_to, "shared_dirs": ["log"], "shared_files": ["config/app.env"]}}


def test_capistrano_hosts_are_taken_over_and_the_way_back_works(sandbox, ours_repo, tmp_path):
    """Two Capistrano 3 deploys (Debian's package, tarball strategy, run for real): releases named
    by UTC timestamp, an absolute current link, REVISION and revisions.log, linked_dirs/files in
    shared/. Then this tool takes the host over."""
    sb = sandbox(1, **_config("/srv/benchapp"))
    _prepare_host(sb, "/srv/benchapp")
    _capistrano_deploys(sb, tmp_path, ["cap-1", "cap-2"])
    names = release_dirs(sb, 0, "/srv/benchapp")
    assert len(names) == 2 and all(len(n) == 14 and n.isdigit() for n in names)
    assert current(sb, 0, "/srv/benchapp") == f"/srv/benchapp/releases/{names[1]}"  # absolute

    rows = {str(r["release"]): r for r in releases(sb)}
    assert rows[names[1]]["git_sha"] == f"{2:040x}" and rows[names[1]]["foreign"] is True
    _take_over(sb, "/srv/benchapp", names[1], "cap-2", names, ours=1)

    # and back to Capistrano: its next deploy goes live beside ours, which it leaves alone
    _capistrano_deploys(sb, tmp_path, ["cap-3"], first=3)
    assert sb.exec(0, "cat /srv/benchapp/current/VERSION")[1].strip() == "cap-3"
    assert "1" in release_dirs(sb, 0, "/srv/benchapp")
    check = cli(sb, "check")
    assert check.returncode == 0, check.stdout + check.stderr


def test_capistrano_way_back_is_the_release_that_was_live_not_the_newest(sandbox, ours_repo, tmp_path):
    """Three Capistrano deploys, then its own `deploy:rollback` to the first (it removes the third):
    the live release is older than another foreign one. Rolling back from our first release goes
    to the one that was live, as recorded when we replaced it, not to the newest."""
    sb = sandbox(1, **_config("/srv/benchapp"))
    _prepare_host(sb, "/srv/benchapp")
    work = _capistrano_deploys(sb, tmp_path, ["cap-1", "cap-2", "cap-3"])
    first = release_dirs(sb, 0, "/srv/benchapp")[0]
    _cap(work, "deploy:rollback", f"ROLLBACK_RELEASE={first}")
    names = release_dirs(sb, 0, "/srv/benchapp")
    assert len(names) == 2 and names[0] == first
    assert sb.exec(0, "cat /srv/benchapp/current/VERSION")[1].strip() == "cap-1"
    _take_over(sb, "/srv/benchapp", first, "cap-1", names, ours=1)


ANSISTRANO_PLAYBOOK = """
# Ansistrano's deploy steps (ansistrano.deploy, copy_unarchive strategy) as its documentation and
# tasks describe them: its roles live on GitHub/Galaxy, which this machine cannot reach.
- hosts: all
  gather_facts: false
  vars:
    ansistrano_deploy_to: /srv/ansiapp
    ansistrano_releases_path: "{{ ansistrano_deploy_to }}/releases"
    ansistrano_shared_path: "{{ ansistrano_deploy_to }}/shared"
    ansistrano_shared_paths: [log]
    ansistrano_shared_files: [config/app.env]
    ansistrano_release_version: "{{ lookup('pipe', 'date -u +%Y%m%d%H%M%SZ') }}"
  tasks:
    - name: ANSISTRANO | Fix the release version for this run
      set_fact:
        release_version: "{{ ansistrano_release_version }}"
    - name: ANSISTRANO | Ensure releases and shared folders exist
      file: {state: directory, path: "{{ item }}"}
      loop: ["{{ ansistrano_releases_path }}", "{{ ansistrano_shared_path }}"]
    - name: ANSISTRANO | Create release folder
      file: {state: directory, path: "{{ ansistrano_releases_path }}/{{ release_version }}"}
    - name: ANSISTRANO | Unarchive the code into the release
      unarchive: {src: "{{ tarball }}", dest: "{{ ansistrano_releases_path }}/{{ release_version }}"}
    - name: ANSISTRANO | Copy the revision into the REVISION file
      copy: {content: "{{ revision }}\\n", dest: "{{ ansistrano_releases_path }}/{{ release_version }}/REVISION"}
    - name: ANSISTRANO | Ensure shared paths targets are absent
      file: {state: absent, path: "{{ ansistrano_releases_path }}/{{ release_version }}/{{ item }}"}
      loop: "{{ ansistrano_shared_paths + ansistrano_shared_files }}"
    - name: ANSISTRANO | Ensure basedir shared files exists
      file: {state: directory, path: "{{ ansistrano_releases_path }}/{{ release_version }}/{{ item | dirname }}"}
      loop: "{{ ansistrano_shared_files }}"
    - name: ANSISTRANO | Create softlinks for shared paths and files
      file:
        state: link
        path: "{{ ansistrano_releases_path }}/{{ release_version }}/{{ item }}"
        src: "{{ (ansistrano_shared_path ~ '/' ~ item) | relpath((ansistrano_releases_path ~ '/' ~ release_version ~ '/' ~ item) | dirname) }}"
      loop: "{{ ansistrano_shared_paths + ansistrano_shared_files }}"
    - name: ANSISTRANO | Change softlink to new release
      file:
        state: link
        path: "{{ ansistrano_deploy_to }}/current"
        src: "./releases/{{ release_version }}"
"""


def _ansistrano_deploys(sb, tmp_path: Path, versions: list[str]) -> None:
    """ansible-core (from PyPI, installed by scripts/setup into .tools/ansible) runs Ansistrano's
    deploy steps for real, one ansible-playbook run per version."""
    playbook_bin = REPO / ".tools" / "ansible" / "bin" / "ansible-playbook"
    assert playbook_bin.exists(), "ansible-core is not installed (scripts/setup installs it into .tools/ansible)"
    work = tmp_path / "ansistrano"
    work.mkdir()
    (work / "deploy.yml").write_text(ANSISTRANO_PLAYBOOK)
    host = sb.hosts[0]
    (work / "hosts.ini").write_text(
        f"{host.name} ansible_host={host.host} ansible_port={host.port} ansible_user=deploy "
        f"ansible_ssh_private_key_file={sb.key_path} ansible_python_interpreter=/usr/bin/python3 "
        f"ansible_ssh_common_args='-o UserKnownHostsFile={sb.known_hosts_path} -o StrictHostKeyChecking=yes'\n"
    )
    sockets = tempfile.mkdtemp(prefix="ans-")  # ssh's control sockets need a short path
    env = {
        **os.environ,
        "LC_ALL": "C.UTF-8",
        "HOME": str(work),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": sockets,
        "ANSIBLE_PIPELINING": "1",
    }
    for i, version in enumerate(versions):
        tarball = _tarball(tmp_path / f"ansi-{i}.tar.gz", version)
        proc = subprocess.run(
            [
                str(playbook_bin),
                "-i",
                "hosts.ini",
                "deploy.yml",
                "-e",
                f"tarball={tarball}",
                "-e",
                f"revision={i + 1:040x}",
            ],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        time.sleep(1.1)  # release names are UTC seconds
    subprocess.run(["ssh", "-O", "exit", "-o", f"ControlPath={sockets}/%C", host.host], capture_output=True)
    shutil.rmtree(sockets, ignore_errors=True)


def test_ansistrano_hosts_are_taken_over_and_the_way_back_works(sandbox, ours_repo, tmp_path):
    """Two Ansistrano-style deploys run by ansible-core for real: releases named 20261202072912Z,
    a relative current link, REVISION, shared_paths/files linked into shared/. Ansistrano's roles
    themselves cannot be installed here (GitHub and Galaxy are out of reach), so the playbook runs
    the steps its roles document. Then this tool takes the host over."""
    sb = sandbox(1, **_config("/srv/ansiapp"))
    _prepare_host(sb, "/srv/ansiapp")
    _ansistrano_deploys(sb, tmp_path, ["ansi-1", "ansi-2"])
    names = release_dirs(sb, 0, "/srv/ansiapp")
    assert len(names) == 2 and all(n.endswith("Z") for n in names)
    assert current(sb, 0, "/srv/ansiapp") == f"./releases/{names[1]}"  # as Ansistrano's role writes it
    _take_over(sb, "/srv/ansiapp", names[1], "ansi-2", names, ours=1)


def _deployer_layout(sb, deploy_to: str, count: int, host: int = 0) -> None:
    """Deployer 7's layout as its documentation describes it (its `dep` comes from Packagist, out of
    reach here): releases/1..n, each with REVISION and its shared_dirs/shared_files linked
    (relative, `ln -nfs --relative`), .dep/releases_log (one JSON object per release),
    .dep/latest_release, current -> releases/n."""
    steps = [f"cd {deploy_to}", "mkdir -p .dep releases"]
    for n in range(1, count + 1):
        created = f"2026-11-0{n}T10:00:00+0000"
        steps += [
            f"mkdir -p releases/{n}/config && echo dep-{n} > releases/{n}/VERSION",
            f"echo {n:040x} > releases/{n}/REVISION",
            f"ln -nfs --relative {deploy_to}/shared/log releases/{n}/log",
            f"ln -nfs --relative {deploy_to}/shared/config/app.env releases/{n}/config/app.env",
            "printf '%s\\n' '{\"created_at\":\""
            + created
            + '","release_name":"'
            + str(n)
            + '","user":"deploy","target":"HEAD"}\' >> .dep/releases_log',
            f"echo {n} > .dep/latest_release",
            f"ln -nfs --relative releases/{n} current",
        ]
    steps.append(f"chown -R deploy: {deploy_to}")
    code, out = sb.exec(host, " && ".join(steps))
    assert code == 0, out


def test_a_failed_first_deploy_puts_the_foreign_release_back(sandbox, ours_repo):
    """Our first release fails after its switch (a failing after_switch hook): the host goes back
    to the release the other tool left live, which is never marked or changed."""
    sb = sandbox(
        2,
        hooks={"after_switch": [{"command": 'echo "$DEPLOY_PREVIOUS_RELEASE" > /srv/depapp/shared/prev; exit 3'}]},
        **_config("/srv/depapp"),
    )
    for i in range(2):
        sb.exec(
            i, "mkdir -p /srv/depapp/shared/config /srv/depapp/shared/log && echo x > /srv/depapp/shared/config/app.env"
        )
        _deployer_layout(sb, "/srv/depapp", 3, host=i)
    before = [_listing(sb, "/srv/depapp/releases/3", host=i) for i in range(2)]
    proc = cli(sb, "deploy")
    assert proc.returncode == 1 and "rolled back" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    for i in range(2):
        assert current(sb, i, "/srv/depapp") == "releases/3"
        assert sb.exec(i, "cat /srv/depapp/current/VERSION")[1].strip() == "dep-3"
        assert sb.exec(i, "cat /srv/depapp/shared/prev")[1].strip() == "3"
        assert sb.exec(i, "test -f /srv/depapp/releases/4/.deployer/bad")[0] == 0
        assert _listing(sb, "/srv/depapp/releases/3", host=i) == before[i]


def test_deployer_hosts_are_taken_over_and_the_way_back_works(sandbox, ours_repo):
    """Deployer's releases/1..3 carry no marker of ours: they are foreign, and our first release
    is 4 (never a directory Deployer made). Then this tool takes the host over."""
    sb = sandbox(1, **_config("/srv/depapp"))
    _prepare_host(sb, "/srv/depapp")
    _deployer_layout(sb, "/srv/depapp", 3)
    assert current(sb, 0, "/srv/depapp") == "releases/3"
    rows = {str(r["release"]): r for r in releases(sb)}
    assert rows["1"]["deployed_at"] == "2026-11-01T10:00:00Z" and rows["3"]["git_sha"] == f"{3:040x}"
    _take_over(sb, "/srv/depapp", "3", "dep-3", ["1", "2", "3"], ours=4)
