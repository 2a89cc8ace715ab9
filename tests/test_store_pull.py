"""Pull deploys against the real store: sshd hosts fetch the artifact from SeaweedFS by a presigned
URL (passed on stdin), check its sha256, and fail their prepare cleanly, naming the cause, when the
URL expired, the store is down or the host cannot reach it."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tarfile

import pytest
import toml
from helpers import (
    Forwarder,
    ProcessLists,
    Trickle,
    cli,
    cli_popen,
    commit_change,
    current,
    release_dirs,
    tar_member,
    wait_until,
    write_tar_gz,
)

from deployer.errors import STORE

pytestmark = pytest.mark.slow


def reconfigure(sb, **store) -> None:
    doc = toml.loads(sb.config_path.read_text())
    doc["store"].update(store)
    sb.config_path.write_text(toml.dumps(doc))


def ledger(sb, host) -> str:
    return sb.exec(host, "cat /srv/app/.deployer/ledger* 2>/dev/null")[1]


def no_url_anywhere(sb, proc) -> None:
    for text in (proc.stdout, proc.stderr, *(ledger(sb, h) for h in sb.hosts)):
        assert "X-Amz-Signature" not in text and "X-Amz-Credential" not in text


def test_hosts_pull_the_published_artifact_and_push_still_overrides(sandbox, s3_store, app_repo):
    sb = sandbox(2, **s3_store.config("pull-ok", transfer="pull"))
    dry = cli(sb, "deploy", "--dry-run", env=s3_store.env)
    assert dry.returncode == 0, dry.stderr
    no_url_anywhere(sb, dry)
    assert "Contents" not in s3_store.client().list_objects_v2(Bucket="artifacts", Prefix="pull-ok/"), (
        "a dry run publishes nothing"
    )
    before = {h.name: sb.command_count(h) for h in sb.hosts}
    proc = cli(sb, "deploy", env=s3_store.env)
    assert proc.returncode == 0, proc.stderr
    assert "published" in proc.stdout and proc.stdout.count("fetched from the store, sha256 checked") == 2
    for h in sb.hosts:
        assert current(sb, h) == "releases/1"
        assert sb.exec(h, "cat /srv/app/current/app.py")[0] == 0
        assert sb.command_count(h) - before[h.name] <= 4, "round-trip budget: <= 4 remote commands per host"
    no_url_anywhere(sb, proc)
    keys = [o["Key"] for o in s3_store.client().list_objects_v2(Bucket="artifacts", Prefix="pull-ok/")["Contents"]]
    assert len(keys) == 2

    commit_change(app_repo, "app.py", "print('v2')\n")
    pushed = cli(sb, "deploy", "--transfer", "push", env=s3_store.env)
    assert pushed.returncode == 0, pushed.stderr
    assert "fetched from the store" not in pushed.stdout and "s3://" not in pushed.stdout
    assert all(current(sb, h) == "releases/2" for h in sb.hosts)

    # another machine: nothing built here, the version comes from the store
    version = [line for line in proc.stdout.splitlines() if line.startswith("deployed ")][0].split()[1]
    shutil.rmtree(sb.config_path.parent / "artifacts")
    again = cli(sb, "deploy", "--version", version, env=s3_store.env)
    assert again.returncode == 0, again.stderr
    assert "already in s3://artifacts/pull-ok/" in again.stdout
    assert all(current(sb, h) == "releases/3" for h in sb.hosts)


# a fetcher in PATH ahead of the real one: holds (bounded) until the test lets it go, then runs
# the real one with the same arguments and stdin, so the process list shows what it was given
HOLD = "touch /tmp/fetch-held; i=0; while [ -e /tmp/hold-fetch ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done"
FETCHERS = {  # name -> (wrapper, what its held line in `ps` shows)
    "curl": (f'#!/bin/sh\n{HOLD}\nexec /usr/bin/curl "$@"\n', ("/usr/local/bin/curl ", "http_code")),
    "python3": (
        f'#!/bin/sh\ncase "$2" in *urlopen*) {HOLD};; esac\nexec /usr/bin/python3 "$@"\n',
        ("/usr/local/bin/python3 -c", "urlopen"),
    ),
}


def test_the_presigned_url_never_shows_in_a_hosts_process_list(sandbox, s3_store):
    """host-1 fetches with curl, host-2 (no curl) with python3; both are held in the process list
    while the test samples `ps` on the hosts, then let go and sampled until the deploy ends: no
    sample holds the URL's signature, and each host was seen fetching."""
    sb = sandbox(2, **s3_store.config("pull-ps", transfer="pull"))
    sb.exec(1, "mv /usr/bin/curl /usr/bin/curl.off")
    fetchers = dict(zip((h.name for h in sb.hosts), FETCHERS, strict=True))
    for h in sb.hosts:
        path = f"/usr/local/bin/{fetchers[h.name]}"
        wrapper = FETCHERS[fetchers[h.name]][0]
        code, out = sb.exec(h, f"cat > {path} <<'EOF'\n{wrapper}EOF\nchmod 755 {path}; touch /tmp/hold-fetch")
        assert code == 0, out

    def seen_fetching(name: str) -> bool:
        marks = FETCHERS[fetchers[name]][1]
        lines = (line for host, out in list(ps.samples) if host == name for line in out.splitlines())
        return any(all(m in line for m in marks) for line in lines)

    proc = cli_popen(sb, "deploy", env=s3_store.env)
    ps = ProcessLists(sb)
    try:
        wait_until(lambda: all(seen_fetching(h.name) for h in sb.hosts), 60, "both hosts seen fetching")
        for h in sb.hosts:
            sb.exec(h, "rm -f /tmp/hold-fetch")
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        ps.stop()
    assert proc.returncode == 0, out + err
    assert out.count("fetched from the store, sha256 checked") == 2, out
    assert all(sb.exec(h, "test -e /tmp/fetch-held")[0] == 0 for h in sb.hosts)  # through the held fetchers
    assert all(current(sb, h) == "releases/1" for h in sb.hosts)
    leaked = ps.showing("X-Amz-Signature") + ps.showing("X-Amz-Credential")
    assert not leaked, leaked[0]
    no_url_anywhere(sb, subprocess.CompletedProcess([], 0, out, err))


