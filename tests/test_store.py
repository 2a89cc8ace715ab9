"""The artifact store ([store]): its config, the S3 store against a real SeaweedFS, the host-side
download script run by a real shell against it, and `deployer publish`."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import Forwarder, Trickle, store_for
from test_json_contract import document

from deployer.artifact.build import build_artifact
from deployer.artifact.s3store import S3Store
from deployer.config import load
from deployer.config.settings import StoreSettings
from deployer.engine.pull import Background, Pull, pull_plan
from deployer.errors import STORE, ConfigError, StoreError, UsageError
from deployer.plan import releases
from deployer.plan.paths import Paths
from deployer.remote import commands
from deployer.remote import lock as remote_lock

BASE = '[app]\ndeploy_to = "/srv/a"\n[stages.s]\nhosts = ["h"]\n'


def parse(tmp_path: Path, store: str):
    return load.parse(BASE + "[store]\n" + store, tmp_path / "hosts.toml")


# ---------------------------------------------------------------- config


def test_store_table_is_read_with_its_defaults(tmp_path):
    cfg = parse(tmp_path, 'url = "s3://my-bucket/a/b/"\nendpoint = "http://127.0.0.1:9000/"\n')
    assert cfg.store == StoreSettings(
        bucket="my-bucket", prefix="a/b/", endpoint="http://127.0.0.1:9000", transfer="push", url_lifetime=900
    )
    assert cfg.store.hosts_reach == "http://127.0.0.1:9000"
    assert load.parse(BASE, tmp_path / "hosts.toml").store is None
    bare = parse(tmp_path, 'url = "s3://bucket"\nhost_endpoint = "http://10.0.0.5:8333"\ntransfer = "pull"\n').store
    assert (bare.prefix, bare.hosts_reach, bare.transfer) == ("", "http://10.0.0.5:8333", "pull")


@pytest.mark.parametrize("key", ["aws_access_key_id", "secret_access_key", "session_token", "password"])
def test_a_credential_in_hosts_toml_is_refused_with_one_line(tmp_path, key):
    with pytest.raises(ConfigError) as info:
        parse(tmp_path, f'url = "s3://bucket"\n{key} = "AKIAEXAMPLE"\n')
    message = str(info.value)
    assert len(message.splitlines()) == 1 and f"store.{key}" in message
    assert "credentials never go in hosts.toml" in message and "AKIAEXAMPLE" not in message


@pytest.mark.parametrize(
    "body, wanted",
    [
        ('url = "https://bucket"', "store.url: expected s3://bucket"),
        ('url = "s3://B_ad"', "store.url: expected s3://bucket"),
        ('endpoint = "x"', "store.url: missing"),
        ('url = "s3://bucket"\nendpoint = "localhost:9000"', "store.endpoint: expected an http(s) URL"),
        ('url = "s3://bucket"\ntransfer = "rsync"', "store.transfer: expected one of push, pull"),
        ('url = "s3://bucket"\nurl_lifetime = 0', "store.url_lifetime: expected seconds"),
    ],
)
def test_bad_store_values_are_named(tmp_path, body, wanted):
    with pytest.raises(ConfigError, match=re.escape(wanted)):
        parse(tmp_path, body + "\n")


# ---------------------------------------------------------------- the S3 store


def test_put_uploads_once_and_another_machine_gets_it_checked(s3_store, aws_env, app_repo, tmp_path):
    art = build_artifact(app_repo, "sample", tmp_path / "ci-out")
    store = store_for(s3_store, "put-get/", tmp_path / "unused")
    assert store.put(art) == [art.path.name, art.json_path.name]
    assert store.put(art) == []  # HEAD first: nothing uploaded again
    elsewhere = store_for(s3_store, "put-get/", tmp_path / "laptop-out")
    assert [a.version for a in elsewhere.list()] == [art.version]
    got = elsewhere.get(art.version)
    assert got.path == tmp_path / "laptop-out" / art.path.name and got.sha256 == art.sha256
    assert got.path.read_bytes() == art.path.read_bytes()
    assert elsewhere.get(art.sha256[:10]).version == art.version
    with pytest.raises(UsageError, match="no artifact 'nope' in s3://artifacts/put-get/"):
        elsewhere.get("nope")


def test_a_corrupted_object_is_refused_on_download(s3_store, aws_env, app_repo, tmp_path):
    art = build_artifact(app_repo, "sample", tmp_path / "ci-out")
    store = store_for(s3_store, "corrupt/", tmp_path / "x")
    store.put(art)
    s3_store.client().put_object(
        Bucket=s3_store.bucket, Key="corrupt/" + art.path.name, Body=art.path.read_bytes()[:-10] + b"0123456789"
    )
    with pytest.raises(Exception, match="sha256 mismatch"):
        store_for(s3_store, "corrupt/", tmp_path / "laptop").get(art.version)


def test_a_cancelled_publish_uploads_nothing(s3_store, aws_env, app_repo, tmp_path):
    """What a deploy that ended before prepare does to the publish still running beside it."""
    art = build_artifact(app_repo, "sample", tmp_path / "out")
    store = store_for(s3_store, "cancelled/", tmp_path / "c")
    store.cancel()
    with pytest.raises(StoreError, match="upload cancelled"):
        store.put(art)
    assert "Contents" not in s3_store.client().list_objects_v2(Bucket=s3_store.bucket, Prefix="cancelled/")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_store_down_and_no_credentials_are_one_line_store_errors(s3_store, aws_env, app_repo, tmp_path, monkeypatch):
    art = build_artifact(app_repo, "sample", tmp_path / "out")
    down = S3Store(StoreSettings(bucket="artifacts", endpoint=f"http://127.0.0.1:{closed_port()}"), tmp_path)
    with pytest.raises(StoreError, match="cannot check: unreachable or not answering") as info:
        down.put(art)
    assert info.value.exit_code == STORE and len(str(info.value).splitlines()) == 1
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(StoreError, match="cannot check: 403|SignatureDoesNotMatch|AccessDenied"):
        store_for(s3_store, "p/", tmp_path).put(art)
    for name in aws_env:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StoreError, match="no AWS credentials"):
        store_for(s3_store, "p/", tmp_path).put(art)


def test_the_publish_runs_beside_the_deploy_and_hands_its_result_or_error_over_once():
    """Background runs while the caller goes on; Pull waits for the tarball once, then signs each
    time; a failure raised in the thread is raised where the deploy waits."""
    go = threading.Event()
    seen: list[bool] = []

    def publish():
        seen.append(go.wait(5))  # only set once Background returned: it ran in a thread
        signs = iter(["a", "b"])
        return lambda: next(signs)

    job = Background(publish)
    go.set()
    waits: list[int] = []
    pull = Pull("http://store", fetchable=lambda: (waits.append(1), job.result())[1])
    assert [pull.presign(), pull.presign()] == ["a", "b"] and seen == [True] and waits == [1]

    def fail():
        raise StoreError("store s3://b/p: cannot check: unreachable or not answering (EndpointConnectionError)")

    failing = Pull("http://store", fetchable=Background(fail).result)
    with pytest.raises(StoreError, match="cannot check"):
        failing.presign()


# ---------------------------------------------------------------- the host's download, run here by sh


def pull_script(tmp_path: Path, sha: str, endpoint: str, **fetch) -> str:
    paths = Paths(str(tmp_path / "srv"))
    return remote_lock.unleased("") + commands.prepare(
        paths, 1, "tok", sha, upload=True, release_json="{}", fetch_from=endpoint, **fetch
    )


def run_pull(script: str, url: str, path: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": path} if path else None
    return subprocess.run(
        ["sh", "-c", script], input=(url + "\n").encode(), capture_output=True, timeout=timeout, env=env
    )


def no_curl_path(tmp_path: Path) -> str:
    """A PATH with everything the script needs but curl: the python3 fallback is taken."""
    bin_dir = tmp_path / "bin-no-curl"
    bin_dir.mkdir(exist_ok=True)
    for tool in (
        "sh",
        "cat",
        "mkdir",
        "rm",
        "mv",
        "tar",
        "gzip",
        "cut",
        "openssl",
        "sha256sum",
        "head",
        "find",
        "readlink",
        "awk",
        "ln",
        "printf",
        "python3",
        "wc",
        "tail",
        "sort",
        "xargs",
        "chmod",
        "touch",
    ):
        found = shutil.which(tool)
        if found and not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(found)
    (bin_dir / "python3").unlink(missing_ok=True)
    (bin_dir / "python3").symlink_to(sys.executable)
    return str(bin_dir)


@pytest.mark.parametrize("tool", ["curl", "python3"])
def test_the_host_script_pulls_checks_and_names_each_failure(s3_store, aws_env, app_repo, tmp_path, tool):
    """A real download from SeaweedFS by the prepare script; then the failures, each one line:
    a tampered signature, an expired URL, a missing object, a store nobody answers at."""
    path = no_curl_path(tmp_path) if tool == "python3" else None
    art = build_artifact(app_repo, "sample", tmp_path / "out")
    store = store_for(s3_store, f"script-{tool}/", tmp_path / "c", url_lifetime=120)
    store.put(art)
    url = store.presign(art)
    script = pull_script(tmp_path, art.sha256, s3_store.endpoint)
    assert "X-Amz" not in script and url not in script  # the URL travels on stdin only
    ok = run_pull(script, url, path)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "srv" / "releases" / "1" / "app.py").is_file()
    cached = tmp_path / "srv" / ".deployer" / "cache"
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in cached.iterdir()] == [art.sha256]

    def fails(u: str, why: str) -> None:
        shutil.rmtree(tmp_path / "srv")
        proc = run_pull(script, u, path)
        err = proc.stderr.decode()
        assert proc.returncode == commands.STORE_FETCH, err
        assert why in err and "X-Amz-Signature" not in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "srv" / "releases" / "1").exists()

    sig_at = url.index("X-Amz-Signature=") + len("X-Amz-Signature=")
    tampered = url[:sig_at] + ("0" if url[sig_at] != "0" else "1") + url[sig_at + 1 :]
    fails(tampered, "the store refused the URL (HTTP 403: expired, or its signature does not match)")
    fails(url.replace(art.path.name, "other.tar.gz"), "HTTP 403")  # the signature covers the key
    missing = S3Store(store.settings, tmp_path).client.generate_presigned_url(
        "get_object", Params={"Bucket": s3_store.bucket, "Key": "nothing/here.tar.gz"}, ExpiresIn=60
    )
    fails(missing, "the artifact is not in the store (HTTP 404)")
    short_lived = store_for(s3_store, f"script-{tool}/", tmp_path / "c", url_lifetime=1).presign(art)
    time.sleep(2.2)
    fails(short_lived, "HTTP 403: expired")
    port = closed_port()
    fails(
        url.replace(s3_store.endpoint, f"http://127.0.0.1:{port}"),
        f"cannot reach the store at {s3_store.endpoint} from this host",
    )


def test_the_host_script_still_checks_the_sha256_of_what_it_pulled(s3_store, aws_env, app_repo, tmp_path):
    art = build_artifact(app_repo, "sample", tmp_path / "out")
    store = store_for(s3_store, "sha/", tmp_path / "c")
    store.put(art)
    script = pull_script(tmp_path, "0" * 64, s3_store.endpoint)  # the operator expects another artifact
    proc = run_pull(script, store.presign(art))
    assert proc.returncode == commands.SHA_MISMATCH and b"artifact sha256 mismatch on host" in proc.stderr
    assert not (tmp_path / "srv" / "releases" / "1").exists()


class Relay:
    """A relay on loopback to the store that, once `at` bytes of a response went through, waits
    for `until()` (bounded) and then cuts the connection (cut) or flips that byte (flip)."""

    def __init__(self, target: tuple[str, int], at: int, mode: str, until=lambda: True):
        self.target, self.at, self.mode, self.until = target, at, mode, until
        self.waited_out = False  # `until` never came true
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with self.server:
            client, _ = self.server.accept()
        upstream = socket.create_connection(self.target, timeout=10)
        upstream.settimeout(None)
        threading.Thread(target=self._copy, args=(client, upstream), daemon=True).start()
        sent, done = 0, False
        with client, upstream:
            while data := upstream.recv(65536):
                if not done and sent + len(data) > self.at:
                    deadline = time.monotonic() + 20
                    while not self.until() and time.monotonic() < deadline:
                        time.sleep(0.02)
                    self.waited_out = not self.until()
                    cut, done = self.at - sent, True
                    if self.mode == "cut":
                        client.sendall(data[:cut])
                        client.shutdown(socket.SHUT_RDWR)  # close alone leaves a recv elsewhere blocked
                        return
                    data = data[:cut] + bytes([data[cut] ^ 0xFF]) + data[cut + 1 :]
                client.sendall(data)
                sent += len(data)

    @staticmethod
    def _copy(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_RDWR)  # the client is done: so is the relay
        except OSError:
            pass


def big_artifact(tmp_path: Path, size: int = 2 << 20) -> tuple[Path, str]:
    """A tarball whose first member is small and whose second is `size` (2 MB) random bytes."""
    src = tmp_path / "big-src"
    src.mkdir()
    (src / "a.txt").write_text("first\n")
    (src / "big.bin").write_bytes(os.urandom(size))
    path = tmp_path / "big.tar.gz"
    subprocess.run(["tar", "-czf", str(path), "-C", str(src), "a.txt", "big.bin"], check=True)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("tool", ["curl", "python3"])
def test_the_host_extracts_while_it_downloads_and_a_broken_download_fails_cleanly(s3_store, aws_env, tmp_path, tool):
    """tar has written the first member while the rest of the download is held back; a download
    cut mid-stream exits 26 naming it, a byte flipped mid-stream fails the sha256 (23): each one
    line, no release, no partial file, nothing cached."""
    path = no_curl_path(tmp_path) if tool == "python3" else None
    tarball, sha = big_artifact(tmp_path)
    key = f"stream-{tool}/big.tar.gz"
    s3_store.client().put_object(Bucket=s3_store.bucket, Key=key, Body=tarball.read_bytes())
    store_at = s3_store.endpoint.split("//")[1].rsplit(":", 1)
    target = (store_at[0], int(store_at[1]))
    srv = tmp_path / "srv"
    first = Path(Paths(str(srv)).tmp_release(1, "tok")) / "a.txt"
    script = pull_script(tmp_path, sha, s3_store.endpoint)

    def through(relay: Relay) -> subprocess.CompletedProcess:
        shutil.rmtree(srv, ignore_errors=True)
        signer = dataclasses.replace(s3_store, endpoint=f"http://127.0.0.1:{relay.port}").client()
        url = signer.generate_presigned_url("get_object", Params={"Bucket": s3_store.bucket, "Key": key}, ExpiresIn=60)
        return run_pull(script, url, path)

    def left_nothing(proc: subprocess.CompletedProcess, code: int, why: str) -> None:
        err = proc.stderr.decode()
        assert proc.returncode == code and why in err and len(err.strip().splitlines()) == 1, err
        assert not (srv / "releases" / "1").exists()
        assert [p.name for p in (srv / ".deployer" / "cache").iterdir()] == []

    held = Relay(target, 1 << 20, "flip", until=first.exists)
    assert through(held).returncode == commands.SHA_MISMATCH and not held.waited_out, "tar ran while downloading"
    ok = Relay(target, 1 << 40, "flip")
    proc = through(ok)
    assert proc.returncode == 0, proc.stderr
    assert (srv / "releases" / "1" / "big.bin").stat().st_size == 2 << 20
    cut = Relay(target, 1 << 20, "cut", until=first.exists)
    left_nothing(through(cut), commands.STORE_FETCH, "broke before the whole artifact arrived")
    flipped = Relay(target, 1 << 20, "flip")
    left_nothing(through(flipped), commands.SHA_MISMATCH, "artifact sha256 mismatch on host")


def test_the_host_download_bound_follows_the_artifact_size():
    """The connect, one stall's margin, and the size at 256 KiB/s, rounded up."""
    assert releases.fetch_max_time(0, 30) == 40
    assert releases.fetch_max_time(1, 30) == 41
    assert releases.fetch_max_time(100 << 20, 30) == 10 + 30 + 400
    assert releases.fetch_max_time((100 << 20) + 1, 5) == 10 + 5 + 401


