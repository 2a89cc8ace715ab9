"""Whoever can write to the bucket must not choose the code: signed .json files (signing_key,
trusted_keys), the git sha taken from the artifact itself, and a store whose copy is wrong
named as such and repaired by publish. Against the real store (SeaweedFS) and real hosts."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import cli, commit_change, release_dirs, store_for

from deployer.artifact import signing
from deployer.artifact.build import build_artifact
from deployer.config import load
from deployer.errors import STORE, ArtifactError, ConfigError, StoreError

BASE = '[app]\ndeploy_to = "/srv/a"\n[stages.s]\nhosts = ["h"]\n'


def keypair(directory: Path, name: str = "signing", *extra: str) -> Path:
    """An Ed25519 key made by ssh-keygen, as ops make one; the .pub is beside it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ci", *extra, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def pub_line(key: Path) -> str:
    return key.with_name(key.name + ".pub").read_text().strip()


def ssh_fingerprint(key: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-lf", str(key) + ".pub"], check=True, capture_output=True, text=True)
    return out.stdout.split()[1]


# ---------------------------------------------------------------- pure: signatures, revision


def test_a_signature_by_an_ssh_keygen_key_verifies_and_any_change_breaks_it(tmp_path):
    key = keypair(tmp_path)
    private = signing.load_private(str(key))
    fp = ssh_fingerprint(key)
    assert signing.fingerprint(private.public_key()) == fp  # the fingerprint ssh-keygen shows
    trusted = signing.load_trusted((pub_line(key),))
    assert list(trusted) == [fp]
    meta = {"name": "app", "version": "1", "sha256": "a" * 64, "size": 3, "manifest": {"x": "y"}}
    signed = signing.sign(meta, private)
    assert signing.signature_problem(signed, trusted) is None
    assert signing.verify(json.loads(json.dumps(signed, indent=2)), trusted, "app-1.json") == fp
    assert signing.sign(signed, private) == signed  # deterministic; an old signature is replaced
    for change in ({"sha256": "b" * 64}, {"git_sha": "c" * 40}, {"manifest": {"x": "z"}}):
        assert signing.signature_problem({**signed, **change}, trusted) == (
            f"does not match its signature by {fp} (altered after signing)"
        )
    assert signing.signature_problem(meta, trusted) == "is not signed"
    assert signing.signature_problem({**meta, "signature": "x"}, trusted) == "has a malformed signature"
    other = keypair(tmp_path, "other")
    by_other = signing.sign(meta, signing.load_private(str(other)))
    assert signing.signature_problem(by_other, trusted) == (
        f"is signed by {ssh_fingerprint(other)}, which is not in trusted_keys"
    )
    with pytest.raises(ArtifactError) as info:
        signing.verify(by_other, trusted, "app-1.json")
    message = str(info.value)
    assert len(message.splitlines()) == 1 and "refusing app-1.json from the store" in message and fp in message
    bad_sig = {**signed, "signature": {**signed["signature"], "ed25519": "!!"}}
    assert "altered after signing" in (signing.signature_problem(bad_sig, trusted) or "")


def test_keys_are_read_as_ssh_keygen_writes_them_and_bad_ones_named_in_one_line(tmp_path):
    one, two = keypair(tmp_path, "one"), keypair(tmp_path, "two")
    listing = tmp_path / "trusted"
    listing.write_text(f"# CI's keys\n{pub_line(one)}\n\n{pub_line(two)}\n")
    assert set(signing.load_trusted((str(listing),))) == {ssh_fingerprint(one), ssh_fingerprint(two)}
    locked = keypair(tmp_path, "locked")
    subprocess.run(["ssh-keygen", "-q", "-p", "-N", "pw", "-f", str(locked)], check=True, capture_output=True)
    rsa = tmp_path / "rsa"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "1024", "-N", "", "-f", str(rsa)], capture_output=True)
    junk = tmp_path / "junk"
    junk.write_text("not a key\n")
    for path, why in (
        (locked, "the key has a passphrase"),
        (rsa, "not an Ed25519 key"),
        (junk, "not a private key"),
        (tmp_path / "absent", "cannot read it"),
    ):
        with pytest.raises(ConfigError) as info:
            signing.load_private(str(path))
        message = str(info.value)
        assert message.startswith(f"store.signing_key: {path}: {why}") and len(message.splitlines()) == 1
    secret = one.read_text().splitlines()[1]
    for entry, why in (
        (str(rsa) + ".pub", "expected ssh-ed25519 key lines"),
        ("ssh-ed25519 AAAAnotbase64", "expected ssh-ed25519 key lines"),
        (str(one), "expected ssh-ed25519 key lines"),  # the private key given by mistake
        (str(tmp_path / "absent"), "cannot read it"),
    ):
        with pytest.raises(ConfigError, match=why) as info:
            signing.load_trusted((entry,))
        assert secret not in str(info.value)


