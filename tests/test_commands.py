"""Remote script builders: exact strings for the small ones, and every script run by a real
POSIX shell against a scratch directory (hostile values included) to prove quoting and behaviour."""

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from helpers import tar_gz, tar_member

from deployer.plan import setup as setup_plan
from deployer.plan.host_state import HostState
from deployer.plan.paths import Paths
from deployer.remote import commands, render, state, user_command
from deployer.remote import lock as remote_lock
from deployer.remote import ops as remote_ops
from deployer.remote import setup as remote_setup

# what a session holding the lock puts in front of a script (remote_lock.lease), for scripts run
# here without a lock: `held` always passes
UNFENCED = remote_lock.unleased("")


def sh(script: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", UNFENCED + script], input=stdin, capture_output=True, timeout=30)


def make_tarball(files: dict[str, bytes]) -> bytes:
    return tar_gz([tar_member(name, data) for name, data in files.items()])


def test_unlock_exact_string():
    paths = Paths("/srv/my app")
    assert remote_lock.unlock(paths, "abc") == (
        "set -e\numask 022\n"
        "STATE='/srv/my app/.deployer'\nLEDGER='/srv/my app/.deployer/ledger.jsonl'\n"
        "LOCK='/srv/my app/.deployer/lock'\nLOCK_TOKEN_FILE='/srv/my app/.deployer/lock/token'\nTOKEN=abc\n"
        "FORCE=''\nLOCK_INFO='/srv/my app/.deployer/lock/info'\nLEDGER_LINE=''\n"
        + render.text("lib.sh")
        + render.text("unlock.sh")
    )


def test_switch_exact_string():
    script = commands.switch(Paths("/srv/app"), 7, "tok")
    assert script == (
        "set -e\numask 022\n"
        "STATE=/srv/app/.deployer\nLEDGER=/srv/app/.deployer/ledger.jsonl\nLOCK=/srv/app/.deployer/lock\n"
        "LOCK_TOKEN_FILE=/srv/app/.deployer/lock/token\nTOKEN=tok\n"
        "CURRENT=/srv/app/current\nRELEASE=/srv/app/releases/7\nNUMBER=7\nFOREIGN=''\nTARGET=releases/7\n"
        "TMP_LINK=/srv/app/.current-tok\nMARK_STATE=''\nLEDGER_LINE=''\nUNLOCK=''\nONLY_FROM=''\n"
        + render.text("lib.sh")
        + render.text("switch.sh")
    )


def test_a_script_file_is_sent_without_its_comments_and_values_only_as_quoted_assignments():
    assert render.text("unswitch.sh") == (
        'if [ "$(readlink "$CURRENT" 2>/dev/null)" = "$TARGET" ]; then held; rm -f "$CURRENT"\n'
        "else printf 'unchanged\\t\\n'; fi\n"
    )
    values = {"CURRENT": "/a b/current", "TARGET": "it's", "LIST": ["x y", "$z"]}
    assert render.render(["unswitch.sh"], values, header="") == (
        "CURRENT='/a b/current'\nTARGET='it'\"'\"'s'\nLIST=''\"'\"'x y'\"'\"' '\"'\"'$z'\"'\"''\n"
        + render.text("unswitch.sh")
    )
    expand = 'eval "set -- $LIST"; printf "<%s>" "$@"'
    listed = subprocess.run(["sh", "-c", render.render([], values, header="") + expand], capture_output=True, text=True)
    assert listed.stdout == "<x y><$z>"
    with pytest.raises(ValueError):
        render.render(["unswitch.sh"], {"lower": "x"})


def test_the_exit_codes_are_those_the_scripts_use():
    scripts = {
        name: render.text(name)
        for name in (
            "inspect_lock.sh",
            "prepare.sh",
            "prepare_fetch.sh",
            "prepare_shared.sh",
            "prepare_check.sh",
            "switch.sh",
            "lease.sh",
        )
    }
    for code, name in [
        (commands.NOT_WRITABLE, "inspect_lock.sh"),
        (commands.SHA_MISMATCH, "prepare_fetch.sh"),
        (commands.SHA_MISMATCH, "prepare.sh"),
        (commands.MISSING_SHARED, "prepare_shared.sh"),
        (commands.UNSAFE_TREE, "prepare_check.sh"),
        (commands.CURRENT_NOT_LINK, "switch.sh"),
        (commands.RELEASE_INCOMPLETE, "switch.sh"),
        (commands.LEASE_LOST, "lease.sh"),
    ]:
        assert f"exit {code}" in scripts[name], (code, name)


def test_every_script_file_passes_shellcheck():
    folder = Path(commands.__file__).parent / "scripts"
    files = sorted(str(p) for p in folder.glob("*.sh"))
    assert len(files) > 20
    proc = subprocess.run(["shellcheck", "-s", "sh", *files], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


HOSTILE = "/tmp/dx; touch /tmp/pwn-$(id -u) `touch /tmp/pwn2` $HOME\nx"


@pytest.fixture
def root(tmp_path):
    return tmp_path / "srv dir; $(touch pwn)"


def full_cycle(paths: Paths, number: int, token: str, payload: bytes, release_json: str, **kw):
    sha = hashlib.sha256(payload).hexdigest()
    inspect = sh(remote_lock.inspect(paths, lock_info='{"who": "me"}', lock_token=token, artifact_sha=sha))
    assert inspect.returncode == 0, inspect.stderr
    st = state.parse(inspect.stdout.decode())
    assert st.lock_acquired
    prep = sh(
        commands.prepare(paths, number, token, sha, upload=not st.cached, release_json=release_json, **kw), payload
    )
    assert prep.returncode == 0, prep.stderr
    sw = sh(commands.switch(paths, number, token))
    assert sw.returncode == 0, sw.stderr
    fin = sh(commands.finish(paths, token, delete=[], keep_artifacts=[sha]))
    assert fin.returncode == 0, fin.stderr
    return sha


STREAM = pytest.mark.parametrize("stream", [False, True], ids=["received-then-extracted", "streamed"])


@STREAM
def test_scripts_run_locally_with_hostile_values(root, tmp_path, monkeypatch, stream):
    monkeypatch.chdir(tmp_path)
    paths = Paths(str(root))
    payload = make_tarball({"app.txt": b"v1", "REVISION": b"abc\n"})
    meta = json.dumps({"version": HOSTILE, "note": "'quote' \"dq\" `bt`"})
    (root / "shared" / "conf; rm -rf x").mkdir(parents=True)
    (root / "shared" / "conf; rm -rf x" / "f $(id)").write_text("secret-ish")
    full_cycle(
        paths, 1, "t1", payload, meta, shared_dirs=("log dir",), shared_files=("conf; rm -rf x/f $(id)",), stream=stream
    )
    release = root / "releases" / "1"
    assert (root / "current").resolve() == release.resolve()
    assert (release / "app.txt").read_bytes() == b"v1"
    assert json.loads((release / ".deployer/release.json").read_text())["version"] == HOSTILE
    assert (release / "log dir").is_symlink() and (release / "conf; rm -rf x" / "f $(id)").read_text() == "secret-ish"
    assert not (root / ".deployer" / "lock").exists()
    assert not list(tmp_path.glob("pwn*")) and not Path("/tmp/pwn2").exists()

    # second deploy reuses the cached artifact (no stdin), then rollback-style switch back to 1
    full_cycle(paths, 2, "t2", payload, "{}")
    out = sh(remote_lock.inspect(paths)).stdout.decode()
    st = state.parse(out)
    assert st.current == 2 and [r.number for r in st.releases] == [1, 2]
    assert all(r.complete for r in st.releases) and st.lock is None


@STREAM
def test_prepare_rejects_corrupt_upload_and_leaves_nothing(tmp_path, stream):
    paths = Paths(str(tmp_path / "app"))
    payload = make_tarball({"a": b"1"})
    sha = hashlib.sha256(payload).hexdigest()
    proc = sh(commands.prepare(paths, 1, "tok", sha, upload=True, release_json="{}", stream=stream), payload[:-7])
    assert proc.returncode == commands.SHA_MISMATCH
    assert b"sha256 mismatch" in proc.stderr
    assert sorted(p.name for p in (tmp_path / "app" / "releases").iterdir()) == []
    assert list((tmp_path / "app" / ".deployer" / "cache").iterdir()) == []


@STREAM
def test_prepare_names_a_damaged_artifact_by_its_sha256_and_leaves_nothing(tmp_path, stream):
    """A flipped byte in the upload, then in the cached copy a redeploy extracts (checksummed
    while it is extracted): both reported as damaged, nothing left behind, the bad copy removed."""
    paths = Paths(str(tmp_path / "app"))
    payload = make_tarball({f"f{i}": os.urandom(2048) for i in range(200)})
    sha = hashlib.sha256(payload).hexdigest()
    flipped = bytearray(payload)
    flipped[len(payload) // 3] ^= 0x01
    proc = sh(commands.prepare(paths, 1, "tok", sha, upload=True, release_json="{}", stream=stream), bytes(flipped))
    assert proc.returncode == commands.SHA_MISMATCH, proc.stderr
    assert b"sha256 mismatch" in proc.stderr
    assert list((tmp_path / "app" / "releases").iterdir()) == []
    assert list((tmp_path / "app" / ".deployer" / "cache").iterdir()) == []

    # intact: extracted and cached
    proc = sh(commands.prepare(paths, 1, "tok", sha, upload=True, release_json="{}", stream=stream), payload)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "app" / "releases" / "1" / "f7").stat().st_size == 2048
    cached = tmp_path / "app" / ".deployer" / "cache" / f"{sha}.tar.gz"
    assert cached.read_bytes() == payload

    # a damaged cached copy is found while it is extracted again, and removed
    cached.write_bytes(bytes(flipped))
    proc = sh(commands.prepare(paths, 2, "tok2", sha, upload=False, release_json="{}"))
    assert proc.returncode == commands.SHA_MISMATCH and b"sha256 mismatch" in proc.stderr
    assert not cached.exists()
    assert sorted(p.name for p in (tmp_path / "app" / "releases").iterdir()) == ["1"]


def with_manifest(files: dict[str, bytes]) -> tuple[dict[str, bytes], str]:
    """files plus the artifact's manifest member, and the manifest's sha256."""
    text = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in sorted(files.items()))
    return {**files, ".deployer/manifest.sha256": text.encode()}, hashlib.sha256(text.encode()).hexdigest()


def test_redeploy_links_an_unchanged_release_and_extracts_when_it_changed(tmp_path):
    """Hard links from release 1 only while release 1 is the artifact as extracted; hook output,
    __pycache__ and markers never carried over; any change → extracted again, and still correct."""
    paths = Paths(str(tmp_path / "app"))
    app = tmp_path / "app"
    files, manifest_sha = with_manifest(
        {"REVISION": b"abc\n", "src/a.py": b"A = 1\n", "src/b.txt": b"b", "log/keep": b"shipped", "etc/conf": b"c"}
    )
    payload = make_tarball(files)
    sha = hashlib.sha256(payload).hexdigest()
    (app / "shared" / "etc").mkdir(parents=True)
    (app / "shared" / "etc" / "conf").write_text("from shared")
    kw = dict(shared_dirs=("log",), shared_files=("etc/conf",), generated=("venv",))

    def prepare(number, source=1, **extra):
        link = commands.LinkSource(source, manifest_sha)
        proc = sh(
            commands.prepare(
                paths, number, f"t{number}", sha, upload=False, release_json="{}", link_from=link, **kw, **extra
            )
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.decode()

    assert sh(commands.prepare(paths, 1, "t1", sha, upload=True, release_json="{}", **kw), payload).returncode == 0
    r1, r2 = app / "releases" / "1", app / "releases" / "2"
    for made_later in (r1 / "venv" / "python", r1 / "src" / "__pycache__" / "a.pyc"):  # by hooks, Python
        made_later.parent.mkdir()
        made_later.write_text("not from the artifact")
    (r1 / ".deployer" / "migrated").touch()

    assert "linked\t1" in prepare(2)
    assert (r2 / "src" / "a.py").stat().st_ino == (r1 / "src" / "a.py").stat().st_ino
    assert not (r2 / "venv").exists() and not (r2 / "src" / "__pycache__").exists()
    assert sorted(p.name for p in (r2 / ".deployer").iterdir()) == [
        "complete",
        "deploy_id",
        "manifest.sha256",
        "release.json",
    ]
    assert (r2 / "log").is_symlink() and (r2 / "etc" / "conf").read_text() == "from shared"

    # a file changed in place since release 1 was prepared (shared inode: release 2 sees it too)
    time.sleep(0.01)
    (r1 / "src" / "b.txt").write_bytes(b"hand edit")
    out = prepare(3)
    assert "linked" not in out and (app / "releases" / "3" / "src" / "b.txt").read_bytes() == b"b"
    assert "linked\t3" in prepare(4, source=3)  # the re-extracted one is a good source

    # a file removed, a file added, a manifest that is not the artifact's: each → extracted
    (app / "releases" / "4" / "src" / "a.py").unlink()
    assert "linked" not in prepare(5, source=4)
    (app / "releases" / "5" / "stray").write_bytes(b"")
    os.utime(app / "releases" / "5" / "stray", (0, 0))  # even with an old time
    assert "linked" not in prepare(6, source=5)
    (app / "releases" / "6" / ".deployer" / "manifest.sha256").write_text("")
    assert "linked" not in prepare(7, source=6)
    assert "linked" not in prepare(8, source=99)
    assert not (app / "releases" / "6" / "stray").exists()
    for n in (3, 7, 8):  # not changed after their prepare
        release = app / "releases" / str(n)
        assert (release / "src" / "a.py").read_bytes() == b"A = 1\n"
        assert (release / "src" / "b.txt").read_bytes() == b"b"
        assert (release / ".deployer" / "complete").exists()
    assert sorted(p.name for p in (app / "releases").iterdir()) == [str(n) for n in range(1, 9)]


def test_streamed_upload_with_env_file_and_without_tail_pid(tmp_path):
    """The env file's bytes come first on stdin, the artifact after them; a tail that has no
    --pid (busybox) receives the upload whole, then extracts it, as on a fast link."""
    payload = make_tarball({f"d/f{i}": os.urandom(4096) for i in range(100)})
    sha = hashlib.sha256(payload).hexdigest()
    env = b"SECRET=1\n"
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "tail").write_text("#!/bin/sh\necho 'tail: unrecognized option' >&2; exit 1\n")
    (fake / "tail").chmod(0o755)
    assert subprocess.run(["tail", "--pid=1", "-c", "0", "/dev/null"]).returncode == 0  # GNU tail here
    for name, path_env in (("with-pid", os.environ["PATH"]), ("no-pid", f"{fake}:{os.environ['PATH']}")):
        paths = Paths(str(tmp_path / name))
        script = commands.prepare(
            paths, 1, "tok", sha, upload=True, release_json="{}", stream=True, env_file=".env", env_size=len(env)
        )
        proc = subprocess.run(
            ["sh", "-c", UNFENCED + script],
            input=env + payload,
            capture_output=True,
            timeout=30,
            env={**os.environ, "PATH": path_env},
        )
        assert proc.returncode == 0, (name, proc.stderr)
        release = tmp_path / name / "releases" / "1"
        assert (release / "d" / "f42").stat().st_size == 4096 and (release / ".env").read_bytes() == env
        cache = tmp_path / name / ".deployer" / "cache"
        assert [p.name for p in cache.iterdir()] == [f"{sha}.tar.gz"]
        assert (cache / f"{sha}.tar.gz").read_bytes() == payload


@pytest.mark.parametrize("openssl", ["openssl", "no-openssl"])
def test_prepare_checksums_with_openssl_when_it_works_else_sha256sum(tmp_path, openssl):
    """Uploads (received, streamed) and a redeploy of the cached copy: checked with OpenSSL's sha256
    when it answers, with sha256sum when it is missing or broken; a damaged upload caught by either."""
    payload = make_tarball({f"f{i}": os.urandom(1024) for i in range(50)})
    sha = hashlib.sha256(payload).hexdigest()
    fake, calls = tmp_path / "bin", tmp_path / "openssl-calls"
    fake.mkdir()
    real = subprocess.run(["sh", "-c", "command -v openssl"], capture_output=True, text=True).stdout.strip()
    body = f'echo "$@" >> {calls}; exec {real} "$@"' if openssl == "openssl" else "exit 127"
    (fake / "openssl").write_text(f"#!/bin/sh\n{body}\n")
    (fake / "openssl").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    for n, (upload, stream) in enumerate([(True, False), (True, True), (False, False)], start=1):
        paths = Paths(str(tmp_path / ("app1" if not upload else f"app{n}")))  # the redeploy: app1's cache
        script = commands.prepare(paths, n, f"t{n}", sha, upload=upload, release_json="{}", stream=stream)
        if upload:
            bad = subprocess.run(
                ["sh", "-c", UNFENCED + script], input=payload[:-9], capture_output=True, timeout=30, env=env
            )
            assert bad.returncode == commands.SHA_MISMATCH, bad.stderr
        proc = subprocess.run(
            ["sh", "-c", UNFENCED + script], input=payload if upload else b"", capture_output=True, timeout=30, env=env
        )
        assert proc.returncode == 0, proc.stderr
        assert (Path(paths.release(n)) / "f7").stat().st_size == 1024
    used = calls.read_text().count("dgst -sha256 -r") if calls.exists() else 0
    assert used == (10 if openssl == "openssl" else 0)  # 5 runs (2 refused): a probe and a sum each


def test_prepare_missing_shared_file_names_it(tmp_path):
    paths = Paths(str(tmp_path / "app"))
    payload = make_tarball({"a": b"1"})
    sha = hashlib.sha256(payload).hexdigest()
    proc = sh(commands.prepare(paths, 1, "tok", sha, upload=True, release_json="{}", shared_files=(".env",)), payload)
    assert proc.returncode == commands.MISSING_SHARED
    assert f"missing shared file {tmp_path}/app/shared/.env".encode() in proc.stderr
    assert list((tmp_path / "app" / "releases").iterdir()) == []


def test_switch_refuses_real_directory_and_incomplete_release(tmp_path):
    paths = Paths(str(tmp_path))
    (tmp_path / "releases" / "1" / ".deployer").mkdir(parents=True)
    proc = sh(commands.switch(paths, 1, "t"))
    assert proc.returncode == commands.RELEASE_INCOMPLETE
    (tmp_path / "releases" / "1" / ".deployer" / "complete").touch()
    (tmp_path / "current").mkdir()
    proc = sh(commands.switch(paths, 1, "t"))
    assert proc.returncode == commands.CURRENT_NOT_LINK
    assert (tmp_path / "current").is_dir() and not (tmp_path / "current").is_symlink()
    assert list((tmp_path / "current").iterdir()) == []


def test_a_conditional_switch_back_changes_nothing_unless_current_is_where_it_was_sent(tmp_path):
    """Putting back a host whose switch's answer never came: only if current points at the
    release it was switched to; else nothing changes (no rename, no ledger line, the lock kept)."""
    paths = Paths(str(tmp_path))
    for n in (1, 2):
        (tmp_path / "releases" / str(n) / ".deployer").mkdir(parents=True)
        (tmp_path / "releases" / str(n) / ".deployer" / "complete").touch()
    (tmp_path / ".deployer" / "lock").mkdir(parents=True)
    (tmp_path / ".deployer" / "lock" / "token").write_text("t\n")
    (tmp_path / "current").symlink_to("releases/1")
    back = commands.switch(paths, 1, "t", ledger='{"x": 1}', release_lock=True, only_from="releases/2")
    proc = sh(remote_lock.unleased(back))
    assert proc.returncode == 0 and commands.unchanged(proc.stdout.decode())
    assert os.readlink(tmp_path / "current") == "releases/1"
    assert (tmp_path / ".deployer" / "lock").is_dir() and not (tmp_path / ".deployer" / "ledger.jsonl").exists()
    (tmp_path / "current").unlink()
    (tmp_path / "current").symlink_to("releases/2")
    proc = sh(remote_lock.unleased(back))
    assert proc.returncode == 0 and not commands.unchanged(proc.stdout.decode())
    assert os.readlink(tmp_path / "current") == "releases/1"
    assert not (tmp_path / ".deployer" / "lock").exists()
    assert (tmp_path / ".deployer" / "ledger.jsonl").read_text() == '{"x": 1}\n'
    proc = sh(commands.unswitch(paths, 2))
    assert proc.returncode == 0 and commands.unchanged(proc.stdout.decode())
    assert os.readlink(tmp_path / "current") == "releases/1"


def test_a_lost_lock_race_names_the_holder_or_takes_the_lock_it_left(tmp_path):
    """Two runs a moment apart: the loser of the mkdir reads the holder's info even if the holder
    writes it a little later, and if the holder leaves in between, the loser takes the lock."""
    paths = Paths(str(tmp_path))
    lock = tmp_path / ".deployer" / "lock"
    lock.mkdir(parents=True)  # a holder between its mkdir and its info write
    writer = subprocess.Popen(["sh", "-c", f'sleep 0.3; printf \'%s\\n\' \'{{"who": "a@x", "pid": 7}}\' > {lock}/info'])
    late = state.parse(sh(remote_lock.inspect(paths, lock_info='{"who": "b@y"}', lock_token="B")).stdout.decode())
    writer.wait()
    assert not late.lock_acquired and late.lock.who == "a@x" and late.lock.pid == 7

    (lock / "info").unlink()  # a holder that leaves without ever saying who
    remover = subprocess.Popen(["sh", "-c", f"sleep 0.3; rm -rf {lock}"])
    taken = state.parse(sh(remote_lock.inspect(paths, lock_info='{"who": "b@y"}', lock_token="B")).stdout.decode())
    remover.wait()
    assert taken.lock_acquired and (lock / "token").read_text() == "B"


def test_lock_is_won_once_and_only_the_token_unlocks(tmp_path):
    paths = Paths(str(tmp_path))
    first = state.parse(
        sh(remote_lock.inspect(paths, lock_info='{"who": "a@x", "pid": 1}', lock_token="A")).stdout.decode()
    )
    second = state.parse(sh(remote_lock.inspect(paths, lock_info='{"who": "b@y"}', lock_token="B")).stdout.decode())
    assert first.lock_acquired and not second.lock_acquired
    assert second.lock.who == "a@x" and second.lock.pid == 1
    sh(remote_lock.unlock(paths, "B", ledger='{"by": "B"}'))
    assert (tmp_path / ".deployer" / "lock").is_dir() and not (tmp_path / ".deployer" / "ledger.jsonl").exists()
    sh(remote_lock.unlock(paths, "A", ledger='{"by": "A"}'))
    assert not (tmp_path / ".deployer" / "lock").exists()
    assert (tmp_path / ".deployer" / "ledger.jsonl").read_text() == '{"by": "A"}\n'


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_switch_then_finish_runs_the_finish_only_after_a_switch_and_reports_it_apart(tmp_path, shell):
    """The finish runs only once the switch succeeded; a finish that fails stops there (its own
    set -e) and is reported as `finished`, the command itself still succeeding (switched)."""
    paths = Paths(str(tmp_path))
    assert state.parse(sh(remote_lock.inspect(paths, lock_info="{}", lock_token="T")).stdout.decode()).lock_acquired
    for n in (1, 2):
        (tmp_path / "releases" / str(n) / ".deployer").mkdir(parents=True)
    (tmp_path / "releases" / "2" / ".deployer" / "complete").touch()

    def run(number: int, finish: str) -> subprocess.CompletedProcess:
        script = commands.switch_then_finish(commands.switch(paths, number, "T"), finish)
        return subprocess.run([shell, "-c", UNFENCED + script], capture_output=True, text=True, timeout=30)

    refused = run(1, commands.finish(paths, "T", delete=[], keep_artifacts=[]))  # release 1 incomplete
    assert refused.returncode == 31 and "finished" not in refused.stdout
    assert (tmp_path / ".deployer" / "lock").is_dir() and not (tmp_path / "current").exists()

    failing = f"set -e\necho cleaning\nfalse\ntouch {tmp_path}/never\n"
    done = run(2, failing)
    assert done.returncode == 0 and "current\treleases/2" in done.stdout and "finished\t1" in done.stdout
    assert not (tmp_path / "never").exists() and (tmp_path / ".deployer" / "lock").is_dir()

    done = run(2, commands.finish(paths, "T", delete=["1"], keep_artifacts=[]))
    assert done.returncode == 0 and "finished\t0" in done.stdout
    assert not (tmp_path / ".deployer" / "lock").exists() and not (tmp_path / "releases" / "1").exists()


def test_inspect_reports_current_kinds(tmp_path):
    paths = Paths(str(tmp_path))
    assert state.parse(sh(remote_lock.inspect(paths)).stdout.decode()).current_kind == "absent"
    (tmp_path / "current").symlink_to("releases/9")
    st = state.parse(sh(remote_lock.inspect(paths)).stdout.decode())
    assert st.current_kind == "dangling" and st.current_problem()
    (tmp_path / "current").unlink()
    (tmp_path / "current").mkdir()
    st = state.parse(sh(remote_lock.inspect(paths)).stdout.decode())
    assert st.current_kind == "dir" and "real directory" in st.current_problem()


def test_abort_removes_only_this_runs_release(tmp_path):
    paths = Paths(str(tmp_path))
    for n, token in ((1, "old"), (2, "mine")):
        d = tmp_path / "releases" / str(n) / ".deployer"
        d.mkdir(parents=True)
        (d / "deploy_id").write_text(token + "\n")
    (tmp_path / "releases" / ".tmp-2-mine").mkdir()
    (tmp_path / "current").symlink_to("releases/1")
    assert sh(commands.abort(paths, 2, "mine")).returncode == 0
    assert sorted(p.name for p in (tmp_path / "releases").iterdir()) == ["1"]
    assert sh(commands.abort(paths, 1, "mine")).returncode == 0
    assert (tmp_path / "releases" / "1").is_dir()


def test_drift_reports_modified_removed_added_and_skips_shared(tmp_path):
    paths = Paths(str(tmp_path))
    rel = tmp_path / "releases" / "1"
    (rel / ".deployer").mkdir(parents=True)
    (rel / "log").mkdir()
    files = {"app.py": b"print(1)\n", "a dir/x y.txt": b"x\n", "gone.txt": b"g\n", "log/keep": b"k\n"}
    lines = []
    for name, data in sorted(files.items()):
        (rel / name).parent.mkdir(parents=True, exist_ok=True)
        (rel / name).write_bytes(data)
        lines.append(f"{hashlib.sha256(data).hexdigest()}  {name}\n")
    (rel / ".deployer" / "manifest.sha256").write_text("".join(lines))
    (tmp_path / "current").symlink_to("releases/1")
    clean = sh(commands.drift(paths, ("log",)))
    assert clean.returncode == 0 and clean.stdout.decode().splitlines() == ["checked\t3"]
    (rel / "app.py").write_text("print('hacked')\n")
    (rel / "gone.txt").unlink()
    (rel / "new file.sh").write_text("evil\n")
    import shutil

    shutil.rmtree(rel / "log")
    (rel / "log").symlink_to(tmp_path)  # the shared link: never reported
    out = sh(commands.drift(paths, ("log",))).stdout.decode().splitlines()
    assert sorted(out) == ["added\tnew file.sh", "checked\t3", "modified\tapp.py", "removed\tgone.txt"]


# -- every builder, every string parameter hostile --------------------------------------------


def _payloads(canary: Path) -> list[str]:
    """Ways a value breaks out of bad quoting, each creating `canary` if it runs."""
    c = str(canary)
    return [
        f"$(touch {c})",
        f"`touch {c}`",
        f"x; touch {c}",
        f"x\ntouch {c}\n",
        f'odd "quote $(touch {c})',
        f"it's; touch {c}; '",
        f'\\"; touch {c}; echo \\',
        f"-n \\c %s $HOME ${{x:-$(touch {c})}}",
    ]


def _builders(hostile: str, deploy_to: str) -> dict[str, str]:
    """Every public script builder, every string it takes set to `hostile` (a user command, which
    is meant to run, excepted: it is passed intact and prints a hostile environment value)."""
    paths = Paths(deploy_to)
    env = {"DEPLOY_VERSION": hostile, "DEPLOY_TO": hostile}
    command = 'printf "%s" "$DEPLOY_VERSION" > /dev/null'
    link = commands.LinkSource(1, hostile)
    many = (hostile, "log " + hostile)
    return {
        "inspect": remote_lock.inspect(paths, lock_info=hostile, lock_token=hostile, artifact_sha=hostile),
        "inspect-lease": remote_lock.inspect(
            paths,
            lock_info=hostile,
            lock_token=hostile,
            lock_ttl=1,
            takeover_ledger=hostile + remote_lock.TAKEOVER_MARK + hostile,
        ),
        "lease": remote_lock.lease(paths, hostile) + commands.switch(paths, 3, hostile),
        "unleased": remote_lock.unleased(commands.switch(paths, 3, hostile)),
        "prepare-upload": commands.prepare(
            paths,
            3,
            hostile,
            hostile,
            upload=True,
            release_json=hostile,
            shared_dirs=many,
            shared_files=many,
            env_file=hostile,
            env_size=4,
        ),
        "prepare-stream": commands.prepare(paths, 3, hostile, hostile, upload=True, release_json=hostile, stream=True),
        "prepare-cached": commands.prepare(
            paths,
            3,
            hostile,
            hostile,
            upload=False,
            release_json=hostile,
            shared_dirs=many,
            link_from=link,
            generated=many,
        ),
        "write_env": commands.write_env(paths, hostile, hostile, 3, ledger=hostile),
        "read_env": commands.read_env(paths, hostile),
        "switch": commands.switch(paths, 3, hostile, mark_rolled_back=2, release_lock=True, ledger=hostile),
        "switch-only_from": commands.switch(paths, 3, hostile, ledger=hostile, only_from=hostile),
        "unswitch": commands.unswitch(paths, 3),
        "finish": commands.finish(paths, hostile, delete=[hostile, "2"], keep_artifacts=[hostile], ledger=hostile),
        "switch_then_finish": commands.switch_then_finish(
            commands.switch(paths, 3, hostile), commands.finish(paths, hostile, delete=[hostile], keep_artifacts=[])
        ),
        "abort": commands.abort(paths, 3, hostile, ledger=hostile),
        "finish_cut": commands.finish_cut(paths, hostile, done=hostile, ledger=hostile),
        "config_cut": commands.config_cut(paths, hostile, 3, hostile, done=hostile, cut=hostile),
        "unlock-token": remote_lock.unlock(paths, hostile),
        "unlock-force": remote_lock.unlock(paths, None, ledger=hostile),
        "read_ledger": commands.read_ledger(paths, hostile),
        "drift": commands.drift(paths, many, many),
        "in_release": user_command.in_release(paths, 3, command, env),
        "in_release-deploy_to": user_command.in_release(paths, None, command, env),
        "in_release-run_as": user_command.in_release(paths, 3, command, env, run_as=hostile),
        "migrate": user_command.migrate(paths, 3, command, env, run_as=hostile),
        "unmigrate": user_command.unmigrate(paths, 3, command, env),
        "verify_http": commands.verify_http(
            "http://127.0.0.1:9/" + hostile, status=200, body=hostile, timeout=1, retries=1, interval=0
        ),
        "mark_bad": commands.mark_bad(paths, 3, hostile),
        "in_current": remote_ops.in_current(paths, command, env),
        "in_current-run_as": remote_ops.in_current(paths, command, env, run_as=hostile),
        "tail": remote_ops.tail(paths, hostile, 2, follow=False),
        "maintenance-on": remote_ops.maintenance(paths, True, hostile, hostile, hostile),
        "maintenance-off": remote_ops.maintenance(paths, False, hostile, hostile, hostile),
        "shell": remote_ops.shell(paths, run_as=hostile),
        # dry run: never writes, wherever this test runs
        "setup": remote_setup.setup(
            setup_plan.HostSetup(
                app=hostile,
                user=hostile,
                create_user=True,
                deploy_to=deploy_to,
                dirs=many,
                unit=setup_plan.File(hostile, hostile, "644"),
                sudoers=setup_plan.File(hostile, hostile, "440"),
                site=setup_plan.File(hostile, hostile, "644"),
                site_link=hostile,
            ),
            dry_run=True,
        ),
    }


@pytest.mark.parametrize("where", ["writable", "unwritable"])
def test_no_builder_runs_a_hostile_value(tmp_path, where):
    """Quotes, $(), backticks, newlines and backslashes in deploy_to, tokens, names, ledger lines,
    URLs, bodies and env values: every script parses (sh -n), and running it in a real sh never
    runs the value (the canary is never created), on the happy paths and on the failure paths
    (deploy_to under a regular file: every mkdir fails, so the error messages are printed)."""
    canary = tmp_path / "CANARY"
    base = tmp_path / "srv"
    base.mkdir()
    if where == "unwritable":
        base = base / "a-file"
        base.write_text("")
    names = set()
    for i, hostile in enumerate(_payloads(canary)):
        for name, script in _builders(hostile, f"{base}/app{i} {hostile}").items():
            names.add(name)
            parsed = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True)
            assert parsed.returncode == 0, f"{name} with {hostile!r}: {parsed.stderr}"
            subprocess.run(["sh", "-c", script], input=b"data", capture_output=True, timeout=30, cwd=tmp_path)
            assert not canary.exists(), f"{name} ran a value: {hostile!r}"
    public = {
        n
        for module in (commands, remote_lock, remote_ops)
        for n, f in vars(module).items()
        if callable(f)
        and not n.startswith("_")
        and getattr(f, "__module__", "") == module.__name__
        and n
        not in ("LinkSource", "q", "lock_values", "unchanged", "user_inputs", "shared_rel", "page", "nginx_snippet")
    }
    assert public <= {n.split("-")[0] for n in names}, "a builder the test does not cover"