@pytest.mark.parametrize("tool", ["curl", "python3"])
@pytest.mark.parametrize("pace", ["stalled", "too slow"])
def test_a_store_that_trickles_fails_the_download_in_bounded_time_naming_it(s3_store, aws_env, tmp_path, tool, pace):
    """A store that accepted the connection, then sends 1 byte every 2 s, is stalled once under
    1 KiB/s for stall_timeout (3 s here); one that sends 8 KiB/s, above that, still outlasts what
    the artifact's size allows (10 + 3 + 512 KiB and a bit at 256 KiB/s: 16 s; it needs a minute).
    Either way: exit 28, one line naming the store, no release, nothing cached."""
    path = no_curl_path(tmp_path) if tool == "python3" else None
    tarball, sha = big_artifact(tmp_path, 512 << 10)
    key = f"trickle-{tool}-{pace.replace(' ', '-')}/big.tar.gz"
    s3_store.client().put_object(Bucket=s3_store.bucket, Key=key, Body=tarball.read_bytes())
    bound = releases.fetch_max_time(tarball.stat().st_size, 3)
    trickle = Trickle(s3_store, every=2, size=1) if pace == "stalled" else Trickle(s3_store, every=0.5, size=4096)
    try:
        signer = dataclasses.replace(s3_store, endpoint=trickle.endpoint).client()
        url = signer.generate_presigned_url("get_object", Params={"Bucket": s3_store.bucket, "Key": key}, ExpiresIn=90)
        script = pull_script(tmp_path, sha, trickle.endpoint, fetch_stall=3, fetch_max=bound)
        proc = run_pull(script, url, path, timeout=45)
    finally:
        trickle.close()
    err = proc.stderr.decode()
    assert proc.returncode == commands.STORE_STALLED and bound == 16, err
    assert err.strip().splitlines() == [
        f"artifact download failed: store {trickle.endpoint} too slow / stalled while this host fetched the "
        f"artifact (under 1 KiB/s for 3s, or not done within {bound}s)"
    ]
    srv = tmp_path / "srv"
    assert not (srv / "releases" / "1").exists()
    assert [p.name for p in (srv / ".deployer" / "cache").iterdir()] == []