def test_a_failed_pull_fails_prepare_before_any_switch_naming_the_cause(sandbox, s3_store):
    sb = sandbox(2, **s3_store.config("pull-fail", transfer="pull"))
    first = cli(sb, "deploy", env=s3_store.env)
    assert first.returncode == 0, first.stderr
    before = {h.name: release_dirs(sb, h) for h in sb.hosts}
    for h in sb.hosts:
        sb.exec(h, "rm -rf /srv/app/.deployer/cache/*")  # make every host fetch again

    def fails(why: str, code: int = 1, **store) -> str:
        reconfigure(sb, **store)
        proc = cli(sb, "deploy", env=s3_store.env)
        assert proc.returncode == code, proc.stdout + proc.stderr
        assert why in proc.stdout + proc.stderr, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
        no_url_anywhere(sb, proc)
        for h in sb.hosts:
            assert current(sb, h) == "releases/1" and release_dirs(sb, h) == before[h.name]
            assert sb.exec(h, "test -e /srv/app/.deployer/lock")[0] != 0, "lock released"
        return proc.stderr

    unreachable = s3_store.host_endpoint.rsplit(":", 1)[0] + ":1"
    fails(f"cannot reach the store at {unreachable} from this host", host_endpoint=unreachable)
    # signed for longer than it lives: a before_prepare hook outlasts the URL
    doc = toml.loads(sb.config_path.read_text())
    doc["hooks"] = {"before_prepare": [{"local": "sleep 3"}]}
    sb.config_path.write_text(toml.dumps(doc))
    fails("the store refused the URL (HTTP 403: expired", host_endpoint=s3_store.host_endpoint, url_lifetime=1)
    # the publish runs while the hosts are locked: its failure aborts before any prepare, one line
    err = fails("unreachable or not answering", code=STORE, endpoint=unreachable.replace(":1", ":2"), url_lifetime=900)
    assert err.strip().splitlines() == [err.strip()] and "deploy aborted before any prepare: store s3://" in err


