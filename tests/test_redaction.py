"""Secrets at rest and in transit, without hosts: the redactor, the ledger line, the bad marker,
notifications, and the env file's exact round trip through our parser and a POSIX shell."""

from __future__ import annotations

import json
import subprocess

import pytest

from deployer import redact as secrets_mod
from deployer.config import envfile
from deployer.config.settings import NotifySettings
from deployer.errors import ConfigError
from deployer.plan.paths import Paths
from deployer.redact import MASK, redact
from deployer.remote import commands
from deployer.report import ledger, notify


@pytest.fixture
def secrets(monkeypatch):
    """A fresh registry of secret values for one test."""
    monkeypatch.setattr(secrets_mod, "_SECRETS", set())

    def add(*values):
        for v in values:
            secrets_mod.add_secret(v)

    return add


def test_whole_overlapping_nested_and_metacharacter_secrets_are_masked(secrets):
    secrets("abcdef", "defghi", "cde", "a.*b(c)[d]$", "long-secret-value", "secret-val")
    assert redact("x abcdefghi y") == f"x {MASK} y"  # overlapping: one span, nothing between
    assert redact("key long-secret-value!") == f"key {MASK}!"  # a secret inside another
    assert redact("p=a.*b(c)[d]$ q=aXXb") == f"p={MASK} q=aXXb"  # literal, never a pattern
    assert redact("nothing here") == "nothing here"


def test_a_secret_cut_at_a_line_edge_is_masked_but_short_pieces_of_text_are_not(secrets):
    secrets("s3cr3t-Value-7f9a")
    assert redact("error: s3cr3t-Va") == f"error: {MASK}"  # a tail cut short
    assert redact("lue-7f9a was the key") == f"{MASK} was the key"  # a tail that starts mid-way
    assert redact("one s3cr\ntwo") == f"one {MASK}\ntwo"  # at the end of any line
    assert redact("s3c rest") == "s3c rest"  # under 4 characters: not masked
    assert redact("s3cr3t-Va in the middle") == "s3cr3t-Va in the middle"  # not at an edge


def test_escaped_and_multiline_forms_of_a_secret_are_masked(secrets):
    value = 'p"a$s\\w`d-é\nsecond-line'
    secrets(value)
    assert redact(json.dumps({"k": value})) == '{"k": "' + MASK + '"}'
    assert MASK in redact(envfile.render({"K": value}).decode()) and 'p\\"a' not in redact(
        envfile.render({"K": value}).decode()
    )
    assert redact("only the second-line leaked") == f"only the {MASK} leaked"
    assert secrets_mod.redact_data({"a": [value, {"b": value}], "n": 3}) == {"a": [MASK, {"b": MASK}], "n": 3}


def test_ledger_line_and_bad_marker_never_hold_a_secret(secrets):
    secret = "tok-" + "z" * 30
    secrets(secret)
    line = ledger.entry("deploy", "prod", "failed", who="a@b", error="smoke: " + secret, reason=secret, note=[secret])
    assert secret not in line and "tok-zzz" not in line and json.loads(line)["error"] == f"smoke: {MASK}"
    # cut to fit a line: redacted before the cut, so no prefix of the secret survives at the end
    long = ledger.entry("deploy", "prod", "failed", who="a@b", error="x" * (ledger.MAX_LINE - 330) + secret)
    assert "tok-" not in long and len(long) <= ledger.MAX_LINE
    script = commands.mark_bad(Paths("/srv/app"), 3, f"verify printed {secret}")
    assert secret not in script and MASK in script


def test_notification_payload_and_webhook_errors_hide_secrets_and_url_credentials(secrets, capsys):
    secrets('quote"secret-é')
    url = "http://user:t0ken-abc@127.0.0.1:1/hook/PATH-TOKEN?key=Q-TOKEN"
    errors = notify.send(
        NotifySettings(webhooks=(url,), timeout=1), "failed", {"error": 'smoke printed quote"secret-é', "stage": "prod"}
    )
    printed = capsys.readouterr().err
    assert errors and "t0ken-abc" not in printed and "PATH-TOKEN" not in printed and "Q-TOKEN" not in printed
    assert "http://127.0.0.1:1/…" in printed
    assert notify._safe_url("https://u:p@hooks.example.com/T/B/XYZ") == "https://hooks.example.com/…"
    assert notify._safe_url("https://hooks.example.com") == "https://hooks.example.com"
    bare, headers = notify._credentials(url)
    assert bare == "http://127.0.0.1:1/hook/PATH-TOKEN?key=Q-TOKEN" and headers["Authorization"].startswith("Basic ")


def test_notify_command_payload_is_redacted_before_serialising(secrets, tmp_path):
    secrets('quote"secret-é')
    sink = tmp_path / "payload.json"
    notify.send(NotifySettings(command=f"cat > {sink}"), "failed", {"error": 'x quote"secret-é'})
    body = sink.read_bytes().decode()
    assert "secret" not in body and "\\u00e9" not in body and json.loads(body)["error"] == f"x {MASK}"


ROUND_TRIP = [
    "plain",
    "two words",
    'dq"inside',
    "$HOME and ${X}",
    "`id`",
    "back\\slash",
    "end\\",
    "multi\nline\n",
    "\nlead",
    "tab\there",
    "é ü ✓",
    "",
    "a=b=c",
    "\\n not a newline",
    "it's",
    "#not-a-comment",
    " padded ",
]