# ---------------------------------------------------------------- deployer publish


def cli(config: Path, *args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deployer", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        cwd=config.parent,
    )


def test_publish_uploads_then_skips_and_fails_in_one_line(s3_store, app_repo, tmp_path):
    import toml

    doc = {
        "app": {"name": "sample", "deploy_to": "/srv/app"},
        "build": {"source": str(app_repo)},
        "stages": {"s": {"hosts": ["h"]}},
        **s3_store.config("publish"),
    }
    config = tmp_path / "hosts.toml"
    config.write_text(toml.dumps(doc))
    first = cli(config, "publish", "--json", env=s3_store.env)
    assert first.returncode == 0, first.stderr
    record = document(first, "publish", "ok")
    assert len(record["uploaded"]) == 2 and "published" in first.stderr
    again = cli(config, "publish", "--version", record["version"], env=s3_store.env)
    assert again.returncode == 0, again.stderr
    assert f"is already in s3://artifacts/publish/ at {s3_store.endpoint}: nothing uploaded" in again.stdout
    keys = [o["Key"] for o in s3_store.client().list_objects_v2(Bucket="artifacts", Prefix="publish/")["Contents"]]
    assert sorted(keys) == sorted(f"publish/{name}" for name in record["uploaded"])

    bad = cli(config, "publish", "--version", "nope", env=s3_store.env)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: no artifact 'nope' in " + str(tmp_path / "artifacts") + " (see: deployer artifacts)"
    ]
    doc["store"]["endpoint"] = f"http://127.0.0.1:{closed_port()}"
    config.write_text(toml.dumps(doc))
    document(cli(config, "publish", "--json", env=s3_store.env), "publish", "store_unavailable")
    down = cli(config, "publish", env=s3_store.env)
    assert down.returncode == STORE and len(down.stderr.strip().splitlines()) == 1, down.stderr
    assert "cannot check: unreachable or not answering" in down.stderr and "Traceback" not in down.stderr
    del doc["store"]
    config.write_text(toml.dumps(doc))
    none = cli(config, "publish", env=s3_store.env)
    assert none.returncode == 2 and "no [store] table" in none.stderr