def test_the_lock_and_health_check_messages_carry_hostile_values_verbatim(tmp_path):
    """The failure lines that name deploy_to and the health check's URL and body print them as
    they are: quoted, not expanded, not cut at a quote."""
    (tmp_path / "file").write_text("")
    deploy_to = f'{tmp_path}/file/x$(id)"`y`'
    locked = sh(remote_lock.inspect(Paths(deploy_to), lock_info="{}", lock_token="t"))
    assert locked.returncode == commands.NOT_WRITABLE
    assert locked.stderr.decode().startswith(f"cannot create {deploy_to}/.deployer: deploy_to is not writable by ")
    url, body = 'http://127.0.0.1:9/$(id)"', 'say "hi'
    failed = sh(commands.verify_http(url, status=200, body=body, timeout=1, retries=1, interval=0))
    assert failed.returncode == 1
    code = "000" if shutil.which("curl") else "0"  # curl's code for no answer, or the python fallback's
    assert failed.stderr.decode().splitlines()[0] == (
        f"health check failed: {url} answered HTTP {code} without {body!r} (expected 200) after 1 attempt(s)"
    )


@pytest.mark.parametrize("ride", [False, True], ids=["own-command", "after-the-switch"])
def test_a_failed_cleanup_records_the_deploy_ok_then_the_cleanup_failed_and_unlocks(tmp_path, ride):
    """The finish's `done` line (the deploy's outcome) is written before the cleanup, `failed`
    after a cleanup that failed (an `rm` that cannot remove release 1 here), the lock is released
    either way, and the failure is emitted as its own field with exit 0 (on its own or after the
    switch), never taken for a failed switch."""
    paths = Paths(str(tmp_path / "app"))
    assert state.parse(sh(remote_lock.inspect(paths, lock_info="{}", lock_token="T")).stdout.decode()).lock_acquired
    for n in (1, 2):
        (tmp_path / "app" / "releases" / str(n) / ".deployer").mkdir(parents=True)
        (tmp_path / "app" / "releases" / str(n) / ".deployer" / "complete").touch()
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "rm").write_text(
        '#!/bin/sh\ncase "$*" in *releases/1*) echo "rm: cannot remove releases/1" >&2; '
        'exit 1;; esac\nexec /bin/rm "$@"\n'
    )
    (fake / "rm").chmod(0o755)
    script = commands.finish(
        paths,
        "T",
        delete=["1"],
        keep_artifacts=[],
        done='{"deploy": "ok"}',
        ledger='{"cleanup": "ok"}',
        failed='{"cleanup": "failed"}',
    )
    if ride:
        script = commands.switch_then_finish(commands.switch(paths, 2, "T"), script)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    proc = subprocess.run(["sh", "-c", UNFENCED + script], capture_output=True, text=True, env=env, timeout=30)
    assert proc.returncode == 0 and "cannot remove releases/1" in proc.stderr
    assert f"{commands.CLEANUP_FAILED}\t1" in proc.stdout and ("finished\t0" in proc.stdout) == ride
    ledger = (tmp_path / "app" / ".deployer" / "ledger.jsonl").read_text().splitlines()
    assert ledger == ['{"deploy": "ok"}', '{"cleanup": "failed"}']
    assert not (tmp_path / "app" / ".deployer" / "lock").exists()

    (fake / "rm").unlink()
    assert state.parse(sh(remote_lock.inspect(paths, lock_info="{}", lock_token="U")).stdout.decode()).lock_acquired
    ok = sh(
        commands.finish(
            paths, "U", delete=["1"], keep_artifacts=[], ledger='{"cleanup": "ok"}', failed='{"cleanup": "failed"}'
        )
    )
    assert ok.returncode == 0 and commands.CLEANUP_FAILED not in ok.stdout.decode()
    assert (tmp_path / "app" / ".deployer" / "ledger.jsonl").read_text().splitlines()[-1] == '{"cleanup": "ok"}'
    assert not (tmp_path / "app" / "releases" / "1").exists()


