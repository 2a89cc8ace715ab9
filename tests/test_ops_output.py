"""What `run`, `logs` and `ssh` print of a host's output, on real hosts: the stage's secret values
masked (on stdout and stderr, in tables, error columns and --json, while following), a host's
control characters shown escaped, a cut output said so, and `ssh` refusing what it cannot do."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest
import toml
from helpers import cli, cli_popen, under_pty
from test_json_contract import VALIDATOR
from test_ops import deployed, run_cli, write_log

from deployer import redact as secrets_mod
from deployer.redact import MASK
from deployer.report import answers

SECRET = "op5-S3cret-Value-91c2"
CMD_SECRET = "from-a-command-4e7d"


def with_secrets(sandbox, monkeypatch, n: int = 2):
    """n hosts deployed with an env: secret (SECRET) and a cmd: one (CMD_SECRET) in their .env."""
    monkeypatch.setenv("TEST_OPS_SECRET", SECRET)
    sb = sandbox(n)
    doc = toml.loads(sb.config_path.read_text())
    doc["env"] = {
        "API_KEY": {"secret": "env:TEST_OPS_SECRET"},
        "DB_PASSWORD": {"secret": f"cmd:echo {CMD_SECRET}"},
        "LOG_LEVEL": "info",
    }
    sb.config_path.write_text(toml.dumps(doc))
    proc = cli(sb, "deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert SECRET in sb.exec(0, "cat /srv/app/current/.env")[1]
    return sb


def hidden(proc: subprocess.CompletedProcess | tuple[str, str], *secrets: str) -> str:
    """All the process printed, after checking no secret is in it and the mask is."""
    text = proc.stdout + proc.stderr if isinstance(proc, subprocess.CompletedProcess) else "".join(proc)
    for secret in secrets or (SECRET, CMD_SECRET):
        assert secret not in text, text
        assert secret[:10] not in text, text
    assert MASK in text or json.dumps(MASK)[1:-1] in text, text  # as is, or escaped in JSON
    return text


def test_run_masks_secrets_on_stdout_stderr_in_the_table_and_in_json(sandbox, monkeypatch):
    sb = with_secrets(sandbox, monkeypatch)
    proc = run_cli(sb, "--", "cat .env")
    assert proc.returncode == 0, proc.stderr
    assert f"host-1 | API_KEY={MASK}" in hidden(proc).splitlines()
    assert f"host-2 | DB_PASSWORD={MASK}" in proc.stdout.splitlines()
    assert "host-1 | LOG_LEVEL=info" in proc.stdout.splitlines()

    proc = run_cli(sb, "--json", "--", "cat .env")
    assert proc.returncode == 0, proc.stderr
    hidden(proc)
    data = json.loads(proc.stdout)
    VALIDATOR.validate(data)
    assert all(f"API_KEY={MASK}\n" in h["stdout"] for h in data["hosts"])

    # on stderr, then the command fails: the prefixed lines, the table's error column, the last line
    failing = '. ./.env; echo "key is $API_KEY" >&2; printf %s "$DB_PASSWORD" >&2; exit 4'
    proc = run_cli(sb, "--", failing)
    assert proc.returncode == 1
    text = hidden(proc)
    assert f"host-2 | key is {MASK}" in proc.stderr.splitlines()
    table = proc.stdout.splitlines()
    assert any(line.startswith("host-1") and "failed" in line and line.rstrip().endswith(MASK) for line in table), text
    assert "host-1 (exit 4)" in proc.stderr

    proc = run_cli(sb, "--json", "--", failing)
    assert proc.returncode == 1
    hidden(proc)
    data = json.loads(proc.stdout)
    VALIDATOR.validate(data)
    assert [(h["stderr"], h["error"]) for h in data["hosts"]] == [(f"key is {MASK}\n{MASK}", MASK)] * 2


def test_run_masks_what_it_can_read_and_notes_what_it_cannot(sandbox, monkeypatch):
    """A secret whose source is missing here does not stop `run`: it runs, says which one it
    could not mask, and masks the others."""
    sb = with_secrets(sandbox, monkeypatch, 1)
    monkeypatch.delenv("TEST_OPS_SECRET")
    proc = subprocess.run(
        [sys.executable, "-m", "deployer", "run", "--config", str(sb.config_path), "--", "cat .env"],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "TEST_OPS_SECRET"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "note: secret API_KEY: environment variable TEST_OPS_SECRET is not set" in proc.stderr
    assert f"host-1 | DB_PASSWORD={MASK}" in hidden(proc, CMD_SECRET).splitlines()


def test_logs_masks_secrets_in_a_file_and_in_json(sandbox, monkeypatch):
    sb = with_secrets(sandbox, monkeypatch)
    proc = cli(sb, "logs", "--path", ".env")
    assert proc.returncode == 0, proc.stderr
    assert f"host-2 | API_KEY={MASK}" in hidden(proc).splitlines()
    write_log(sb, 0, f"login with {SECRET} ok\nthen {CMD_SECRET}\n")
    write_log(sb, 1, "nothing here\n")
    proc = cli(sb, "logs")
    assert proc.returncode == 0, proc.stderr
    assert f"host-1 | login with {MASK} ok" in hidden(proc).splitlines()
    proc = cli(sb, "logs", "--json", "--path", ".env")
    assert proc.returncode == 0, proc.stderr
    hidden(proc)
    VALIDATOR.validate(json.loads(proc.stdout))


def test_logs_follow_masks_a_secret_written_in_two_pieces(sandbox, monkeypatch):
    sb = with_secrets(sandbox, monkeypatch, 1)
    write_log(sb, 0, "start\n")
    proc = cli_popen(sb, "logs", "--path", "log/app.log", "--follow", "--lines", "1")
    got = b""

    def read_until(text: bytes, timeout: float = 30) -> None:
        nonlocal got
        deadline = time.monotonic() + timeout
        while text not in got:
            assert time.monotonic() < deadline, f"{text!r} not seen; got {got!r}"
            if select.select([proc.stdout], [], [], 1)[0]:
                chunk = os.read(proc.stdout.fileno(), 65536)
                assert chunk, f"stream ended early: {got!r}"
                got += chunk

    try:
        read_until(b"host-1 | start\n")
        write_log(sb, 0, f"token={SECRET[:9]}", append=True)
        time.sleep(1.5)  # tail -F polls once a second: the two pieces come in two reads
        write_log(sb, 0, f"{SECRET[9:]} end\n", append=True)
        read_until(b" end\n")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = got.decode() + out + err
    assert proc.returncode == 0, err
    assert f"host-1 | token={MASK} end" in text.splitlines()
    hidden((text, ""), SECRET)


def test_a_followed_line_is_masked_however_it_is_read():
    """_Prefixed, fed one byte at a time and a long line in pieces: no secret gets through."""
    saved = set(secrets_mod._SECRETS)
    try:
        secrets_mod.add_secret(SECRET)
        printed: list[str] = []
        sink = answers.Prefixed("h", 1, printed.append)
        for byte in f"a {SECRET} b\nx".encode():
            sink(bytes([byte]))
        sink.flush()
        assert printed == [f"h | a {MASK} b", "h | x"]
        printed.clear()
        long = ("y" * (answers.LINE_MAX - 5) + SECRET + "z" * 10).encode()
        sink(long[:100])
        sink(long[100:])
        sink.flush()
        assert len(printed) == 2 and all(SECRET[:4] not in p and SECRET[-4:] not in p for p in printed)
        assert printed[0].endswith(MASK) and printed[1].startswith(f"h | {MASK}")
    finally:
        secrets_mod._SECRETS.clear()
        secrets_mod._SECRETS.update(saved)


def test_a_hosts_control_characters_are_shown_escaped(sandbox):
    sb = deployed(sandbox, 1)
    proc = run_cli(sb, "--", r"printf 'out\033[2J\n'; printf 'err\033]0;title\007\n' >&2")
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout + proc.stderr and "\x07" not in proc.stderr
    assert "host-1 | out\\x1b[2J" in proc.stdout.splitlines()
    assert "host-1 | err\\x1b]0;title\\x07" in proc.stderr.splitlines()


def test_a_hosts_escape_sequences_reach_a_terminal_escaped(sandbox):
    """On a terminal (where the progress lines themselves are drawn with escape sequences), what a
    host writes on stderr is shown, never acted on: ESC, BEL, the one-byte CSI (0x9b) and a bidi
    override, in the host's lines and in the table's error column (its last stderr line)."""
    sb = deployed(sandbox, 1)
    command = (
        r"printf 'out\033[2J\n'; printf 'err\033]0;title\007\n' >&2; "
        r"printf 'csi\302\23331m bidi\342\200\256txt\n' >&2; exit 3"
    )
    argv = [sys.executable, "-m", "deployer", "run", "--config", str(sb.config_path), "--", command]
    code, text = under_pty(argv, env={"NO_COLOR": "1"}, cwd=sb.config_path.parent)
    assert code == 1, text
    for acted_on in ("\x1b[2J", "\x1b]0;title", "\x07", "\x9b", "\u202e"):
        assert acted_on not in text, (acted_on, text)
    lines = text.replace("\r\n", "\n").splitlines()
    assert "host-1 | out\\x1b[2J" in lines
    assert "host-1 | err\\x1b]0;title\\x07" in lines
    assert "host-1 | csi\\x9b31m bidi\\u202etxt" in lines
    row = [line for line in lines if line.startswith("host-1 ") and "failed" in line][-1]
    assert row.split() == ["host-1", "failed", "3", "csi\\x9b31m", "bidi\\u202etxt"], row


@pytest.mark.parametrize("persist", [0, 30], ids=["direct", "agent"])
def test_a_cut_output_says_how_many_bytes_were_cut(sandbox, persist):
    """Counted where the output is read, and passed on by a connection agent (ssh.persist)."""
    sb = deployed(sandbox, 1, ssh={"persist": persist})
    command = "head -c 100000 /dev/zero | tr '\\0' x; echo; echo END; head -c 70000 /dev/zero | tr '\\0' y >&2"
    proc = run_cli(sb, "--", command)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0] == f"host-1 | … {100005 - 65536} bytes cut" and out[2] == "host-1 | END"
    assert out[1] == "host-1 | " + "x" * (65536 - 5)
    assert proc.stderr.splitlines()[0] == f"host-1 | … {70000 - 65536} bytes cut"
    proc = run_cli(sb, "--json", "--", command)
    data = json.loads(proc.stdout)
    VALIDATOR.validate(data)
    host = data["hosts"][0]
    assert (host["stdout_cut"], len(host["stdout"]), host["stderr_cut"], len(host["stderr"])) == (
        100005 - 65536,
        65536,
        70000 - 65536,
        65536,
    )
    logins = sb.logins(0)
    proc = run_cli(sb, "--json", "--", "echo short")
    assert json.loads(proc.stdout)["hosts"][0]["stdout_cut"] == 0
    assert sb.logins(0) == (logins if persist else logins + 1)  # the agent's kept connection, or a new one


def test_ssh_without_a_terminal_refuses_at_once(sandbox):
    sb = deployed(sandbox, 1)
    before = sb.command_count(0), sb.logins(0)
    proc = subprocess.run(
        [sys.executable, "-m", "deployer", "ssh", "--config", str(sb.config_path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: stdin is not a terminal; use `deployer run -- CMD` to run a command without one"
    ]
    assert (sb.command_count(0), sb.logins(0)) == before


def test_ssh_host_matching_two_hosts_is_bad_input_and_address_port_picks_one(sandbox):
    sb = deployed(sandbox, 2)
    one, two = sb.hosts
    assert one.host == two.host == "127.0.0.1"
    proc = cli(sb, "ssh", "--host", "127.0.0.1")
    assert proc.returncode == 2, proc.stderr
    assert (
        f"--host 127.0.0.1 matches 2 hosts: host-1 (127.0.0.1:{one.port}), host-2 (127.0.0.1:{two.port})" in proc.stderr
    )
    logins = sb.logins(0), sb.logins(1)
    code, text = under_pty(
        [sys.executable, "-m", "deployer", "ssh", "--host", f"127.0.0.1:{two.port}", "--config", str(sb.config_path)],
        keys=b"cat /etc/hostname; exit 5\n",
        timeout=60,
    )
    assert code == 5, text
    assert sb.exec(1, "cat /etc/hostname")[1].strip() in text
    assert (sb.logins(0), sb.logins(1)) == (logins[0], logins[1] + 1)