def test_a_store_that_stops_answering_mid_publish_fails_it_naming_the_store(s3_store, app_repo, tmp_path):
    """The store takes the upload's connection and then says nothing (paused): publish shows the
    upload starting, gives up after stall_timeout (2 s here) on each of its 2 attempts, and exits
    6 with one line naming the store, where boto3's defaults would wait minutes."""
    import toml

    at = s3_store.endpoint.split("//")[1].rsplit(":", 1)
    paused = Forwarder((at[0], int(at[1])), hold=b"PUT ")
    endpoint = f"http://127.0.0.1:{paused.port}"
    doc = {
        "app": {"name": "sample", "deploy_to": "/srv/app"},
        "build": {"source": str(app_repo)},
        "stages": {"s": {"hosts": ["h"]}},
        **s3_store.config("paused", endpoint=endpoint, stall_timeout=2),
    }
    config = tmp_path / "hosts.toml"
    config.write_text(toml.dumps(doc))
    try:
        proc = cli(config, "publish", env=s3_store.env)
    finally:
        paused.close()
    assert proc.returncode == STORE, proc.stdout + proc.stderr
    assert paused.held == 2  # the first attempt and one retry, nothing more
    assert proc.stderr.strip().splitlines() == [
        f"error: store s3://artifacts/paused/ at {endpoint}: cannot upload: too slow / stalled "
        "(no answer within stall_timeout, 2s; 2 attempts)"
    ]
    assert re.search(r"store +publish +uploading sample-\S+\.tar\.gz \(\d+ B\) to s3://artifacts/paused/", proc.stdout)