def test_signing_key_and_trusted_keys_are_paths_from_the_config_file(tmp_path):
    key = keypair(tmp_path / "keys")
    cfg = load.parse(
        BASE + '[store]\nurl = "s3://bucket"\nsigning_key = "keys/signing"\n'
        f'trusted_keys = ["keys/signing.pub", "{pub_line(key)}"]\n',
        tmp_path / "hosts.toml",
    )
    assert cfg.store.signing_key == str(key)
    assert cfg.store.trusted_keys == (str(key) + ".pub", pub_line(key))
    with pytest.raises(ConfigError, match=r"store.trusted_keys\[0\]: expected an ssh-ed25519 key line"):
        load.parse(BASE + '[store]\nurl = "s3://bucket"\ntrusted_keys = [""]\n', tmp_path / "hosts.toml")


# ---------------------------------------------------------------- the S3 store


def test_with_trusted_keys_only_a_json_signed_by_one_is_taken(s3_store, aws_env, app_repo, tmp_path):
    key, stranger = keypair(tmp_path, "ci"), keypair(tmp_path, "stranger")
    art = build_artifact(app_repo, "sample", tmp_path / "ci-out")
    trusting = {"trusted_keys": (pub_line(key),)}

    unsigned = store_for(s3_store, "trust-unsigned/", tmp_path / "u")
    unsigned.put(art)
    with pytest.raises(ArtifactError) as info:
        store_for(s3_store, "trust-unsigned/", tmp_path / "laptop-1", **trusting).get(art.version)
    assert f"refusing {art.json_path.name} from the store: it is not signed (trusted: {ssh_fingerprint(key)})" == str(
        info.value
    )
    assert not (tmp_path / "laptop-1").exists()  # refused before any download

    foreign = store_for(s3_store, "trust-foreign/", tmp_path / "f", signing_key=str(stranger))
    foreign.put(art)
    with pytest.raises(
        ArtifactError, match=re.escape(f"signed by {ssh_fingerprint(stranger)}, which is not in trusted_keys")
    ):
        store_for(s3_store, "trust-foreign/", tmp_path / "laptop-2", **trusting).get(art.version)

    ours = store_for(s3_store, "trust-ok/", tmp_path / "o", signing_key=str(key))
    assert ours.put(art) == [art.path.name, art.json_path.name]
    assert ours.put(art) == []  # the same signed .json: nothing again
    got = store_for(s3_store, "trust-ok/", tmp_path / "laptop-3", **trusting).get(art.version)
    assert got.sha256 == art.sha256 and got.meta["signature"]["key"] == ssh_fingerprint(key)
    # a publisher without the key leaves the signed .json as it is
    assert store_for(s3_store, "trust-ok/", tmp_path / "o2").put(art) == []
    # the unsigned store's .json is signed once a publisher has the key
    assert store_for(s3_store, "trust-unsigned/", tmp_path / "u2", signing_key=str(key)).put(art) == [
        art.json_path.name
    ]
    assert store_for(s3_store, "trust-unsigned/", tmp_path / "laptop-4", **trusting).get(art.version).sha256 == (
        art.sha256
    )
    raw = s3_store.client().get_object(Bucket=s3_store.bucket, Key="trust-ok/" + art.json_path.name)["Body"].read()
    assert key.read_text().splitlines()[1].encode() not in raw


def test_publish_replaces_a_same_size_wrong_copy_in_the_store(s3_store, aws_env, app_repo, tmp_path):
    """An object overwritten with other bytes of the same size is uploaded again, not skipped."""
    art = build_artifact(app_repo, "sample", tmp_path / "ci-out")
    store = store_for(s3_store, "repair/", tmp_path / "c")
    store.put(art)
    key = "repair/" + art.path.name
    s3_store.client().put_object(Bucket=s3_store.bucket, Key=key, Body=os.urandom(art.size))
    again = store_for(s3_store, "repair/", tmp_path / "c")
    assert again.put(art) == [art.path.name] and again.replaced == [art.path.name]
    assert store_for(s3_store, "repair/", tmp_path / "c").put(art) == []
    got = store_for(s3_store, "repair/", tmp_path / "laptop").get(art.version)
    assert got.sha256 == art.sha256


def test_a_wrong_copy_is_named_as_the_stores_and_never_cached(s3_store, aws_env, app_repo, tmp_path):
    art = build_artifact(app_repo, "sample", tmp_path / "ci-out")
    store_for(s3_store, "wrong-copy/", tmp_path / "c").put(art)
    key = "wrong-copy/" + art.path.name
    s3_store.client().put_object(Bucket=s3_store.bucket, Key=key, Body=os.urandom(art.size))
    laptop = tmp_path / "laptop"
    for _ in range(2):  # the second try downloads again: the bad copy was not kept
        with pytest.raises(StoreError) as info:
            store_for(s3_store, "wrong-copy/", laptop).get(art.version)
        message = str(info.value)
        assert info.value.exit_code == STORE and len(message.splitlines()) == 1
        assert f"its copy of {art.path.name} is not the artifact its .json names (sha256 mismatch" in message
        assert f"publish it again: inv publish --version {art.version}" in message
        assert sorted(p.name for p in laptop.iterdir()) == []


# ---------------------------------------------------------------- deploys against real hosts


