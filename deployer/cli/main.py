"""The `deployer` console script: an invoke Program over the same task collection as tasks.py,
with a curated core (no run()/sudo/runtime-config flags: they mean nothing here), `--config`
as the hosts.toml before or after the task, and every parse mistake answered in one line, exit 2."""

import ast
import atexit
import os
import re
import sys

from invoke import Argument, Exit, ParseError, Program
from invoke.parser import ParserContext

from deployer import DISTRIBUTION, __version__
from deployer.cli.options import Number, metavar
from deployer.cli.tasks import ns
from deployer.errors import BAD_INPUT, set_program
from deployer.errors import did_you_mean as close
from deployer.report.output import close_group, discard, note, show

SIGPIPE_EXIT = 141  # what a shell reports for a program a closed pipe stopped
NAME = "deployer"


class DeployerProgram(Program):
    def core_args(self):
        return [
            Argument(
                names=("help", "h"),
                optional=True,
                help="Show this help, or a task's options (also: TASK -h, help TASK).",
            ),
            Argument(names=("version", "V"), kind=bool, default=False, help="Show the version and exit."),
            Argument(names=("list", "l"), optional=True, help="List the tasks (optionally of one namespace)."),
            Argument(
                names=("config", "c"),
                help="Path to hosts.toml, for every task given (default: $DEPLOYER_CONFIG, then ./hosts.toml).",
            ),
            Argument(names=("debug",), kind=bool, default=False, help="Show the task runner's debug log."),
            Argument(names=("complete",), kind=bool, default=False, help="Print tab-completion candidates."),
            Argument(
                names=("print-completion-script",),
                default="",
                help="Print the tab-completion script for a shell (bash, zsh, fish).",
            ),
        ]

    def normalize_argv(self, argv):
        super().normalize_argv(argv)
        if self.argv[1:2] == ["help"]:  # `deployer help [TASK]`, as git and most tools take it
            self.argv = [self.argv[0], "--help", *self.argv[2:]]
        elif len(self.argv) == 3 and self.argv[2] in ("-h", "--help") and not self.argv[1].startswith("-"):
            self.argv = [self.argv[0], "--help", self.argv[1]]  # `TASK -h` even when TASK takes a positional

    def parse_core_args(self):
        """invoke's core parse, with a mistake answered in one line, --debug's log redacted, and
        fixed values for the core options invoke reads that this program does not offer."""
        from deployer.report import debuglog

        with self._usage():
            super().parse_core_args()
        for name, value in self.fixed_core().items():
            self.core[0].args[name] = Argument(names=(name,), default=value)
        if self.args.debug.value or os.environ.get("INVOKE_DEBUG"):
            debuglog.enable()  # signatures and secrets masked

    @staticmethod
    def fixed_core() -> dict:
        """The core options invoke's parse_core and parse_cleanup read, left out of core_args."""
        return {"write-pyc": not sys.dont_write_bytecode, "list-format": "flat", "list-depth": 0}

    def parse_tasks(self):
        with self._usage():
            super().parse_tasks()
        hosts_toml = self.core[0].args.config.value
        for ctx in self.tasks:
            if hosts_toml and "config" in ctx.args and not ctx.args.config.got_value:
                ctx.args.config.value = hosts_toml

    def parse_cleanup(self):
        """invoke's --help/--list/--complete handling, an unknown task or namespace named first."""
        topic, root = self.args.help.value, self.args.list.value
        if isinstance(topic, str) and topic not in self.parser.contexts:
            raise Exit(self._unknown_task(topic), code=BAD_INPUT)
        if isinstance(root, str):
            try:
                self.collection.subcollection_from_path(root)
            except KeyError:
                raise Exit(
                    f"error: no namespace {root!r}{close(root, self.collection.collections)}", code=BAD_INPUT
                ) from None
        super().parse_cleanup()

    def update_config(self, merge=True):
        """No runtime config file and no run() overrides: the tasks take their settings from hosts.toml."""
        if merge:
            self.config.merge()

    # ---- help -----------------------------------------------------------------------------

    def print_help(self):
        show(f"Usage: {self.binary} [--config PATH] TASK [options]   ({self.binary} TASK -h: a task's options)")
        show("")
        show("Options:")
        show("")
        self.print_columns(_rows(self.initial_context))
        self.list_tasks()

    def print_task_help(self, name):
        import inspect

        ctx = self.parser.contexts[name]
        show(f"Usage: {self.binary} {name} [options]")
        show("")
        for line in (inspect.getdoc(self.collection[name]) or "").splitlines():
            show(self.leading_indent + line if line.strip() else "")
        show("")
        show("Options:")
        show("")
        self.print_columns(_rows(ctx) or [("none", "")])

    def task_list_opener(self, extra=""):
        return "Tasks"

    # ---- mistakes -------------------------------------------------------------------------

    def _usage(self):
        return _Usage(self)

    def _unknown_task(self, word: str) -> str:
        return f"error: no task {word!r}{close(word, self.collection.task_names)}; see: {self.binary} --list"

    def explain(self, exc: ParseError) -> str:
        """invoke's parse error as one line a user can act on."""
        text = str(exc)
        ctx = exc.context
        task = ctx.name if isinstance(ctx, ParserContext) and ctx.name else None
        unknown = re.fullmatch(r"No idea what (.+) is!", text)
        if unknown:
            word = ast.literal_eval(unknown.group(1))
            if task is None and word.startswith("-"):
                task_flags = {f for c in self.parser.contexts.values() for f in _longs(c)}
                hint = close(word, _longs(self.initial_context))
                if not hint and close(word, task_flags):
                    hint = close(word, task_flags)[:-2] + " after the task name?)"
                return f"error: unknown option {word}{hint}; see: {self.binary} -h"
            if task is None or (not word.startswith("-") and close(word, self.collection.task_names)):
                return self._unknown_task(word)
            if word.startswith("-"):
                known = _longs(ctx) + _longs(self.initial_context)
                return f"error: {task}: unknown option {word}{close(word, known)}; see: {self.binary} {task} -h"
            return (
                f"error: {task}: unexpected argument {word!r} (options take a name, e.g. --stage {word}); "
                f"see: {self.binary} {task} -h"
            )
        needs = re.fullmatch(r"Flag <Argument: ([\w-]+).*> needed value and was not given one!", text)
        if needs:
            where = f"{task}: " if task else ""
            return f"error: {where}--{needs.group(1).replace('_', '-')} needs a value"
        return f"error: {text}"


