import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from helpers import git, tar_member, write_tar_gz

from deployer.artifact.build import build_artifact
from deployer.artifact.fsutil import sha256_file
from deployer.artifact.load import Artifact, load_artifact, revision_problem
from deployer.artifact.members import check_members, checked_record
from deployer.errors import ArtifactError

COMMIT_DATE = "2024-01-02T03:04:05+00:00"
COMMIT_TS = 1704164645
SAMPLE_APP = Path(__file__).resolve().parent.parent / "deployer" / "sandbox" / "sample_app"


def write(path, text="", mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mode is not None:
        path.chmod(mode)
    return path


def commit_all(repo, msg="c", date=COMMIT_DATE):
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", msg, date=date)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path):
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q")
    write(r / "app.py", "print('hi')\n")
    write(r / "bin" / "run", "#!/bin/sh\necho run\n", mode=0o775)
    write(r / "lib" / "deep" / "mod.py", "X = 1\n", mode=0o600)
    os.symlink("app.py", r / "main.py")
    write(r / ".gitignore", "*.log\n")
    commit_all(r)
    return r


def build(repo, out, **kw):
    kw.setdefault("log", lambda *_: None)
    return build_artifact(repo, "demo", out, **kw)


def members(path):
    with tarfile.open(path, "r:gz") as tf:
        return {m.name: m for m in tf.getmembers()}


def read_member(path, name):
    with tarfile.open(path, "r:gz") as tf:
        return tf.extractfile(name).read()


# ---------------------------------------------------------------- building


def test_rebuild_is_byte_identical(repo, tmp_path):
    a = build(repo, tmp_path / "out1")
    b = build(repo, tmp_path / "out2")
    assert a.path.read_bytes() == b.path.read_bytes()
    assert a.sha256 == b.sha256 == sha256_file(b.path)
    assert a.path.name == b.path.name
    assert a.meta["manifest_sha256"] == b.meta["manifest_sha256"]


def test_tarball_normalisation(repo, tmp_path):
    art = build(repo, tmp_path / "out")
    raw = art.path.read_bytes()
    assert raw[:3] == b"\x1f\x8b\x08"
    assert raw[3] & 0x08 == 0  # no FNAME in gzip header
    assert raw[4:8] == b"\x00\x00\x00\x00"  # gzip mtime 0
    with tarfile.open(art.path, "r:gz") as tf:
        ms = tf.getmembers()
    names = [m.name for m in ms]
    assert names == sorted(names)
    assert names == [
        ".deployer",
        ".deployer/manifest.sha256",
        ".gitignore",
        "REVISION",
        "app.py",
        "bin",
        "bin/run",
        "lib",
        "lib/deep",
        "lib/deep/mod.py",
        "main.py",
    ]
    by = {m.name: m for m in ms}
    for m in ms:
        assert m.mtime == COMMIT_TS
        assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "")
    assert by["bin"].isdir() and by["bin"].mode == 0o755
    assert by["bin/run"].mode == 0o755
    assert by["app.py"].mode == 0o644
    assert by["lib/deep/mod.py"].mode == 0o644
    assert by["main.py"].issym() and by["main.py"].linkname == "app.py"


def test_revision_and_version(repo, tmp_path):
    sha = git(repo, "rev-parse", "HEAD")
    art = build(repo, tmp_path / "out")
    assert read_member(art.path, "REVISION") == (sha + "\n").encode()
    assert art.version == f"20240102030405-{sha[:7]}"
    assert re.fullmatch(r"\d{14}-[0-9a-f]{7}", art.version)
    assert art.git_sha == sha
    assert art.path == (tmp_path / "out" / f"demo-{art.version}.tar.gz").resolve()
    assert art.json_path.is_file()


def test_version_uses_committer_date_in_utc(repo, tmp_path):
    write(repo / "app.py", "print('v2')\n")
    commit_all(repo, date="2024-06-30T23:30:00-02:00")
    art = build(repo, tmp_path / "out")
    assert art.version.startswith("20240701013000-")