@pytest.mark.parametrize("value", ROUND_TRIP)
def test_env_values_read_back_exactly_by_our_parser_and_by_sh(value, tmp_path):
    rendered = envfile.render({"A": value, "B": "after"})
    assert envfile.parse(rendered.decode()) == {"A": value, "B": "after"}
    path = tmp_path / "env"
    path.write_bytes(rendered)
    proc = subprocess.run(
        ["sh", "-c", '. ./env; printf %s "$A"; printf "|%s" "$B"'], cwd=tmp_path, capture_output=True, timeout=10
    )
    assert proc.returncode == 0 and proc.stdout.decode() == value + "|after"


@pytest.mark.parametrize(
    "value",
    ["x\rINJECTED=1", "nul\0byte", "line\u2028sep", "para\u2029sep", "nel\x85x", "esc\x1b[31m", "del\x7f", "vt\x0bx"],
)
def test_values_an_env_file_cannot_carry_are_refused_without_showing_them(value):
    with pytest.raises(ConfigError) as info:
        envfile.check("A", value)
    assert "control character" in str(info.value) and value not in str(info.value)


def test_keys_are_exactly_shell_names_and_short_secrets_are_refused():
    for key in ("A\n", "1A", "A-B", "A B", ""):
        with pytest.raises(ConfigError, match="variable name"):
            envfile.check(key, "v")
    envfile.check("_a1", "v")
    with pytest.raises(ConfigError, match="shorter than 4"):
        envfile.check("K", "abc", secret=True)
    envfile.check("K", "", secret=True)  # empty: nothing to leak
    envfile.check("K", "abc")  # plain values may be short


def test_config_refuses_an_env_key_ending_in_a_newline(tmp_path):
    from deployer.config import load as config

    path = tmp_path / "hosts.toml"
    path.write_text(
        '[app]\nname = "a"\ndeploy_to = "/srv/a"\n[build]\nsource = "."\n'
        '[stages.s]\nhosts = ["h1"]\n[env]\n"KEY\\n" = "v"\n'
    )
    with pytest.raises(ConfigError, match="variable name"):
        config.load(str(path))


def test_a_value_with_a_carriage_return_is_refused_before_any_host(monkeypatch):
    from deployer.config.settings import EnvValue, Host, SSHSettings

    monkeypatch.setenv("CR_SECRET", "abcd\rINJECTED=1")
    host = Host(name="h", address="h", ssh=SSHSettings(), env=(("S", EnvValue(secret="env:CR_SECRET")),))
    with pytest.raises(ConfigError, match="secret S: its value contains the control character U\\+000D"):
        envfile.resolve((host,))


def test_a_rollback_masks_the_secrets_it_can_read_without_running_anything(secrets, monkeypatch, tmp_path):
    from deployer.config.settings import EnvValue, Host, SSHSettings

    monkeypatch.setenv("RB_SECRET", "from-the-environment")
    monkeypatch.delenv("RB_MISSING", raising=False)
    (tmp_path / "key").write_text("from-a-file\n")
    ran = tmp_path / "ran"
    env = (
        ("A", EnvValue(secret="env:RB_SECRET")),
        ("B", EnvValue(secret=f"file:{tmp_path / 'key'}")),
        ("C", EnvValue(secret="env:RB_MISSING")),
        ("D", EnvValue(secret=f"cmd:touch {ran}; echo from-cmd")),
    )
    envfile.mask_readable((Host(name="h", address="h", ssh=SSHSettings(), env=env),))
    assert redact("from-the-environment from-a-file") == f"{MASK} {MASK}"
    assert not ran.exists()  # a command is never run for it


def test_the_debug_log_drops_the_signer_and_masks_signatures_credentials_and_tokens():
    import logging

    from deployer.report.debuglog import Redacting

    def shown(name: str, msg: str, *args, level=logging.DEBUG):
        record = logging.LogRecord(name, level, __file__, 1, msg, args, None)
        return record.getMessage() if Redacting().filter(record) else None

    assert shown("botocore.auth", "CanonicalRequest:\n%s", "GET\n/b/k\nX-Amz-Algorithm=...") is None
    assert shown("botocore.auth", "Signature:\n%s", "ab" * 32) is None
    url = "http://s/b/k?X-Amz-Credential=AKIA%2F1%2Fus&X-Amz-Security-Token=tok%2B&X-Amz-Signature=" + "ab" * 32
    assert shown("urllib3.connectionpool", "GET %s", url) == (
        f"GET http://s/b/k?X-Amz-Credential={MASK}&X-Amz-Security-Token={MASK}&X-Amz-Signature={MASK}"
    )
    headers = (
        "{'X-Amz-Security-Token': b'FQoG+/x=', "
        "'Authorization': b'AWS4-HMAC-SHA256 Credential=AKIA/1/s3, SignedHeaders=host, Signature=b0f1e'}"
    )
    assert shown("botocore.endpoint", "Sending %s", headers) == (
        f"Sending {{'X-Amz-Security-Token': b'{MASK}', 'Authorization': b'AWS4-HMAC-SHA256 "
        f"Credential={MASK}, SignedHeaders=host, Signature={MASK}'}}"
    )
    assert shown("botocore.hooks", "Event %s", "before-sign.s3") == "Event before-sign.s3"