def test_put_sends_the_json_only_once_approved(s3_store, aws_env, app_repo, tmp_path):
    """before_json runs between the tarball and its .json: the tarball may be in the store before
    the artifact's checks end, the .json (what lists it) only after; one that raises sends none."""
    art = build_artifact(app_repo, "sample", tmp_path / "out")
    store = store_for(s3_store, "approved/", tmp_path / "a")
    seen: list[list[str]] = []

    def keys() -> list[str]:
        listed = s3_store.client().list_objects_v2(Bucket=s3_store.bucket, Prefix="approved/")
        return sorted(o["Key"] for o in listed.get("Contents", []))

    assert store.put(art, before_json=lambda: seen.append(keys())) == [art.path.name, art.json_path.name]
    assert seen == [["approved/" + art.path.name]] and keys() == sorted(
        ["approved/" + art.path.name, "approved/" + art.json_path.name]
    )

    other = store_for(s3_store, "refused/", tmp_path / "r")

    def refuse() -> None:
        raise StoreError("refused")

    with pytest.raises(StoreError, match="refused"):
        other.put(art, before_json=refuse)
    listed = s3_store.client().list_objects_v2(Bucket=s3_store.bucket, Prefix="refused/").get("Contents", [])
    assert [o["Key"] for o in listed] == ["refused/" + art.path.name]
    assert other.list() == []