def test_explicit_version(repo, tmp_path):
    art = build(repo, tmp_path / "out", version="1.2.3")
    assert art.version == "1.2.3" and art.path.name == "demo-1.2.3.tar.gz"
    with pytest.raises(ArtifactError, match="invalid version"):
        build(repo, tmp_path / "out", version="../x")


def test_dirty_tree_refused(repo, tmp_path):
    write(repo / "app.py", "changed\n")
    write(repo / "new.txt", "new\n")
    # each file named, the untracked one as such (an untracked hosts.toml is the usual surprise)
    with pytest.raises(
        ArtifactError,
        match=r"is dirty: app.py \(modified\), new.txt \(untracked\); commit, "
        r"or ignore \(.gitignore\) what is untracked, or pass --allow-dirty",
    ):
        build(repo, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_dirty_tree_allowed(repo, tmp_path):
    write(repo / "app.py", "changed\n")
    write(repo / "new.txt", "new\n")
    write(repo / "debug.log", "ignored\n")
    (repo / "lib" / "deep" / "mod.py").unlink()
    art = build(repo, tmp_path / "out", allow_dirty=True)
    assert art.version.endswith("-dirty") and art.dirty and art.meta["dirty"] is True
    ms = members(art.path)
    assert read_member(art.path, "app.py") == b"changed\n"
    assert "new.txt" in ms
    assert "debug.log" not in ms
    assert "lib/deep/mod.py" not in ms
    assert ms["main.py"].issym()


def test_untracked_files_not_packed_from_clean_tree(repo, tmp_path):
    write(repo / "junk.log", "ignored junk\n")  # ignored => tree still clean
    art = build(repo, tmp_path / "out")
    assert "junk.log" not in members(art.path)
    assert not art.dirty


def test_subdirectory_source(repo, tmp_path):
    write(repo / "lib" / "other.txt", "o\n")
    commit_all(repo)
    write(repo / "elsewhere.txt", "dirty outside the subdir\n")  # does not make lib/ dirty
    art = build(repo / "lib", tmp_path / "out")
    names = sorted(members(art.path))
    assert names == [".deployer", ".deployer/manifest.sha256", "REVISION", "deep", "deep/mod.py", "other.txt"]
    assert set(art.meta["manifest"]) == {"REVISION", "deep/mod.py", "other.txt"}


def test_build_command_output_included(repo, tmp_path):
    logs = []
    art = build(
        repo,
        tmp_path / "out",
        log=logs.append,
        command='mkdir -p dist && echo built > dist/out.txt && echo "$DEPLOYER_VERSION" > VERSION '
        "&& echo hello-from-build",
    )
    ms = members(art.path)
    assert read_member(art.path, "dist/out.txt") == b"built\n"
    assert read_member(art.path, "VERSION") == (art.version + "\n").encode()
    assert ms["dist"].isdir()
    assert any("hello-from-build" in line for line in logs)


def test_build_command_reproducible(repo, tmp_path):
    cmd = "mkdir -p dist && date -u -d @$SOURCE_DATE_EPOCH > dist/stamp"
    a = build(repo, tmp_path / "o1", command=cmd)
    b = build(repo, tmp_path / "o2", command=cmd)
    assert a.sha256 == b.sha256


def test_include_limits_command_output(repo, tmp_path):
    cmd = "mkdir -p dist cache && echo d > dist/a && echo c > cache/b && rm app.py"
    art = build(repo, tmp_path / "out", command=cmd, include=["dist"])
    ms = members(art.path)
    assert "dist/a" in ms and "dist" in ms
    assert "cache/b" not in ms and "cache" not in ms
    assert "app.py" not in ms  # removed by the command
    assert {"bin/run", "lib/deep/mod.py", "main.py", "REVISION"} <= set(ms)


def test_include_must_exist(repo, tmp_path):
    with pytest.raises(ArtifactError, match="include path 'dist' does not exist"):
        build(repo, tmp_path / "out", include=["dist"])
    with pytest.raises(ArtifactError, match="must be relative"):
        build(repo, tmp_path / "out", include=["../x"])


def test_build_command_failure(repo, tmp_path):
    with pytest.raises(ArtifactError) as ei:
        build(repo, tmp_path / "out", command="echo about-to-fail; exit 3")
    msg = str(ei.value)
    assert "exit code 3" in msg and "about-to-fail" in msg and "\n" not in msg
    assert not list((tmp_path / "out").iterdir())  # no partial output


def test_metadata(repo, tmp_path):
    sha = git(repo, "rev-parse", "HEAD")
    art = build(repo, tmp_path / "out")
    meta = json.loads(art.json_path.read_text())
    assert meta == art.meta
    text = art.json_path.read_text()
    assert text == json.dumps(meta, indent=2, sort_keys=True) + "\n"
    for key in (
        "name",
        "version",
        "git_sha",
        "sha256",
        "size",
        "unpacked_size",
        "file_count",
        "built_at",
        "built_by",
        "dirty",
        "manifest",
        "manifest_sha256",
    ):
        assert key in meta
    assert meta["name"] == "demo" and meta["git_sha"] == sha and meta["dirty"] is False
    assert meta["sha256"] == sha256_file(art.path)
    assert meta["size"] == art.path.stat().st_size
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["built_at"])
    assert "@" in meta["built_by"]

    expected = {}
    with tarfile.open(art.path, "r:gz") as tf:
        for m in tf.getmembers():
            if m.isreg() and m.name != ".deployer/manifest.sha256":
                expected[m.name] = hashlib.sha256(tf.extractfile(m).read()).hexdigest()
    assert meta["manifest"] == expected
    assert list(meta["manifest"]) == sorted(expected)
    assert meta["file_count"] == len(expected) == 5
    assert meta["unpacked_size"] == sum(len(read_member(art.path, n)) for n in expected)
    lines = "".join(f"{expected[p]}  {p}\n" for p in sorted(expected))
    assert read_member(art.path, ".deployer/manifest.sha256").decode() == lines
    assert meta["manifest_sha256"] == hashlib.sha256(lines.encode()).hexdigest()
    # built_at/built_by are not in the tarball
    assert "built_at" not in art.path.read_bytes().decode("latin-1")