class _Usage:
    """Turns a ParseError inside the block into Exit(one line, code 2)."""

    def __init__(self, program: DeployerProgram):
        self.program = program

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if isinstance(exc, ParseError):
            message = self.program.explain(exc)
            if "--json" in self.program.argv:  # the JSON contract holds for a mistaken command line too
                from deployer.report.document import document
                from deployer.report.output import Output

                names = self.program.collection.task_names
                task = next((a for a in self.program.argv[1:] if a in names), None)
                Output().json(document(task or "", BAD_INPUT, message.removeprefix("error: "), None, []))
            raise Exit(message, code=BAD_INPUT) from None
        return False


def _longs(ctx) -> list[str]:
    return [f for f in ctx.flags if f.startswith("--")]


def _rows(ctx) -> list[tuple[str, str]]:
    """(flags, help) per option: `-s, --stage NAME`, numbers as N or SECONDS, booleans bare."""
    rows = []
    seen = set()
    for arg in sorted(ctx.args.values(), key=lambda a: a.names[0]):
        if id(arg) in seen:
            continue
        seen.add(id(arg))
        value = ""
        if arg.kind is not bool:
            value = " " + (arg.kind.__name__ if isinstance(arg.kind, Number) else metavar(arg.name))
            if arg.optional:
                value = f" [{value.strip()}]"
        longs = [f"--{n}" for n in arg.names if len(n) > 1]
        shorts = [f"-{n}" for n in arg.names if len(n) == 1]
        rows.append((", ".join(shorts + longs) + value, arg.help or ""))
    return rows


# --version: the command, its version and the distribution that installs it (pipx upgrade NAME)
program = DeployerProgram(namespace=ns, version=f"{__version__} ({DISTRIBUTION})", name=NAME, binary=NAME)


def main() -> None:
    set_program(NAME)
    reopen_closed_std()
    try:
        program.run()
    except SystemExit as exc:
        leave(exc.code)
    except BrokenPipeError:  # the reader of invoke's own output (--help, --list) went away
        discard(sys.stdout)
        leave(SIGPIPE_EXIT)
    leave(0)


def reopen_closed_std() -> None:
    """A standard stream closed by the caller (`deployer deploy >&-`, as cron and CI wrappers do)
    becomes /dev/null, as a reader that left does: what is printed goes nowhere and the run keeps
    its code. The descriptor is taken too, so no file or socket opened later lands on 0, 1 or 2
    (where a hook or a subprocess would read or write it)."""
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            sink = os.open(os.devnull, os.O_RDWR)
            if sink != fd:
                os.dup2(sink, fd)
                os.close(sink)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, mode, closefd=False))


def leave(code) -> None:
    """Run the atexit handlers, flush and exit at once, skipping the rest of the interpreter's
    teardown (garbage collection, module cleanup), when every file, lock and connection is
    already closed (the task code closes them itself). The handlers still run because users'
    Python hooks may register some. A task that raised anything but SystemExit does not come
    here: its traceback and exit stay Python's."""
    if code is None:
        code = 0
    elif not isinstance(code, int):
        note(str(code), multiline=True)
        code = 1
    close_group()
    atexit._run_exitfuncs()  # as Python's own exit would, in reverse order; errors are printed
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away: nothing more can reach it
            pass
    os._exit(code)