def test_hosts_may_fetch_the_tarball_while_its_json_waits(s3_store, aws_env, app_repo, tmp_path):
    """pull_plan hands out a URL as soon as the tarball is in the store: the hosts fetch it while
    the .json (what lists the artifact) still waits; `published` waits for that, and says so."""
    import urllib.request

    art = build_artifact(app_repo, "sample", tmp_path / "out")
    cfg = load.parse(
        BASE + "[store]\n" + f'url = "s3://{s3_store.bucket}/early/"\nendpoint = "{s3_store.endpoint}"\n',
        tmp_path / "hosts.toml",
    )
    said: list[str] = []
    out = type("Out", (), {"say": lambda self, line: said.append(line), "line": lambda self, *a: None, "live": False})()
    approved = threading.Event()
    pull = pull_plan(cfg, art, out, approved=approved)
    url = pull.presign()
    with urllib.request.urlopen(url, timeout=30) as got:
        assert hashlib.sha256(got.read()).hexdigest() == art.sha256
    listed = s3_store.client().list_objects_v2(Bucket=s3_store.bucket, Prefix="early/").get("Contents", [])
    assert [o["Key"] for o in listed] == ["early/" + art.path.name]  # no .json yet: not listed
    finished = Background(pull.published)
    time.sleep(0.3)
    assert not said, "published returned before the .json was approved"
    approved.set()
    finished.result()
    assert said == [f"published {art.version} to s3://{s3_store.bucket}/early/ at {s3_store.endpoint}"]
    assert [a.sha256 for a in store_for(s3_store, "early/", tmp_path / "c").list()] == [art.sha256]


def test_a_cancel_while_put_waits_for_approval_sends_no_json(s3_store, aws_env, app_repo, tmp_path):
    """The deploy's refusal path: the tarball is up, put waits for the checks, the run cancels."""
    art = build_artifact(app_repo, "sample", tmp_path / "out")
    store = store_for(s3_store, "cancel-wait/", tmp_path / "w")
    approved, waiting, outcome = threading.Event(), threading.Event(), []

    def approval() -> None:
        waiting.set()
        approved.wait(30)

    def put() -> None:
        try:
            outcome.append(store.put(art, before_json=approval))
        except StoreError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=put)
    worker.start()
    assert waiting.wait(30), "put never reached its approval"
    store.cancel()
    approved.set()
    worker.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], StoreError), outcome
    listed = s3_store.client().list_objects_v2(Bucket=s3_store.bucket, Prefix="cancel-wait/").get("Contents", [])
    assert [o["Key"] for o in listed] == ["cancel-wait/" + art.path.name]
