"""SIGTERM and SIGHUP take Ctrl-C's path (deployer/engine/signals.py); the cleanup is not cut short."""

import os
import signal
import threading

import pytest

from deployer.engine.signals import (
    Terminated,
    describe,
    exit_code,
    no_interrupts,
    terminations,
)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_termination_signal_interrupts_like_ctrl_c_and_maps_to_128_plus_its_number(sig, code):
    # the default disposition, whatever this test runs under (nohup ignores SIGHUP: see below)
    outer = signal.signal(sig, signal.SIG_DFL)
    try:
        with pytest.raises(KeyboardInterrupt) as caught:
            with terminations():
                os.kill(os.getpid(), sig)  # the handler runs in the main thread right after
        assert isinstance(caught.value, Terminated)
        assert exit_code(caught.value) == code and describe(caught.value) == signal.Signals(sig).name
        assert signal.getsignal(sig) is signal.SIG_DFL  # restored afterwards
    finally:
        signal.signal(sig, outer)


def test_ctrl_c_keeps_its_code():
    assert exit_code(KeyboardInterrupt()) == 130 and describe(KeyboardInterrupt()) == "Ctrl-C"


def test_a_signal_a_parent_ignored_stays_ignored():
    """nohup: SIGHUP ignored before the run stays ignored during it."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with terminations():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGHUP)
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_a_second_signal_during_cleanup_is_ignored():
    with terminations():
        with no_interrupts():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                os.kill(os.getpid(), sig)  # a CI runner's second SIGTERM: cleanup goes on
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN


def test_outside_the_main_thread_nothing_is_installed():
    seen = []

    def worker():
        with terminations(), no_interrupts():
            seen.append(signal.getsignal(signal.SIGTERM))

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == [signal.getsignal(signal.SIGTERM)]
