"""An interactive session on one host (`deployer ssh`): this terminal relayed to a remote
pseudo-terminal, in raw mode, window size changes passed on."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # paramiko is loaded only when a shell runs
    from deployer.ssh.connection import Connection


def relay(conn: Connection, command: str) -> int:
    """Run `command` on a pseudo-terminal and relay this terminal to it until it exits; returns
    its exit status. Keys typed ahead are kept; the terminal's mode is restored on the way out."""
    import select
    import signal

    fd_in, fd_out = sys.stdin.fileno(), sys.stdout.fileno()
    tty = os.isatty(fd_in)
    size = os.get_terminal_size(fd_out) if os.isatty(fd_out) else os.terminal_size((80, 24))
    chan = conn.interactive(command, os.environ.get("TERM", "xterm"), size.columns, size.lines)
    saved = None
    previous_winch = None
    if tty:
        import termios
        import tty as tty_mod

        saved = termios.tcgetattr(fd_in)
        tty_mod.setraw(fd_in, termios.TCSANOW)  # keys typed ahead are kept, not flushed
        if hasattr(signal, "SIGWINCH"):

            def resize(*_: object) -> None:
                s = os.get_terminal_size(fd_out)
                chan.resize_pty(width=s.columns, height=s.lines)

            previous_winch = signal.signal(signal.SIGWINCH, resize)
    try:
        stdin_open = True
        while True:
            watch = [chan, fd_in] if stdin_open else [chan]
            try:
                readable, _, _ = select.select(watch, [], [], 0.5)
            except InterruptedError:
                continue
            if chan in readable or chan.recv_ready():
                data = chan.recv(32768)
                if not data:
                    break
                os.write(fd_out, data)
            if fd_in in readable:
                data = os.read(fd_in, 4096)
                if data:
                    chan.sendall(data)
                else:
                    stdin_open = False
                    chan.shutdown_write()
            if chan.exit_status_ready() and not chan.recv_ready():
                break
        return int(chan.recv_exit_status())
    finally:
        if saved is not None:
            import termios

            termios.tcsetattr(fd_in, termios.TCSADRAIN, saved)
        if previous_winch is not None:
            signal.signal(signal.SIGWINCH, previous_winch)
        chan.close()