def deploy_version(sb, version: str, env: dict):
    shutil.rmtree(sb.config_path.parent / "artifacts", ignore_errors=True)  # another machine
    return cli(sb, "deploy", "--version", version, env=env)


@pytest.mark.slow
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_a_bucket_writer_who_swaps_the_tarball_is_refused(sandbox, s3_store, app_repo, tmp_path, signed):
    """The attack: the store's app-V.tar.gz replaced by another commit's, its .json rewritten with
    that tarball's sha256 and the original git sha. A deploy of V from a machine without V is
    refused (exit 2, one line) before any host is asked; without trusted_keys a store deploy warns."""
    prefix = f"attack-{'signed' if signed else 'unsigned'}"
    store: dict = {"transfer": "pull"}
    if signed:
        key = keypair(tmp_path / "keys")
        store.update(signing_key=str(key), trusted_keys=[pub_line(key)])
    sb = sandbox(2, **s3_store.config(prefix, **store))
    env = s3_store.env
    published = cli(sb, "publish", "--json", env=env)
    assert published.returncode == 0, published.stderr
    version = json.loads(published.stdout)["version"]
    ok = deploy_version(sb, version, env)
    assert ok.returncode == 0, ok.stderr
    warned = [line for line in ok.stdout.splitlines() if line.startswith("warning:")]
    if signed:
        assert warned == []
    else:
        assert warned == [
            f"warning: {version} taken from the store unverified ([store] trusted_keys is not set): "
            "whoever can write to the bucket chooses the code"
        ]
    commit_change(app_repo, "app.py", "print('not the reviewed code')\n")
    other = build_artifact(app_repo, "sample", tmp_path / "attacker")
    evil = other.path.read_bytes()
    client = s3_store.client()
    objects = [o["Key"] for o in client.list_objects_v2(Bucket=s3_store.bucket, Prefix=prefix + "/")["Contents"]]
    json_key = next(k for k in objects if k.endswith(f"-{version}.json"))
    tar_key = json_key[: -len(".json")] + ".tar.gz"
    meta = json.loads(client.get_object(Bucket=s3_store.bucket, Key=json_key)["Body"].read())
    original = meta["git_sha"]
    meta.update(sha256=hashlib.sha256(evil).hexdigest(), size=len(evil))  # git_sha, version kept
    client.put_object(Bucket=s3_store.bucket, Key=tar_key, Body=evil, Metadata={"sha256": meta["sha256"]})
    client.put_object(Bucket=s3_store.bucket, Key=json_key, Body=json.dumps(meta).encode())

    before = {h.name: (release_dirs(sb, h), sb.command_count(h)) for h in sb.hosts}
    refused = deploy_version(sb, version, env)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    err = refused.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    if signed:
        assert f"does not match its signature by {ssh_fingerprint(key)} (altered after signing)" in err, err
    else:
        assert f"its .json names git sha {original}, but the artifact holds git sha {other.git_sha}" in err, err
    for h in sb.hosts:
        assert (release_dirs(sb, h), sb.command_count(h)) == before[h.name], "a host was asked"
        assert "not the reviewed code" not in sb.exec(h, "cat /srv/app/current/app.py")[1]


@pytest.mark.slow
def test_a_pull_of_a_wrong_copy_in_the_store_names_the_store_not_the_transfer(sandbox, s3_store, app_repo):
    """The store's tarball became other bytes while its metadata still names the right sha256:
    every host fetches it and finds the sha256 wrong; the error says the store's copy is wrong,
    which the deploy replaced with its own (checked) artifact: the next deploy works."""
    sb = sandbox(2, **s3_store.config("wrong-pull", transfer="pull"))
    env = s3_store.env
    published = cli(sb, "publish", "--json", env=env)
    assert published.returncode == 0, published.stderr
    record = json.loads(published.stdout)
    client = s3_store.client()
    key = next(k for k in (f"wrong-pull/{n}" for n in record["uploaded"]) if k.endswith(".tar.gz"))
    size = client.head_object(Bucket=s3_store.bucket, Key=key)["ContentLength"]
    client.put_object(Bucket=s3_store.bucket, Key=key, Body=os.urandom(size), Metadata={"sha256": record["sha256"]})
    proc = cli(sb, "deploy", "--version", record["version"], env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    named = f"the store's copy of {key.split('/')[-1]} is not this artifact"
    # a host fetching after the first one's answer mended the store may get the right bytes
    assert named in proc.stdout and "it is replaced by this artifact now: deploy again" in proc.stdout, out
    assert "in transit" not in out and "Traceback" not in out, out
    for h in sb.hosts:
        assert release_dirs(sb, h) == [] and sb.exec(h, "test -e /srv/app/.deployer/lock")[0] != 0
    stored = client.get_object(Bucket=s3_store.bucket, Key=key)["Body"].read()
    assert hashlib.sha256(stored).hexdigest() == record["sha256"]  # mended once, however many hosts
    again = cli(sb, "deploy", "--version", record["version"], env=env)
    assert again.returncode == 0, again.stdout + again.stderr
