"""Delta releases, the pure parts: the plan, the delta tarball, and the host script run by a real
`sh` against scratch directories (a base release, then the new one built from it and verified).
On real hosts: tests/test_delta_hosts.py."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from deployer.artifact import delta as artifact_delta
from deployer.artifact.build import build_artifact
from deployer.plan.paths import MANIFEST, Paths
from deployer.remote import commands
from deployer.remote import delta as remote_delta

UNFENCED = "held() { :; }\n"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z",  # the artifact's times: long before the host's clock
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z",
}


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, env={**os.environ, **GIT_ENV})


def commit(repo: Path, files: dict[str, bytes | str | None], msg: str, out: Path, version: str):
    """Write (bytes), symlink (str) or delete (None) files, commit, build."""
    for rel, data in files.items():
        p = repo / rel
        if data is None:
            p.unlink()
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.is_symlink() or p.exists():
            p.unlink()
        if isinstance(data, str):
            p.symlink_to(data)
        else:
            p.write_bytes(data)
    (repo / "bin").mkdir(exist_ok=True)
    (repo / "bin/run").write_text("#!/bin/sh\necho run\n")
    (repo / "bin/run").chmod(0o755)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", msg)
    return build_artifact(repo, "app", out, version=version, log=lambda m: None)


@pytest.fixture()
def two(tmp_path):
    repo = tmp_path / "src"
    repo.mkdir()
    git(repo, "init", "-q")
    files = {f"app/mod{i}.py": (f"print({i})\n" * 50).encode() for i in range(30)}
    files["static/logo.png"] = os.urandom(4096)
    files["static/link"] = "logo.png"
    files["empty/.keep"] = b""
    a = commit(repo, files, "one", tmp_path / "out", "v1")
    b = commit(
        repo,
        {
            "app/mod3.py": b"changed\n",
            "app/new.py": ("print(7)\n" * 50).encode(),
            "app/mod9.py": None,
            "static/link2": "link",
        },
        "two",
        tmp_path / "out",
        "v2",
    )
    return tmp_path, a, b


def listing(root: Path) -> list[tuple]:
    """Every entry under root: path, type, mode, sha256 or link target (as the tests compare trees)."""
    out = []
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            st = p.lstat()
            if p.is_symlink():
                out.append((rel, "l", os.readlink(p)))
            elif p.is_dir():
                out.append((rel, "d", oct(st.st_mode & 0o7777)))
            else:
                out.append((rel, "f", oct(st.st_mode & 0o7777), hashlib.sha256(p.read_bytes()).hexdigest()))
    return sorted(out)


def mtimes(root: Path) -> dict[str, int]:
    """Every file's and directory's time but the deployer's own (a full extraction leaves the
    artifact's; tarfile leaves a symlink's as it was made)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            rel = str(Path(dirpath, name).relative_to(root))
            if rel != ".deployer" and not rel.startswith(".deployer/") and not Path(dirpath, name).is_symlink():
                out[rel] = int(Path(dirpath, name).lstat().st_mtime)
    return out


def extract(art, dest: Path) -> None:
    dest.mkdir(parents=True)
    with tarfile.open(art.path) as tf:
        tf.extractall(dest, filter="tar")


def host_with_base(tmp: Path, art) -> Paths:
    paths = Paths(str(tmp / "host"))
    extract(art, Path(paths.release(1)))
    Path(paths.release_state(1), "complete").touch()
    return paths


def tools_without(names: tuple[str, ...], where: Path) -> str:
    """A PATH holding every command of this one but those whose name starts with one of `names`."""
    where.mkdir()
    for d in os.environ["PATH"].split(os.pathsep):
        for f in sorted(Path(d).iterdir()) if Path(d).is_dir() else ():
            if not f.name.startswith(names) and not (where / f.name).exists() and os.access(f, os.X_OK):
                (where / f.name).symlink_to(f)
    return str(where)


@pytest.fixture(scope="module", params=["python3", "sh"])
def host_path(request, tmp_path_factory):
    """How the host builds the tree: delta_build.py (cp hidden: the shell steps could not copy)
    or the shell steps of prepare_delta.sh (python3 hidden)."""
    hide = ("cp",) if request.param == "python3" else ("python",)
    return tools_without(hide, tmp_path_factory.mktemp("tools") / "bin")


def prepare_delta(paths: Paths, art, base_manifest: dict, tmp: Path, number: int = 2, path: str | None = None):
    dest = tmp / f"delta-{number}.tar.gz"
    tree, plan = artifact_delta.make(art.path, base_manifest, dest)
    spec = remote_delta.Spec(
        1, hashlib.sha256(dest.read_bytes()).hexdigest(), tree.manifest_sha256, tree.listing_sha256, tree.mtime
    )
    script = commands.prepare(paths, number, "tok", art.sha256, upload=True, release_json="{}", delta=spec)
    env = {**os.environ, "PATH": path} if path else None
    proc = subprocess.run(
        ["sh", "-c", UNFENCED + script], input=dest.read_bytes(), capture_output=True, timeout=60, env=env
    )
    return proc, plan, dest


def test_tree_digests_match_the_artifact(two):
    _, a, _ = two
    tree = artifact_delta.read_tree(a.path)
    assert tree.manifest_sha256 == a.meta["manifest_sha256"]
    assert tree.files == a.manifest
    kinds = {e.path: (e.kind, e.mode) for e in tree.entries}
    assert kinds["bin/run"] == ("f", 0o755) and kinds["static/link"] == ("l", 0o777) and kinds["app"] == ("d", 0o755)