def test_a_refused_artifact_is_never_listed_in_the_store(sandbox, s3_store, tmp_path):
    """The publish starts while the artifact's members are checked; only the .json (what makes it
    a listed, deployable artifact) waits for the check, and a refused artifact never gets one."""
    sb = sandbox(1, **s3_store.config("pull-refused", transfer="pull"))
    path = write_tar_gz(
        tmp_path / "evil-1.tar.gz",
        [tar_member("REVISION", b"x\n"), tar_member("a", type=tarfile.SYMTYPE, linkname="/etc"), tar_member("b")],
    )
    data = path.read_bytes()
    path.with_suffix("").with_suffix(".json").write_text(
        json.dumps({"name": "evil", "version": "1", "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
    )
    count = sb.command_count(sb.hosts[0])
    proc = cli(sb, "deploy", "--artifact", str(path), env=s3_store.env)
    assert proc.returncode == 2 and "unsafe member 'a'" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    listed = s3_store.client().list_objects_v2(Bucket="artifacts", Prefix="pull-refused/").get("Contents", [])
    assert not [o["Key"] for o in listed if o["Key"].endswith(".json")], listed
    assert sb.command_count(sb.hosts[0]) == count  # no host was contacted


def test_a_publish_that_fails_after_the_hosts_fetched_aborts_before_any_switch(sandbox, s3_store, app_repo, tmp_path):
    """The hosts fetch the tarball while its .json still goes up; if that fails (the store went
    down meanwhile), nothing switches: exit STORE, one line, partial releases gone, locks released."""
    at = s3_store.endpoint.split("//")[1].rsplit(":", 1)
    path = Forwarder((at[0], int(at[1])))  # the operator's way to the store (the hosts go direct)
    sb = sandbox(2, **s3_store.config("pull-json", transfer="pull", endpoint=f"http://127.0.0.1:{path.port}"))
    first = cli(sb, "deploy", env=s3_store.env)
    assert first.returncode == 0, first.stderr
    before = {h.name: release_dirs(sb, h) for h in sb.hosts}
    commit_change(app_repo, "app.py", "print('v2')\n")
    flag = tmp_path / "json-held"
    proc = cli_popen(sb, "deploy", env={**s3_store.env, "DEPLOYER_TEST_PAUSE_BEFORE": f"publish-json:{flag}"})
    try:
        wait_until(flag.exists, 60, "the publish to reach its .json")
        for h in sb.hosts:  # the hosts prepare while the .json is held
            wait_until(lambda h=h: sb.exec(h, "test -d /srv/app/releases/2")[0] == 0, 60, f"{h.name} prepared")
        path.close()
        flag.unlink()
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == STORE, out + err
    assert "deploy aborted before any switch: store s3://" in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    no_url_anywhere(sb, subprocess.CompletedProcess([], proc.returncode, out, err))
    for h in sb.hosts:
        assert current(sb, h) == "releases/1" and release_dirs(sb, h) == before[h.name]
        assert sb.exec(h, "test -e /srv/app/.deployer/lock")[0] != 0, "lock released"
    listed = s3_store.client().list_objects_v2(Bucket="artifacts", Prefix="pull-json/").get("Contents", [])
    assert len([o for o in listed if o["Key"].endswith(".json")]) == 1, listed  # the first deploy's only


def test_a_store_that_trickles_fails_each_hosts_prepare_naming_it(sandbox, s3_store):
    """The store accepts the hosts' connections, then sends 1 byte every 2 s: host-1 (curl) and
    host-2 (no curl: python3) each give up after stall_timeout (3 s here) under 1 KiB/s, long
    before command_timeout, with one line naming the store; nothing switched, locks released."""
    trickle = Trickle(s3_store, every=2, size=1, inside=True)
    try:
        sb = sandbox(
            2,
            ssh={"command_timeout": 60},
            **s3_store.config("pull-trickle", transfer="pull", host_endpoint=trickle.endpoint, stall_timeout=3),
        )
        sb.exec(1, "mv /usr/bin/curl /usr/bin/curl.off")
        proc = cli(sb, "deploy", env=s3_store.env)
    finally:
        trickle.close()
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    for h in sb.hosts:
        why = f"artifact download failed: store {trickle.endpoint} too slow / stalled while this host fetched"
        assert any(line.startswith(h.name + " ") and why in line for line in proc.stdout.splitlines()), out
        assert current(sb, h) == "" and release_dirs(sb, h) == []
        assert sb.exec(h, "test -e /srv/app/.deployer/lock")[0] != 0, "lock released"
    assert "command timed out" not in out and "Traceback" not in proc.stderr
    no_url_anywhere(sb, proc)


def test_a_store_that_stops_answering_aborts_the_pull_deploy_naming_it(sandbox, s3_store):
    """The store takes the publish's upload and then says nothing (paused) while the deploy holds
    every host's lock: after stall_timeout (2 s here) on each of its 2 attempts the deploy aborts
    before any prepare, exit 6, one line naming the store; locks released (a push deploy then
    goes through at once), nothing changed."""
    at = s3_store.endpoint.split("//")[1].rsplit(":", 1)
    paused = Forwarder((at[0], int(at[1])), hold=b"PUT ")
    endpoint = f"http://127.0.0.1:{paused.port}"
    sb = sandbox(2, **s3_store.config("pull-paused", transfer="pull", endpoint=endpoint, stall_timeout=2))
    try:
        proc = cli(sb, "deploy", env=s3_store.env)
    finally:
        paused.close()
    assert proc.returncode == STORE, proc.stdout + proc.stderr
    assert paused.held == 2
    err = proc.stderr.strip()
    assert err.splitlines() == [err] and "Traceback" not in err
    assert err.startswith(
        f"error: deploy aborted before any prepare: store s3://artifacts/pull-paused/ at {endpoint}: "
        "cannot upload: too slow / stalled"
    ), err
    assert "uploading sample-" in proc.stdout
    for h in sb.hosts:
        assert current(sb, h) == "" and release_dirs(sb, h) == []
        assert sb.exec(h, "test -e /srv/app/.deployer/lock")[0] != 0, "lock released"
    pushed = cli(sb, "deploy", "--transfer", "push", env=s3_store.env)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr


def test_debug_logging_never_shows_what_signs_a_request(sandbox, s3_store, tmp_path):
    """`deploy --debug` with pull turns on botocore's log, whose signer writes each request's
    canonical request, string to sign and signature (with the presigned URL's query: enough to
    rebuild a working URL). None of it reaches the output; the rest of the log does."""
    sb = sandbox(1, **s3_store.config("pull-debug", transfer="pull"))
    proc = cli(sb, "--debug", "deploy", env=s3_store.env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout + proc.stderr
    assert "botocore" in text and "Sending http request" in text  # the log is there
    for leak in (
        "CanonicalRequest",
        "StringToSign",
        "Signature:",
        "AWS4-HMAC-SHA256\n",
        s3_store.env["AWS_SECRET_ACCESS_KEY"],
    ):
        assert leak not in text, leak
    assert not re.search(r"Signature=(?!••••••)", text) and not re.search(r"Credential=(?!••••••)", text)
    # every 64-hex string left is a sha256 of something published (or of an empty body), none a signature
    known = {hashlib.sha256(b"").hexdigest()}
    known |= {hashlib.sha256(p.read_bytes()).hexdigest() for p in (sb.config_path.parent / "artifacts").iterdir()}
    known |= {
        json.loads(p.read_text()).get("manifest_sha256") for p in (sb.config_path.parent / "artifacts").glob("*.json")
    }
    left = set(re.findall(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])", text)) - known
    assert not left, left