def test_not_a_git_tree(tmp_path):
    d = tmp_path / "plain"
    d.mkdir()
    with pytest.raises(ArtifactError, match="is not inside a git work tree"):
        build(d, tmp_path / "out")


def test_no_commits(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    git(d, "init", "-q")
    with pytest.raises(ArtifactError, match="no commits"):
        build(d, tmp_path / "out")


def test_build_refuses_symlink_outside(repo, tmp_path):
    os.symlink("../../etc/passwd", repo / "bad")
    commit_all(repo)
    with pytest.raises(ArtifactError, match="refusing to pack 'bad': symlink points outside"):
        build(repo, tmp_path / "out")


def test_build_refuses_reserved_dir(repo, tmp_path):
    write(repo / ".deployer" / "complete", "x\n")
    commit_all(repo)
    with pytest.raises(ArtifactError, match=r"refusing to pack '\.deployer/complete'"):
        build(repo, tmp_path / "out")


def test_sample_app_artifact(tmp_path):
    r = tmp_path / "repo"
    shutil.copytree(SAMPLE_APP, r / "sample_app", ignore=shutil.ignore_patterns("__pycache__"))
    git(r, "init", "-q")
    sha = commit_all(r)
    art = build(r / "sample_app", tmp_path / "out")
    check_members(art.path)
    rel = tmp_path / "release"
    with tarfile.open(art.path, "r:gz") as tf:
        tf.extractall(rel, filter="data")
    out = subprocess.run([sys.executable, str(rel / "bin" / "selftest")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"sample {sha[:7]} {sha[:7]}"
    assert os.access(rel / "bin" / "selftest", os.X_OK)


# ---------------------------------------------------------------- check_members


def make_tar(path, entries):
    """entries: list of (name, kind, extra) with kind in file/dir/sym/lnk/chr/fifo."""
    kinds = {
        "dir": {"type": tarfile.DIRTYPE, "mode": 0o755},
        "chr": {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3},
        "fifo": {"type": tarfile.FIFOTYPE},
    }
    members = []
    for name, kind, extra in entries:
        if kind == "file":
            data = (extra or "x").encode() if not isinstance(extra, int) else b"x"
            members.append(tar_member(name, data, **({"mode": extra} if isinstance(extra, int) else {})))
        elif kind in ("sym", "lnk"):
            members.append(tar_member(name, type=tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE, linkname=extra))
        else:
            members.append(tar_member(name, **kinds[kind]))
    return write_tar_gz(path, members)


def test_check_members_accepts_normal(tmp_path, repo):
    p = make_tar(
        tmp_path / "ok.tar.gz",
        [
            ("app", "dir", None),
            ("app/x.py", "file", "x"),
            ("link", "sym", "app/x.py"),
            ("app/up", "sym", "../link"),
            ("hard", "lnk", "app/x.py"),
            ("./dot", "file", "y"),
        ],
    )
    check_members(p)
    check_members(build(repo, tmp_path / "out").path)


@pytest.mark.parametrize(
    "entries, bad, why",
    [
        ([("../x", "file", "x")], "../x", r"\.\."),
        ([("a/../../x", "file", "x")], "a/../../x", r"\.\."),
        ([("/etc/x", "file", "x")], "/etc/x", "absolute"),
        ([("a", "sym", "/etc"), ("a/passwd", "file", "x")], "a", "outside"),
        ([("a", "sym", "b"), ("b", "dir", None), ("a/x", "file", "x")], "a/x", "through symlink 'a'"),
        ([("d", "dir", None), ("d/l", "sym", "../../x")], "d/l", "outside"),
        ([("l", "sym", "../../x")], "l", "outside"),
        ([("s", "dir", None), ("s/b", "sym", ".."), ("s/a", "sym", "b/..")], "s/a", "outside"),
        ([("loop", "sym", "loop")], "loop", "loop"),
        ([("h", "lnk", "../outside")], "h", "hardlink"),
        ([("h", "lnk", "/etc/passwd")], "h", "hardlink"),
        ([("h", "lnk", "missing")], "h", "hardlink target 'missing'"),
        ([("dev", "chr", None)], "dev", "device"),
        ([("pipe", "fifo", None)], "pipe", "fifo"),
        ([("suid", "file", 0o4755)], "suid", "setuid"),
        ([("sgid", "file", 0o2755)], "sgid", "setgid"),
        ([(".deployer", "dir", None), (".deployer/complete", "file", "x")], ".deployer/complete", "reserved"),
        ([(".deployer/complete", "file", "x")], ".deployer/complete", "reserved"),
        ([("ok", "file", "x"), ("ok", "sym", "elsewhere")], "ok", "duplicate"),
    ],
)
def test_check_members_rejects(tmp_path, entries, bad, why):
    p = make_tar(tmp_path / "bad.tar.gz", entries)
    with pytest.raises(ArtifactError, match=why) as ei:
        check_members(p)
    assert f"'{bad}'" in str(ei.value)
    assert "\n" not in str(ei.value)


def test_check_members_not_a_tarball(tmp_path):
    p = tmp_path / "junk.tar.gz"
    p.write_bytes(b"not a tarball at all")
    with pytest.raises(ArtifactError, match="refused: not a gzip-compressed tar archive"):
        check_members(p)


def test_member_check_recorded_per_sha256(tmp_path, monkeypatch):
    import deployer.artifact.members as members_mod

    good = make_tar(tmp_path / "good.tar.gz", [("app/x.py", "file", "x")])
    evil = make_tar(tmp_path / "evil.tar.gz", [("../x", "file", "x")])
    good_sha, evil_sha = sha256_file(good), sha256_file(evil)
    assert not checked_record(good_sha).exists()
    check_members(good, good_sha)
    assert checked_record(good_sha).is_file()
    assert str(checked_record(good_sha)).startswith(os.environ["XDG_CACHE_HOME"])
    with pytest.raises(ArtifactError):
        check_members(evil, evil_sha)
    assert not checked_record(evil_sha).exists()  # a failed check is never recorded

    scans = []
    real_scan = members_mod.scan_tarball
    monkeypatch.setattr(members_mod, "scan_tarball", lambda *a, **k: scans.append(a) or real_scan(*a, **k))
    check_members(good, good_sha)
    assert scans == []  # same bytes, same rules: not scanned again
    with pytest.raises(ArtifactError):
        check_members(evil, evil_sha)  # still scanned, still refused
    monkeypatch.setattr(members_mod, "MEMBER_RULES", "test-next")
    check_members(good, good_sha)
    assert len(scans) == 2  # new rules: earlier records do not count


def test_build_and_load_record_the_check(repo, tmp_path):
    art = build(repo, tmp_path / "out")
    assert checked_record(art.sha256).is_file()  # packing checked the members
    checked_record(art.sha256).unlink()
    art.json_path.unlink()
    load_artifact(art.path)  # without JSON it scans, and records
    assert checked_record(art.sha256).is_file()


def test_builds_are_one_gzip_member_ending_at_the_end_marker(repo, tmp_path):
    """What the member check insists on, our own builds always are."""
    import zlib

    from deployer.artifact import tarscan

    art = build(repo, tmp_path / "out")
    z = zlib.decompressobj(16 + zlib.MAX_WBITS)
    tar = z.decompress(art.path.read_bytes())
    assert z.eof and z.unused_data == b""
    assert [m.name for m in tarscan.scan(art.path).members] == sorted(members(art.path))
    assert tar.rstrip(b"\0") and len(tar) % 512 == 0


def test_shared_paths_never_under_an_artifact_symlink(repo, tmp_path):
    """A symlink member at or above a shared path is refused, for a fresh build (from the record
    its packing wrote) as for any tarball; other shared paths pass."""
    art = build(repo, tmp_path / "out")  # main.py -> app.py
    assert check_members(art.path, art.sha256, ("log", "tmp/pids")).unpacked_size > 0
    for shared in (("main.py",), ("log", "main.py/x")):
        with pytest.raises(ArtifactError, match="unsafe member 'main.py': a symlink at or above shared path"):
            check_members(art.path, art.sha256, shared)
    p = make_tar(tmp_path / "t.tar.gz", [("data", "dir", None), ("tmp", "sym", "data")])
    with pytest.raises(ArtifactError, match="unsafe member 'tmp': a symlink at or above shared path 'tmp/pids'"):
        check_members(p, sha256_file(p), ("tmp/pids",))
    with pytest.raises(ArtifactError, match="'tmp': a symlink at or above"):
        check_members(p, sha256_file(p), ("tmp/pids",))  # a second time: from the record


def test_unpacked_size_is_measured_never_taken_from_a_sidecar(tmp_path):
    """The free-disk check's figure comes from the member check's own reading of the stream."""
    from deployer.artifact.choice import chosen

    p = make_tar(tmp_path / "big.tar.gz", [("blob", "file", "x" * 300_000), ("b", "file", "y" * 1000)])
    p.with_name("big.json").write_text(
        json.dumps(
            {"name": "big", "version": "1", "sha256": sha256_file(p), "size": p.stat().st_size, "unpacked_size": 1}
        )
    )
    art = chosen(None, str(p), False, lambda line: None)
    assert art.meta["unpacked_size"] == 301_000


# ---------------------------------------------------------------- load_artifact


def test_load_artifact_roundtrip(repo, tmp_path):
    art = build(repo, tmp_path / "out")
    loaded = load_artifact(art.path)
    assert isinstance(loaded, Artifact)
    assert loaded.meta == art.meta and loaded.sha256 == art.sha256
    assert load_artifact(art.json_path).path == art.path


def test_load_artifact_detects_sha_mismatch(repo, tmp_path):
    art = build(repo, tmp_path / "out")
    meta = json.loads(art.json_path.read_text())
    meta["sha256"] = "0" * 64
    art.json_path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        load_artifact(art.path)


def test_load_artifact_detects_modified_file(repo, tmp_path):
    art = build(repo, tmp_path / "out")
    with open(art.path, "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        load_artifact(art.path)


def test_load_artifact_without_json(repo, tmp_path):
    art = build(repo, tmp_path / "out")
    art.json_path.unlink()
    loaded = load_artifact(art.path)
    assert loaded.sha256 == art.sha256
    assert loaded.version == art.version and loaded.meta["name"] == "demo"
    assert loaded.git_sha == art.git_sha
    assert loaded.size == art.size
    assert loaded.meta["file_count"] == art.meta["file_count"]


def test_load_artifact_without_json_checks_members(tmp_path):
    p = make_tar(tmp_path / "evil-1.tar.gz", [("../x", "file", "x")])
    with pytest.raises(ArtifactError, match=r"'\.\./x'"):
        load_artifact(p)
    with pytest.raises(ArtifactError, match="not found"):
        load_artifact(tmp_path / "nope.tar.gz")


@pytest.mark.parametrize(
    "key, value",
    [
        ("size", "big"),
        ("size", True),
        ("size", -1),
        ("version", 7),
        ("version", ["v1"]),
        ("git_sha", 1),
        ("file_count", "3"),
        ("unpacked_size", 1.5),
        ("dirty", "no"),
        ("manifest", []),
        ("manifest_sha256", None),
        ("built_at", {"t": 1}),
    ],
)
def test_load_artifact_refuses_metadata_of_the_wrong_type_naming_the_key(repo, tmp_path, key, value):
    art = build(repo, tmp_path / "out")
    meta = json.loads(art.json_path.read_text())
    meta[key] = value
    art.json_path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=f"^metadata {re.escape(art.json_path.name)}: '{key}' must (not )?be "):
        load_artifact(art.path)


def test_a_malformed_json_beside_artifact_is_bad_input_in_one_line(repo, tmp_path):
    """`deploy --artifact` and `artifacts` with a hand-edited .json beside the tarball: exit 2 and
    one line naming the key (the deploy), a listing without it (artifacts); no traceback, no host
    contacted (the configured one does not exist)."""
    out = tmp_path / "out"
    art = build(repo, out)
    meta = json.loads(art.json_path.read_text())
    meta["size"] = "big"
    art.json_path.write_text(json.dumps(meta))
    config = write(
        tmp_path / "hosts.toml",
        f'[app]\nname = "demo"\ndeploy_to = "/srv/demo"\n'
        f'[build]\noutput = "{out}"\n'
        '[stages.s]\nhosts = [{ host = "127.0.0.1", port = 9 }]\n',
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "deployer", *args, "--config", str(config)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    proc = cli("deploy", "--artifact", str(art.path))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        f"error: metadata {art.json_path.name}: 'size' must be a whole number, got \"big\""
    ]
    listed = cli("artifacts")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr


def test_the_json_must_name_the_commit_the_artifact_holds():
    sha, other = "a" * 40, "b" * 40
    assert revision_problem({"git_sha": sha, "version": f"20260101000000-{sha[:7]}"}, sha) is None
    assert revision_problem({"version": "1.2.3"}, sha) is None  # says nothing of the commit
    assert revision_problem({"version": f"20260101000000-{sha[:7]}-dirty", "git_sha": None}, sha) is None
    assert revision_problem({"git_sha": sha}, other) == f"names git sha {sha}, but the artifact holds git sha {other}"
    assert revision_problem({"git_sha": sha}, None) == f"names git sha {sha}, but the artifact holds no REVISION"
    assert revision_problem({"version": f"20260101000000-{sha[:7]}"}, other) == (
        f"names version 20260101000000-{sha[:7]}, but the artifact holds git sha {other}"
    )