def test_a_finish_that_cannot_write_its_recorded_marker_still_cleans_up_and_unlocks(tmp_path):
    """`recorded` cannot be made in the lock dir (a directory holds its name): in a real POSIX sh,
    where a failed redirection of the special builtin `:` ends the script, the finish goes on:
    the deploy and its cleanup recorded, old releases removed, the lock released, exit 0."""
    assert subprocess.run(["sh", "-c", ": > /; echo went on"], capture_output=True, text=True).stdout == ""
    paths = Paths(str(tmp_path / "app"))
    assert state.parse(sh(remote_lock.inspect(paths, lock_info="{}", lock_token="T")).stdout.decode()).lock_acquired
    (tmp_path / "app" / "releases" / "1" / ".deployer").mkdir(parents=True)
    (Path(paths.lock) / "recorded").mkdir()
    script = commands.finish(
        paths,
        "T",
        delete=["1"],
        keep_artifacts=[],
        done='{"deploy": "ok"}',
        ledger='{"cleanup": "ok"}',
        failed='{"cleanup": "failed"}',
    )
    proc = sh(script)
    assert proc.returncode == 0, proc.stderr
    ledger = (tmp_path / "app" / ".deployer" / "ledger.jsonl").read_text().splitlines()
    assert ledger == ['{"deploy": "ok"}', '{"cleanup": "ok"}']
    assert not (tmp_path / "app" / "releases" / "1").exists() and not Path(paths.lock).exists()


