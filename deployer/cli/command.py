"""What every task shares: the @command decorator with its error boundary (one Outcome, one
--json document, one line per error and an exit code), the preamble of a task that works on a
stage, and the checks of option values."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import sys

from invoke import Exit, task

from deployer.cli.options import DeployerTask
from deployer.config import load as config_mod
from deployer.config.settings import Config, Host, Stage
from deployer.engine.signals import describe, exit_code, terminations
from deployer.errors import DeployerError, RunFailed, UsageError
from deployer.plan.options import parallel_hosts
from deployer.report import document, rows
from deployer.report.document import Outcome
from deployer.report.output import Output, safe


def _boundary(fn, task_name: str):
    """Every way a task ends becomes one Outcome: with --json one document on stdout (the same
    shape for success, host failure, lock held, gate refused, bad input and Ctrl-C), and for a
    failure its exit code with one stderr line per problem (DeployerError).
    SIGTERM and SIGHUP interrupt the task as Ctrl-C does (see signals.py), exiting 143 and 129."""

    @functools.wraps(fn)
    def wrapper(c, *args, **kwargs):
        as_json = kwargs.get("json", False)
        try:
            with terminations():
                outcome = fn(c, *args, **kwargs) or Outcome()
        except RunFailed as exc:
            records = document.run_records(exc.runs)
            if not as_json:
                table = rows.run_rows(records)
                Output().table(table, rows.run_headers(table))
            outcome = Outcome(records, exc.exit_code, str(exc))
        except DeployerError as exc:
            outcome = Outcome([], exc.exit_code, str(exc))
        except KeyboardInterrupt as exc:  # outside a flow's undo: reading config, building, status
            outcome = Outcome([], exit_code(exc), f"interrupted ({describe(exc)})")
        if as_json:
            Output().json(
                document.document(
                    task_name,
                    outcome.exit_code,
                    outcome.error,
                    outcome.stage or kwargs.get("stage"),
                    outcome.hosts,
                    **outcome.extra,
                )
            )
        if outcome.exit_code:
            lines = (outcome.error or "failed").splitlines()  # a config's problems: one line each
            raise Exit("\n".join(safe(f"error: {line}") for line in lines), code=outcome.exit_code)

    return wrapper


def text_output(as_json: bool) -> Output:
    """Human text: on stdout, or on stderr when stdout carries the JSON document."""
    return Output(stream=sys.stderr) if as_json else Output()


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@dataclasses.dataclass(frozen=True)
class Target:
    """What a task works on: the loaded config, its stage, the hosts selected, and where text goes."""

    cfg: Config
    stage: Stage
    hosts: tuple[Host, ...]
    out: Output


def stage_target(
    config: str | None, stage: str | None, hosts: str | None = None, roles: str | None = None, json: bool = False
) -> Target:
    """The preamble of every task that works on a stage: config, stage, --hosts/--roles, output."""
    cfg = config_mod.load(config)
    st = cfg.stage(stage)
    return Target(cfg, st, st.select(_split(hosts), _split(roles)), text_output(json))


def parallelism(value) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"--parallel expects a whole number, got {value!r}") from None
    return parallel_hosts(n)


def whole_number(value, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UsageError(f"--{name} expects a whole number, got {value!r}") from None


def seconds_value(value, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UsageError(f"--{name} expects a number of seconds, got {value!r}") from None


def lock_wait_seconds(value) -> float:
    seconds = seconds_value(value, "lock-wait")
    if not 0 <= seconds < float("inf"):
        raise UsageError(f"--lock-wait expects a number of seconds >= 0, got {value}")
    return seconds


HELP_COMMON = {
    "stage": "Stage name from hosts.toml (optional when there is only one).",
    "config": "Path to hosts.toml (default: $DEPLOYER_CONFIG, then ./hosts.toml).",
    "hosts": "Comma-separated host names: only these hosts.",
    "roles": "Comma-separated roles: only hosts with one of them.",
    "parallel": "How many hosts to work on at once.",
    "json": "Print JSON instead of a table.",
    "lock_wait": "Seconds to wait for another run's lock (its holder is shown) instead of exiting 3 at once.",
}


def command(name: str | None = None, positional: tuple[str, ...] = (), **extra_help):
    """@task with the error boundary and the common option help (only for options the task has)."""

    def wrap(fn):
        params = inspect.signature(fn).parameters
        helps = {k: v for k, v in {**HELP_COMMON, **extra_help}.items() if k in params}
        kwargs = {"help": helps, "positional": list(positional), "klass": DeployerTask}
        if name:
            kwargs["name"] = name
        dotted = fn.__name__.rstrip("_").replace("_", ".") if name else fn.__name__  # config_diff: config.diff
        return task(**kwargs)(_boundary(fn, dotted))

    return wrap