def test_plan_sends_only_new_content(two):
    _, a, b = two
    _, plan = artifact_delta.make(b.path, a.manifest, None)
    assert plan.send == {"app/mod3.py", "REVISION"}
    assert plan.pairs == (("app/mod7.py", "app/new.py"),)
    assert set(plan.skip) == {"app/mod3.py", "app/mod9.py", "REVISION"}
    assert plan.reused == len(b.manifest) - 3


def test_delta_is_reproducible_and_small(two, tmp_path):
    _, a, b = two
    artifact_delta.make(b.path, a.manifest, tmp_path / "x.tar.gz")
    artifact_delta.make(b.path, a.manifest, tmp_path / "y.tar.gz")
    assert (tmp_path / "x.tar.gz").read_bytes() == (tmp_path / "y.tar.gz").read_bytes()
    with tarfile.open(tmp_path / "x.tar.gz") as tf:
        files = {m.name for m in tf.getmembers() if m.isreg()}
    control = {f"{artifact_delta.CONTROL}/{n}" for n in ("skip", "pairs", "exec", "links")}
    assert files == {"app/mod3.py", "REVISION"} | control


def test_host_builds_the_same_tree_as_a_full_extraction(two, host_path):
    tmp, a, b = two
    paths = host_with_base(tmp, a)
    proc, _, _ = prepare_delta(paths, b, a.manifest, tmp, path=host_path)
    assert proc.returncode == 0, proc.stderr.decode()
    extract(b, tmp / "full")
    got = [e for e in listing(Path(paths.release(2))) if not e[0].startswith(".deployer/") or e[0] == MANIFEST]
    assert got == listing(tmp / "full")
    assert mtimes(Path(paths.release(2))) == mtimes(tmp / "full")
    assert Path(paths.release(2), MANIFEST).read_bytes() == Path(tmp / "full", MANIFEST).read_bytes()
    assert not list(Path(paths.releases).glob(".tmp-*")) and not list(Path(paths.cache).iterdir())
    # copies, never links: an in-place write in the old release stays there
    inodes = {os.stat(Path(paths.release(n), "app/mod1.py")).st_ino for n in (1, 2)}
    assert len(inodes) == 2


@pytest.mark.parametrize("edit", ["content", "mode", "extra", "missing", "symlink"])
def test_an_edited_base_is_never_spread(two, edit, host_path):
    tmp, a, b = two
    paths = host_with_base(tmp, a)
    victim = Path(paths.release(1), "app/mod1.py")
    if edit == "content":
        with open(victim, "r+b") as fh:  # in place, same size
            fh.write(b"X")
    elif edit == "mode":
        victim.chmod(0o600)
    elif edit == "extra":
        manifest = Path(paths.release(1), MANIFEST)
        manifest.write_text(manifest.read_text() + f"{'0' * 64}  app/stray.py\n")
        Path(paths.release(1), "app/stray.py").write_text("x")
    elif edit == "missing":
        victim.unlink()
    else:
        victim.unlink()
        victim.symlink_to("/etc/passwd")
    proc, _, _ = prepare_delta(paths, b, a.manifest, tmp, path=host_path)
    if edit == "mode":  # modes come from the artifact, never from the base
        assert proc.returncode == 0, proc.stderr.decode()
        assert oct(Path(paths.release(2), "app/mod1.py").stat().st_mode & 0o777) == "0o644"
        return
    assert proc.returncode == remote_delta.UNUSABLE, proc.stderr.decode()
    assert remote_delta.MARK in proc.stderr.decode()
    assert not Path(paths.release(2)).exists() and not list(Path(paths.releases).glob(".tmp-*"))
    assert Path("/etc/passwd").stat().st_mode & 0o777 != 0o755


def test_a_delta_damaged_in_transit_is_refused(two):
    tmp, a, b = two
    paths = host_with_base(tmp, a)
    tree = artifact_delta.read_tree(b.path)
    spec = remote_delta.Spec(1, "0" * 64, tree.manifest_sha256, tree.listing_sha256, tree.mtime)
    script = commands.prepare(paths, 2, "tok", b.sha256, upload=True, release_json="{}", delta=spec)
    proc = subprocess.run(["sh", "-c", UNFENCED + script], input=b"garbage", capture_output=True, timeout=60)
    assert proc.returncode == commands.SHA_MISMATCH
    assert not Path(paths.release(2)).exists()


def test_a_gone_base_is_unusable(two):
    tmp, a, b = two
    paths = host_with_base(tmp, a)
    Path(paths.release_state(1), "complete").unlink()
    proc, _, _ = prepare_delta(paths, b, a.manifest, tmp)
    assert proc.returncode == remote_delta.UNUSABLE


def test_too_big_a_delta_is_not_made(two, tmp_path):
    _, a, b = two
    with pytest.raises(artifact_delta.TooBig):
        artifact_delta.make(b.path, {}, tmp_path / "x.tar.gz", limit=1000)


def test_not_eligible_artifacts(tmp_path):
    odd = tmp_path / "odd.tar.gz"
    with tarfile.open(odd, "w:gz") as tf:
        ti = tarfile.TarInfo("a.txt")
        ti.mode = 0o600
        tf.addfile(ti, io.BytesIO(b""))
    with pytest.raises(artifact_delta.NotEligible):
        artifact_delta.read_tree(odd)


def test_shared_paths_are_sent_not_copied(two):
    """A shared path in the base is a link to shared/: its files come from the delta instead."""
    _, a, b = two
    _, plan = artifact_delta.make(b.path, a.manifest, None, exclude=("static",))
    assert "static/logo.png" in plan.send and "static/logo.png" in plan.skip