def unsafe_tarball(kind: str) -> bytes:
    """A tarball the client's member check refuses, as if one had got past it."""
    members = [tar_member("REVISION", b"abc\n")]

    def add(name: str, data: bytes = b"", **attrs) -> None:
        members.append(tar_member(name, data, **attrs))

    if kind == "absolute-link":
        add("www", type=tarfile.SYMTYPE, linkname="/")
    elif kind == "link-up-and-out":
        add("deep", type=tarfile.DIRTYPE, mode=0o755)
        add("deep/up", type=tarfile.SYMTYPE, linkname="../../..")
    elif kind == "chained-links-out":
        add("a", type=tarfile.SYMTYPE, linkname="b/../..")
        add("b", type=tarfile.DIRTYPE, mode=0o755)
    elif kind == "fifo":
        add("pipe", type=tarfile.FIFOTYPE)
    elif kind == "setuid-file":
        add("suid", b"#!/bin/sh\n", mode=0o4755)
    elif kind == "device":
        add("null", type=tarfile.CHRTYPE, devmajor=1, devminor=3)
    elif kind == "forged-marker":
        add(".deployer/manifest.sha256")
        add(".deployer/migrated", b"{}")
    elif kind == "forged-marker-hidden":  # names the shell's `*` does not list
        add(".deployer/.bad")
    elif kind == "forged-marker-dotdot":
        add(".deployer/..bad")
    elif kind == "forged-marker-nested":  # only a subdirectory at the top
        add(".deployer/sub", type=tarfile.DIRTYPE, mode=0o755)
        add(".deployer/sub/complete")
    elif kind == "manifest-marker-as-link":  # the manifest's name, but not a regular file
        add(".deployer/manifest.sha256", type=tarfile.SYMTYPE, linkname="../REVISION")
    elif kind == "state-dir-as-link":
        add("elsewhere", type=tarfile.DIRTYPE, mode=0o755)
        add(".deployer", type=tarfile.SYMTYPE, linkname="elsewhere")
    return tar_gz(members)


