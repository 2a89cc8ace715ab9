"""The tasks' option surface: short flags chosen on purpose, numbers typed, mistakes named.

Shared by `inv` in the repo and the `deployer` console script (both parse through these Tasks).
"""

from __future__ import annotations

from invoke import Task
from invoke.exceptions import ParseError

# Short flags, chosen rather than generated (invoke would take each option's first free letter,
# which made -d dry-run, -v version, -e reason, -l allow-dirty). Habits: -s/-c as in most tools,
# -H because -h is help, -r roles (Kamal), -n dry run (make, rsync, git), -j parallel jobs (make),
# -y yes. Everything else is long only.
SHORT = {"stage": "s", "config": "c", "hosts": "H", "roles": "r", "dry_run": "n", "parallel": "j", "yes": "y"}

# Numeric options whose default does not say their type (None until given).
NUMERIC = {"lock_wait": float}
# Whole-number options that must be at least this much.
MINIMUM = {"parallel": 1, "batch": 1, "canary": 1, "hosts": 1}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


class Number:
    """An option's type: casts the command line's text, or says in one line what was expected."""

    def __init__(self, kind: type, name: str):
        self.kind, self.flag = kind, flag(name)
        self.minimum = MINIMUM.get(name, 0)
        self.__name__ = "N" if kind is int else "SECONDS"  # invoke shows it in debug output

    def __call__(self, text):
        what = "a whole number" if self.kind is int else "a number of seconds"
        try:
            value = self.kind(text)
        except (TypeError, ValueError):
            raise ParseError(f"{self.flag} expects {what}, got {text!r}") from None
        if value != value or value in (float("inf"), float("-inf")):  # nan, inf
            raise ParseError(f"{self.flag} expects {what}, got {text!r}")
        if value < self.minimum:
            raise ParseError(f"{self.flag} must be at least {self.minimum}, got {text!r}")
        return value


class DeployerTask(Task):
    """A Task whose flags are the ones above: chosen short names, typed numbers."""

    def __init__(self, *args, **kwargs):
        kwargs["auto_shortflags"] = False
        super().__init__(*args, **kwargs)

    def get_arguments(self, ignore_unknown_help=None):
        args = super().get_arguments(ignore_unknown_help)
        for arg in args:
            name = arg.name or ""
            if name in SHORT:
                arg.names = (*arg.names, SHORT[name])
            kind = NUMERIC.get(name) if arg.default is None else type(arg.default)
            if kind in (int, float):
                arg.kind = Number(kind, name)
            if (
                arg.default is not None
                and arg.kind is not bool
                and arg.default != ""
                and "(default" not in (arg.help or "")
            ):
                arg.help = f"{(arg.help or '').rstrip('.')} (default {arg.default}).".lstrip()
        return args


METAVAR = {
    "stage": "NAME",
    "config": "PATH",
    "hosts": "A,B",
    "roles": "R1,R2",
    "artifact": "FILE",
    "version": "VERSION",
    "to": "RELEASE",
    "strategy": "all|rolling|canary",
    "since": "DATE",
    "host": "NAME",
    "source": "PATH",
    "help": "TASK",
    "list": "NAMESPACE",
    "print_completion_script": "SHELL",
    "login": "USER",
    "user": "USER",
}


def metavar(name: str) -> str:
    """The placeholder help shows after an option that takes a text value."""
    return METAVAR.get(name.replace("-", "_"), "TEXT")
