"""How the console script leaves: at once after flushing, and quietly when its reader went away."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers import REPO, cli, cli_env, closed_pipe, commit_change, current, status

from deployer.report.output import Output


def _python(code: str, unbuffered: bool = False, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # block-buffered, as in a pipe
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, timeout=60, **kwargs)


def test_leave_flushes_what_is_still_buffered_and_keeps_the_code():
    proc = _python(
        "from deployer.cli.main import leave; print('no newline yet', end=''); leave(3)", capture_output=True, text=True
    )
    assert (proc.returncode, proc.stdout) == (3, "no newline yet")
    proc = _python("from deployer.cli.main import leave; leave(None)", capture_output=True, text=True)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    proc = _python(
        "from deployer.cli.main import leave; leave('a message instead of a code')", capture_output=True, text=True
    )
    assert (proc.returncode, proc.stderr) == (1, "a message instead of a code\n")


def _list_to_closed_pipe(unbuffered: bool) -> subprocess.CompletedProcess:
    w = closed_pipe()
    try:
        return _python(
            "import sys; sys.argv = ['deployer', '--list']; from deployer.cli.main import main; main()",
            unbuffered,
            stdout=w,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        os.close(w)


def test_help_to_a_reader_that_left_has_no_traceback():
    # the write fails inside invoke's printing: cut short, as a closed pipe stops a shell tool
    proc = _list_to_closed_pipe(unbuffered=True)
    assert (proc.returncode, proc.stderr) == (141, "")
    # the output sat in the buffer until the exit's flush: the listing was done, its code stands
    proc = _list_to_closed_pipe(unbuffered=False)
    assert (proc.returncode, proc.stderr) == (0, "")


def test_output_whose_reader_left_goes_to_dev_null_and_the_caller_goes_on():
    w = closed_pipe()
    stream = os.fdopen(w, "w")
    try:
        out = Output(stream=stream)
        out.say("nobody reads this")  # EPIPE: must not raise
        out.line("host-1", "prepare", "nor this")
        out.table([{"host": "host-1", "result": "ok"}])
        assert os.readlink(f"/proc/self/fd/{w}") == "/dev/null"
        assert out.stream is stream
    finally:
        stream.close()


HOOK = """
import atexit, pathlib

def register(ctx):
    atexit.register(pathlib.Path("atexit-ran").write_text, f"{ctx.stage} {ctx.release}")
"""


def test_atexit_handlers_of_a_python_hook_run_when_the_cli_leaves(sandbox):
    sb = sandbox(1, hooks={"after_switch": [{"python": "exit_hook:register"}]})
    (sb.config_path.parent / "exit_hook.py").write_text(HOOK)  # importable: the CLI runs in that directory
    proc = cli(sb, "deploy")
    assert proc.returncode == 0, proc.stderr
    assert "hook ok: exit_hook:register" in proc.stdout + proc.stderr
    assert (sb.config_path.parent / "atexit-ran").read_text() == "sandbox 1"


def _stdout_closed() -> None:
    os.close(1)  # in the child before exec: `deployer ... >&-`, as cron and CI wrappers run it


def _cli_closed_stdout(sb, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deployer", *args, "--config", str(sb.config_path)],
        stdout=None,
        stderr=subprocess.PIPE,
        text=True,
        timeout=180,
        env=cli_env(),
        cwd=sb.config_path.parent,
        preexec_fn=_stdout_closed,
    )


def test_a_closed_stdout_drops_the_output_and_keeps_the_code_the_run_earned(sandbox, app_repo):
    sb = sandbox(1)
    proc = _cli_closed_stdout(sb, "deploy")
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    assert current(sb, sb.hosts[0]) == "releases/1"
    assert [(r["current"], r["lock"]) for r in status(sb)] == [(1, None)]
    for args in (("status", "--json"), ("releases", "--json"), ("status",), ("--help",)):
        proc = _cli_closed_stdout(sb, *args)
        assert (proc.returncode, proc.stderr) == (0, ""), (args, proc.stderr)
    proc = _cli_closed_stdout(sb, "deploy", "--stage", "nope")  # bad input: its code and its one line
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "nope" in proc.stderr
    sb.exec(sb.hosts[0], "chmod 555 /srv/app/releases")  # the next release cannot be made: a failed run
    commit_change(app_repo, "n.txt", "2")
    proc = _cli_closed_stdout(sb, "deploy")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "NoneType" not in proc.stderr, proc.stderr
    assert [(r["current"], r["lock"]) for r in status(sb)] == [(1, None)]