ROOT_ONLY = {"setuid-file", "device"}  # what tar can only make as root (and so the deploy user never gets)


@pytest.mark.parametrize(
    "kind",
    [
        "absolute-link",
        "link-up-and-out",
        "chained-links-out",
        "fifo",
        "setuid-file",
        "device",
        "forged-marker",
        "forged-marker-hidden",
        "forged-marker-dotdot",
        "forged-marker-nested",
        "manifest-marker-as-link",
        "state-dir-as-link",
    ],
)
@pytest.mark.parametrize("how", ["received", "streamed", "cached"])
def test_prepare_refuses_an_unsafe_tree_before_it_becomes_a_release(tmp_path, kind, how):
    """Defence in depth: one pass over the extracted tree refuses devices, fifos, setuid files and
    links resolving outside it; the temp dir is removed and no release or shared link is made."""
    paths = Paths(str(tmp_path / "app"))
    payload = unsafe_tarball(kind)
    sha = hashlib.sha256(payload).hexdigest()
    if how == "cached":
        cache = tmp_path / "app" / ".deployer" / "cache"
        cache.mkdir(parents=True)
        (cache / f"{sha}.tar.gz").write_bytes(payload)
    script = commands.prepare(
        paths, 1, "tok", sha, upload=how != "cached", release_json="{}", stream=how == "streamed", shared_dirs=("log",)
    )
    proc = sh(script, payload if how != "cached" else b"")
    if kind in ROOT_ONLY and os.geteuid() != 0:
        assert proc.returncode == 0, proc.stderr  # tar made neither: nothing to refuse
        assert not any(p.stat().st_mode & 0o6000 for p in (tmp_path / "app" / "releases" / "1").iterdir())
        return
    assert proc.returncode == commands.UNSAFE_TREE, proc.stderr
    why = b"brings entries of its own into .deployer/" if "marker" in kind or "state" in kind else b"unsafe entry"
    assert b"release 1 refused: " in proc.stderr and why in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert list((tmp_path / "app" / "releases").iterdir()) == []
    assert list((tmp_path / "app" / "shared").iterdir()) == []


