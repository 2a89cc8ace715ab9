"""The `deployer` console script: an invoke Program over the same task collection as tasks.py."""

import os
import sys

from invoke import Program

from . import __version__
from .output import discard
from .tasks import ns

SIGPIPE_EXIT = 141      # what a shell reports for a program a closed pipe stopped

program = Program(namespace=ns, version=__version__, name="deployer", binary="deployer")


def main() -> None:
    try:
        program.run()
    except SystemExit as exc:
        leave(exc.code)
    except BrokenPipeError:         # the reader of invoke's own output (--help, --list) went away
        discard(sys.stdout)
        leave(SIGPIPE_EXIT)
    leave(0)


def leave(code) -> None:
    """Flush and exit at once, skipping the interpreter's teardown: its garbage collection and
    module cleanup cost 30-70 ms after every run, when every file, lock and connection is
    already closed (the task code closes them itself). A task that raised anything but
    SystemExit does not come here: its traceback and exit stay Python's."""
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):     # a reader that went away: nothing more can reach it
            pass
    os._exit(code)
