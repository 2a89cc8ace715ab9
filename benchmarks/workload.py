"""A realistic, deterministic release to deploy: mostly text source files, some binaries.

``generate_tree`` yields the same files (names, modes, bytes) for the same parameters on every
machine (a seeded ``random.Random``; nothing depends on time or locale). Two ways to turn it into
an artifact the CLI accepts with ``--artifact``:

* ``git_artifact``: write it into a fresh git repo (fixed identity and dates), commit, and build
  with the product's own ``build_artifact`` - what ops do;
* ``direct_artifact``: stream it straight into a ``.tar.gz`` + ``.json`` that ``load_artifact``
  accepts (for very large artifacts, where a git round trip would only add minutes).

Sizes: ``target_mb`` is the size of the compressed tarball. Text files are generated from a large
random vocabulary so they compress like real source; random binary files (images,
shared objects, fonts) fill the rest of the target and do not compress at all.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import json
import os
import random
import subprocess
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MB = 1024 * 1024
COMMIT_DATE = "2024-01-01T00:00:00+00:00"
COMMIT_TS = 1704067200
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@localhost",
    "GIT_AUTHOR_DATE": COMMIT_DATE,
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@localhost",
    "GIT_COMMITTER_DATE": COMMIT_DATE,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}

TEXT_KINDS = (  # (directory, extension, weight)
    ("app/{pkg}", ".py", 40),
    ("app/{pkg}/templates", ".html", 12),
    ("static/js/{pkg}", ".js", 16),
    ("static/css", ".css", 5),
    ("locale/{lang}/LC_MESSAGES", ".po", 4),
    ("docs/{pkg}", ".md", 8),
    ("config/{pkg}", ".json", 6),
    ("tests/{pkg}", ".py", 9),
)
BINARY_KINDS = (
    ("static/img/{pkg}", ".png"),
    ("static/fonts", ".woff2"),
    ("vendor/lib", ".so"),
    ("data/models", ".bin"),
)
LANGS = ("de", "en", "es", "fr", "it", "ja", "nl", "pl", "pt", "ru", "sv", "zh")


@dataclass(frozen=True)
class Spec:
    target_mb: float = 20.0  # compressed tarball size to reach (at least)
    text_files: int = 3200
    text_kb: float = 6.0  # mean size of a text file (uncompressed)
    binary_files: int = 120
    seed: int = 8

    @property
    def file_count(self) -> int:
        return self.text_files + self.binary_files + 3  # + bin/ scripts, REVISION added by the build


@dataclass
class File:
    path: str
    data: bytes = b""
    mode: int = 0o644
    link: str | None = None  # a symlink when set


def _vocabulary(rng: random.Random, n: int = 6000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = set()
    while len(words) < n:
        words.add("".join(rng.choice(letters) for _ in range(rng.randint(3, 11))))
    return sorted(words)


def _text(rng: random.Random, vocab: list[str], ext: str, size: int) -> bytes:
    """Source-like lines of about `size` bytes: identifiers, numbers, hex ids, indentation."""
    lines, total = [], 0
    while total < size:
        indent = "    " * rng.randint(0, 3)
        words = rng.choices(vocab, k=rng.randint(2, 9))
        r = rng.random()
        if r < 0.1:
            line = f"{indent}# {' '.join(words)}"
        elif r < 0.2:
            line = f"{indent}{words[0]} = {rng.randint(0, 10 ** rng.randint(1, 9))}"
        elif r < 0.27:
            line = f'{indent}{words[0]}_id = "{rng.getrandbits(64):016x}"'
        elif ext == ".py" and r < 0.4:
            line = f"{indent}def {words[0]}_{words[1]}({', '.join(words[2:])}):"
        else:
            line = f"{indent}{words[0]}.{words[1]}({', '.join(words[2:])})"
        lines.append(line)
        total += len(line) + 1
    return ("\n".join(lines) + "\n").encode()


def generate_tree(spec: Spec) -> Iterator[File]:
    """Every file of the release, in a fixed order. Binary sizes are chosen so the compressed
    tarball reaches spec.target_mb."""
    rng = random.Random(spec.seed)
    vocab = _vocabulary(rng)
    pkgs = [f"{w}" for w in rng.sample(vocab, 40)]
    weights = [k[2] for k in TEXT_KINDS]
    text_stream = zlib.compressobj(9)  # the text as one deflate stream, like the tarball's gzip
    compressed = 0
    for i in range(spec.text_files):
        directory, ext, _ = rng.choices(TEXT_KINDS, weights=weights)[0]
        directory = directory.format(pkg=rng.choice(pkgs), lang=rng.choice(LANGS))
        size = max(64, int(rng.lognormvariate(0, 0.9) * spec.text_kb * 1024 / 1.5))
        data = _text(rng, vocab, ext, size)
        compressed += len(text_stream.compress(data))
        yield File(f"{directory}/{rng.choice(vocab)}_{i:05d}{ext}", data)
    for name in ("bin/server", "bin/migrate"):
        yield File(name, b'#!/bin/sh\nexec python3 -m app "$@"\n', 0o755)
    yield File("static/current-logo.png", link="img/logo.png")
    compressed += len(text_stream.flush())
    # Binary data does not compress (+ a little gzip framing); 2 % over the target covers the
    # difference in file order between this estimate and the tarball.
    remaining = max(0, int(spec.target_mb * MB * 1.02) - compressed)
    n = max(1, spec.binary_files)
    for i in range(n):
        directory, ext = BINARY_KINDS[i % len(BINARY_KINDS)]
        directory = directory.format(pkg=pkgs[i % len(pkgs)])
        size = remaining // n + (remaining % n if i == n - 1 else 0)
        yield File(f"{directory}/blob_{i:04d}{ext}", rng.randbytes(size))
    yield File("static/img/logo.png", rng.randbytes(4096))


# --- as a git repo + build_artifact --------------------------------------------------------------


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], env={**os.environ, **GIT_ENV}, check=True, capture_output=True)


def write_tree(spec: Spec, root: Path) -> int:
    """Write the files under root; return how many."""
    count = 0
    for f in generate_tree(spec):
        path = root / f.path
        path.parent.mkdir(parents=True, exist_ok=True)
        if f.link is not None:
            os.symlink(f.link, path)
        else:
            path.write_bytes(f.data)
            path.chmod(f.mode)
        count += 1
    return count


def git_artifact(spec: Spec, workdir: Path, name: str = "benchapp", log=lambda msg: None):
    """A git repo with one commit of the tree, built with deployer.artifact.build.build_artifact."""
    from deployer.artifact.build import build_artifact

    repo = Path(workdir) / "repo"
    if repo.exists():
        raise FileExistsError(f"{repo} exists; use a fresh workdir")
    repo.mkdir(parents=True)
    write_tree(spec, repo)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", f"benchmark release {spec}")
    return build_artifact(repo, name, Path(workdir) / "artifacts", log=log)


# --- straight into a tarball ---------------------------------------------------------------------


def direct_artifact(
    spec: Spec, out_dir: Path, name: str = "benchbig", version: str = "20240101000000-0000000", compresslevel: int = 1
):
    """Stream the tree into out_dir/<name>-<version>.tar.gz plus the .json load_artifact reads."""
    from deployer.artifact.load import load_artifact

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tar_path = out_dir / f"{name}-{version}.tar.gz"
    unpacked = files = 0
    dirs: set[str] = set()
    with open(tar_path, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="", compresslevel=compresslevel) as gz:
            with tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tf:
                # Streamed in generation order (sorting would hold every file in memory).
                entries = itertools.chain(generate_tree(spec), [File("REVISION", b"0" * 40 + b"\n")])
                for f in entries:
                    parts = f.path.split("/")
                    for i in range(1, len(parts)):
                        d = "/".join(parts[:i])
                        if d not in dirs:
                            dirs.add(d)
                            ti = tarfile.TarInfo(d)
                            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, COMMIT_TS
                            tf.addfile(ti)
                    ti = tarfile.TarInfo(f.path)
                    ti.mtime = COMMIT_TS
                    if f.link is not None:
                        ti.type, ti.mode, ti.linkname = tarfile.SYMTYPE, 0o777, f.link
                        tf.addfile(ti)
                        continue
                    ti.mode, ti.size = f.mode, len(f.data)
                    tf.addfile(ti, io.BytesIO(f.data))
                    unpacked += len(f.data)
                    files += 1
    h = hashlib.sha256()
    with open(tar_path, "rb") as fh:
        while chunk := fh.read(MB):
            h.update(chunk)
    meta = {
        "name": name,
        "version": version,
        "git_sha": None,
        "sha256": h.hexdigest(),
        "size": tar_path.stat().st_size,
        "unpacked_size": unpacked,
        "file_count": files,
        "dirty": False,
    }
    tar_path.with_name(f"{name}-{version}.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return load_artifact(tar_path)