def test_prepare_keeps_links_inside_the_release(tmp_path):
    """The pass refuses only what leaves the tree: relative links inside it (dangling ones too) stay."""
    paths = Paths(str(tmp_path / "srv link") + "/app")
    (tmp_path / "real").mkdir()
    (tmp_path / "srv link").symlink_to(tmp_path / "real")  # deploy_to reached through a symlink
    payload = tar_gz(
        [
            tar_member(name, type=tarfile.SYMTYPE, linkname=target)
            for name, target in (("self", "."), ("d/up", ".."), ("d/loop", "loop"), ("gone", "missing/x"))
        ]
    )
    sha = hashlib.sha256(payload).hexdigest()
    proc = sh(commands.prepare(paths, 1, "tok", sha, upload=True, release_json="{}"), payload)
    assert proc.returncode == 0, proc.stderr
    assert os.readlink(tmp_path / "real" / "app" / "releases" / "1" / "d" / "up") == ".."


def test_linking_a_shared_path_never_goes_through_a_link_in_the_release(tmp_path):
    """An artifact link above a shared path, even one resolving inside the release: refused before
    rm -rf; what it points at stays as it was."""
    paths = Paths(str(tmp_path / "app"))
    payload = tar_gz(
        [
            tar_member("data", type=tarfile.DIRTYPE, mode=0o755),
            tar_member("data/pids", type=tarfile.DIRTYPE, mode=0o755),
            tar_member("tmp", type=tarfile.SYMTYPE, linkname="data", mode=0o755),
        ]
    )
    sha = hashlib.sha256(payload).hexdigest()
    proc = sh(
        commands.prepare(paths, 1, "tok", sha, upload=True, release_json="{}", shared_dirs=("tmp/pids",)), payload
    )
    assert proc.returncode == commands.UNSAFE_TREE, proc.stderr
    assert b"refusing to link shared path tmp/pids: a parent in the release is a symlink" in proc.stderr
    assert list((tmp_path / "app" / "releases").iterdir()) == []


# --- the lock's lease: takeover of a stale lock, fencing of the run that lost it ------------------

TAKEOVER_LINE = '{"action": "takeover", "stale": "@@stale@@"}'


def lock(paths: Paths, token: str, ttl: int | None = 3) -> HostState:
    out = sh(
        remote_lock.inspect(
            paths,
            lock_info=json.dumps({"who": token, "pid": 1}),
            lock_token=token,
            lock_ttl=ttl,
            takeover_ledger=TAKEOVER_LINE,
        )
    )
    assert out.returncode == 0, out.stderr
    return state.parse(out.stdout.decode())


def leased(paths: Paths, token: str, script: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    """A script as a session holding the lock sends it: the lease check in front."""
    return subprocess.run(
        ["sh", "-c", remote_lock.lease(paths, token) + script], input=stdin, capture_output=True, timeout=30
    )


def age_heartbeat(paths: Paths, seconds: int) -> None:
    then = time.time() - seconds
    os.utime(paths.lock_beat, (then, then))


def test_a_live_lease_is_kept_and_a_stale_one_taken_over_with_the_dead_runs_leftovers(tmp_path):
    paths = Paths(str(tmp_path / "app dir"))
    assert lock(paths, "A").lock_acquired
    for name in (".tmp-2-A", ".tmp-2-B"):
        Path(paths.releases, name).mkdir(parents=True)
    Path(paths.cache).mkdir(parents=True)
    Path(paths.partial_artifact("A")).write_bytes(b"half")
    os.symlink("releases/1", paths.tmp_current("A"))
    age_heartbeat(paths, 60)
    assert leased(paths, "A", "echo renewed").stdout == b"renewed\n"  # every command renews
    held = lock(paths, "B")
    assert not held.lock_acquired and held.lock.who == "A" and held.lock_silent in (0, 1) and not held.took_over

    age_heartbeat(paths, 60)
    taken = lock(paths, "B")
    assert taken.lock_acquired and taken.took_over[1].who == "A" and taken.took_over[0] >= 59
    assert Path(paths.lock_token).read_text() == "B"
    assert sorted(os.listdir(paths.releases)) == [".tmp-2-B"]  # only the dead run's leftovers go
    assert os.listdir(paths.cache) == [] and not os.path.lexists(paths.tmp_current("A"))
    assert sorted(os.listdir(paths.state)) == ["cache", "ledger.jsonl", "lock"]
    record = json.loads(Path(paths.ledger).read_text())
    assert record == {"action": "takeover", "stale": {"holder": {"who": "A", "pid": 1}, "silent_s": taken.took_over[0]}}


def test_a_heartbeat_in_the_future_is_stale_lock_ttl_after_it_was_first_seen(tmp_path):
    """The host's clock stepped back after the holder's last renewal: its silence is counted from
    when a run first saw that heartbeat; a live holder's next renewal (host clock) ends it."""
    paths = Paths(str(tmp_path))
    future = Path(paths.lock, "future")
    assert lock(paths, "A").lock_acquired
    age_heartbeat(paths, -3600)
    seen = lock(paths, "B")
    assert not seen.lock_acquired and seen.lock_future and seen.lock_silent == 0
    age_mark = time.time() - 60
    os.utime(future, (age_mark, age_mark))  # first seen a minute ago, lock_ttl 3
    assert leased(paths, "A", "echo renewed").stdout == b"renewed\n"  # the holder was alive after all
    held = lock(paths, "B")
    assert not held.lock_acquired and not held.lock_future and held.lock_silent in (0, 1)
    age_heartbeat(paths, -7200)  # stepped back again: the old mark is for another heartbeat
    held = lock(paths, "B")
    assert not held.lock_acquired and held.lock_future and held.lock_silent == 0
    os.utime(future, (age_mark, age_mark))
    taken = lock(paths, "B")
    assert taken.lock_acquired and taken.lock_future and taken.took_over[0] >= 59
    assert Path(paths.lock_token).read_text() == "B" and not future.exists()
    assert sorted(os.listdir(paths.lock)) == ["beat", "info", "token"]


def test_a_lock_without_heartbeat_or_without_ttl_is_never_taken_over(tmp_path):
    paths = Paths(str(tmp_path))
    assert lock(paths, "A", ttl=None).lock_acquired
    age_heartbeat(paths, 600)
    assert not lock(paths, "B", ttl=None).lock_acquired  # no lock_ttl: no lease
    os.unlink(paths.lock_beat)  # a lock from before leases
    assert not lock(paths, "B").lock_acquired
    assert Path(paths.lock_token).read_text() == "A"


def test_racing_takeovers_of_one_stale_lock_make_exactly_one_holder(tmp_path):
    """Eight runs find the same stale lock at once: one renames it away and holds the lock, the
    others see the new holder. Repeated, since a race that is lost only sometimes is still lost."""
    paths = Paths(str(tmp_path))
    for trial in range(5):
        if os.path.isdir(paths.lock):
            commands_ok = sh(remote_lock.unlock(paths))
            assert commands_ok.returncode == 0
        assert lock(paths, "dead").lock_acquired
        age_heartbeat(paths, 60)
        script = (
            UNFENCED
            + "\n".join(
                "("
                + remote_lock.inspect(
                    paths,
                    lock_info=json.dumps({"who": f"r{i}"}),
                    lock_token=f"r{i}",
                    lock_ttl=3,
                    takeover_ledger=TAKEOVER_LINE,
                )
                + f") > {tmp_path}/out-{i} &"
                for i in range(8)
            )
            + "\nwait\n"
        )
        assert subprocess.run(["sh", "-c", script], capture_output=True, timeout=60).returncode == 0
        states = [state.parse((tmp_path / f"out-{i}").read_text()) for i in range(8)]
        winners = [i for i, st in enumerate(states) if st.lock_acquired]
        assert len(winners) == 1, trial
        assert Path(paths.lock_token).read_text() == f"r{winners[0]}"
        assert all(st.lock.who == f"r{winners[0]}" for i, st in enumerate(states) if i != winners[0])
        assert not [n for n in os.listdir(paths.state) if n.startswith("stale-")]


def test_a_run_whose_lock_was_taken_over_changes_nothing(tmp_path):
    """Every step that changes a host checks the lease right before the change: after a takeover,
    the old holder's prepare, switch, finish, abort, mark-bad, env write and unlock all stop."""
    paths = Paths(str(tmp_path))
    payload = make_tarball({"app.txt": b"v", "REVISION": b"r\n"})
    sha = hashlib.sha256(payload).hexdigest()
    (tmp_path / "shared").mkdir()
    assert lock(paths, "A").lock_acquired
    for n in (1, 2):
        prep = leased(
            paths,
            "A",
            commands.prepare(paths, n, "A", sha, upload=n == 1, release_json="{}"),
            payload if n == 1 else b"",
        )
        assert prep.returncode == 0, prep.stderr
    assert leased(paths, "A", commands.switch(paths, 1, "A")).returncode == 0
    age_heartbeat(paths, 60)
    assert lock(paths, "B").lock_acquired

    def snapshot():
        return sorted(
            (str(p.relative_to(tmp_path)), os.path.islink(p) and os.readlink(p))
            for p in tmp_path.rglob("*")
            if "lock" not in p.parts
        )

    before = snapshot()
    lost = [
        commands.prepare(paths, 3, "A", sha, upload=False, release_json="{}"),
        commands.switch(paths, 2, "A"),
        commands.unswitch(paths, 1),
        commands.finish(paths, "A", delete=["1", "2"], keep_artifacts=[]),
        commands.abort(paths, 2, "A"),
        commands.mark_bad(paths, 2, "bad"),
        commands.write_env(paths, ".env", "A", 1),
        user_command.in_release(paths, 2, "touch hook-ran", {}),
    ]
    for script in lost:
        proc = leased(paths, "A", script, b"K=v\n")
        assert proc.returncode == commands.LEASE_LOST and b"lost the lock" in proc.stderr, script
    assert snapshot() == before and os.readlink(paths.current) == "releases/1"
    sh(remote_lock.unlock(paths, "A"))
    assert Path(paths.lock_token).read_text() == "B"

    # and the new holder's own commands pass
    assert leased(paths, "B", commands.switch(paths, 2, "B")).returncode == 0
    assert leased(paths, "B", commands.finish(paths, "B", delete=[], keep_artifacts=[sha])).returncode == 0
    assert os.readlink(paths.current) == "releases/2" and not os.path.exists(paths.lock)


def test_the_lease_check_is_quoted_and_renews_only_its_own_lock():
    paths = Paths("/srv/my app")
    assert remote_lock.lease(paths, "t'x") == (
        "LEASE_TOKEN_FILE='/srv/my app/.deployer/lock/token'\nLEASE_TOKEN='t'\"'\"'x'\n"
        "LEASE_BEAT='/srv/my app/.deployer/lock/beat'\n" + render.text("lease.sh")
    )
    assert render.text("lease.sh").endswith("}\nheld\n")


def test_each_release_has_its_own_env_also_when_linked_and_push_rewrites_only_the_live_one(tmp_path):
    """prepare: the env becomes releases/N/.deployer/env (0600), `<env_file>` links to it,
    shared/<env_file> follows current; a linked redeploy gets its own file; write_env replaces the
    given release's only. Earlier hosts (one shared file linked into every release) are adopted."""
    paths = Paths(str(tmp_path / "app"))
    app = tmp_path / "app"
    files, manifest_sha = with_manifest({"REVISION": b"abc\n"})
    payload = make_tarball(files)
    sha = hashlib.sha256(payload).hexdigest()
    kw = dict(env_file="conf/app.env", shared_files=("conf/app.env",))

    def prepare(number, env, link=None):
        script = commands.prepare(
            paths,
            number,
            f"t{number}",
            sha,
            upload=link is None,
            release_json="{}",
            env_size=len(env),
            link_from=link and commands.LinkSource(link, manifest_sha),
            **kw,
        )
        proc = sh(script, env + (payload if link is None else b""))
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.decode()

    def env_of(n):
        return (app / "releases" / str(n) / "conf" / "app.env").read_bytes()

    # an earlier version's host: one shared file, linked (absolute) into release 1
    prepare(1, b"A=one\n")
    r1 = app / "releases" / "1"
    (r1 / ".deployer" / "env").unlink()
    (app / "shared" / "conf" / "app.env").unlink()  # the link the first prepare made
    (app / "shared" / "conf" / "app.env").write_bytes(b"A=legacy\n")
    (r1 / "conf" / "app.env").unlink()
    (r1 / "conf" / "app.env").symlink_to(app / "shared" / "conf" / "app.env")
    (app / "current").symlink_to("releases/1")

    assert "linked\t1" in prepare(2, b"A=two\n", link=1)
    assert env_of(1) == b"A=legacy\n" and env_of(2) == b"A=two\n"
    assert os.readlink(r1 / "conf" / "app.env") == "../.deployer/env"
    assert os.readlink(app / "shared" / "conf" / "app.env") == "../../current/conf/app.env"
    assert (app / "shared" / "conf" / "app.env").read_bytes() == b"A=legacy\n"  # live: still release 1's
    for n in (1, 2):
        assert (app / "releases" / str(n) / ".deployer" / "env").stat().st_mode & 0o777 == 0o600
    assert not list((app / ".deployer" / "cache").glob(".part-*"))  # the upload's temp env: gone

    proc = sh(commands.write_env(paths, "conf/app.env", "tok", 1, ledger='{"x": 1}'), b"A=pushed\n")
    assert proc.returncode == 0, proc.stderr
    assert env_of(1) == b"A=pushed\n" and env_of(2) == b"A=two\n"
    assert (app / "shared" / "conf" / "app.env").read_bytes() == b"A=pushed\n"
    assert (app / ".deployer" / "ledger.jsonl").read_text() == '{"x": 1}\n'
    assert sh(commands.read_env(paths, "conf/app.env")).stdout == b"A=pushed\n"
    proc = sh(commands.write_env(paths, "conf/app.env", "tok", 7), b"A=x\n")
    assert proc.returncode == commands.RELEASE_INCOMPLETE and b"release 7 is not complete" in proc.stderr


def test_a_shared_env_another_tools_release_links_to_stays_a_file(tmp_path):
    """Capistrano-style releases link shared/.env: it stays their file (a rollback to one of them
    gets its env, never a link loop through current); our releases get their own env."""
    paths = Paths(str(tmp_path / "app"))
    app = tmp_path / "app"
    payload = make_tarball({"REVISION": b"abc\n"})
    sha = hashlib.sha256(payload).hexdigest()
    theirs = app / "releases" / "20240101000000"
    theirs.mkdir(parents=True)
    (app / "shared").mkdir()
    (app / "shared" / ".env").write_bytes(b"A=capistrano\n")
    (theirs / ".env").symlink_to(app / "shared" / ".env")
    (app / "current").symlink_to(theirs)
    proc = sh(
        commands.prepare(paths, 1, "t1", sha, upload=True, release_json="{}", env_file=".env", env_size=6),
        b"A=us\n\n" + payload,
    )
    assert proc.returncode == 0, proc.stderr
    assert not (app / "shared" / ".env").is_symlink() and (theirs / ".env").read_bytes() == b"A=capistrano\n"
    assert (app / "releases" / "1" / ".env").read_bytes() == b"A=us\n\n"
    assert not (theirs / ".deployer").exists()
