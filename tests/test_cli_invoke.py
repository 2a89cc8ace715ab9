"""What the `deployer` program takes from invoke's Program, checked so that an invoke release that
changes it fails here, by name, rather than somewhere in a user's command line: the methods it
overrides or calls (and their signatures), the core options invoke reads while parsing (each
one this program offers or fixes), the order of the parse phases, and the curated `--list` and
`--complete` output, exactly."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import textwrap

import pytest
from helpers import REPO, cli_env
from invoke import Program

from deployer.cli.main import DeployerProgram
from deployer.cli.tasks import ns

# invoke.Program's methods DeployerProgram overrides or calls, with the parameters relied on
RELIED_ON = {
    "run": ["self", "argv", "exit"],
    "core_args": ["self"],
    "normalize_argv": ["self", "argv"],
    "parse_core": ["self", "argv"],
    "parse_core_args": ["self"],
    "parse_collection": ["self"],
    "parse_tasks": ["self"],
    "parse_cleanup": ["self"],
    "update_config": ["self", "merge"],
    "print_help": ["self"],
    "print_task_help": ["self", "name"],
    "print_version": ["self"],
    "print_columns": ["self", "tuples"],
    "list_tasks": ["self"],
    "task_list_opener": ["self", "extra"],
    "no_tasks_given": ["self"],
}


@pytest.mark.parametrize("name", sorted(RELIED_ON))
def test_the_invoke_methods_relied_on_are_there_with_their_signature(name):
    method = getattr(Program, name, None)
    assert callable(method), f"invoke.Program.{name} is gone: deployer/cli/main.py relies on it"
    params = list(inspect.signature(method).parameters)
    assert params == RELIED_ON[name], f"invoke.Program.{name}{inspect.signature(method)} changed"


def _core_options_read(method) -> set[str]:
    """The core options a Program method reads: self.args["name"] and self.args.name."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(method)))
    names = set()
    for node in ast.walk(tree):
        holder = node.value if isinstance(node, (ast.Subscript, ast.Attribute)) else None
        if not (isinstance(holder, ast.Attribute) and holder.attr == "args"):
            continue
        if not (isinstance(holder.value, ast.Name) and holder.value.id == "self"):
            continue
        if isinstance(node, ast.Subscript):
            assert isinstance(node.slice, ast.Constant), ast.unparse(node)
            names.add(node.slice.value)
        else:
            names.add(node.attr)
    return names - {"get", "keys", "items", "values"}  # Lexicon methods, not options


def test_every_core_option_invoke_reads_while_parsing_is_offered_or_fixed():
    """invoke's parse_core, parse_collection and parse_cleanup run as they are (update_config is
    replaced): each core option they read is one core_args offers or fixed_core sets."""
    offered = {name for arg in DeployerProgram().core_args() for name in arg.names}
    known = offered | set(DeployerProgram.fixed_core())
    for method in (Program.parse_core, Program.parse_collection, Program.parse_cleanup):
        read = _core_options_read(method)
        assert "help" in read or method is Program.parse_core  # the scan finds what it looks for
        assert read <= known, f"invoke's {method.__name__} now reads {sorted(read - known)}"
    assert DeployerProgram.update_config is not Program.update_config  # it reads run()'s options


def test_the_parse_phases_run_in_the_order_the_overrides_expect():
    """parse_cleanup uses the parser parse_tasks made; the fixed core values are set by
    parse_core_args, which parse_core calls, before parse_core reads them."""
    calls = [
        node.func.attr
        for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(Program.run))))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    ]
    phases = ["parse_core", "parse_collection", "parse_tasks", "parse_cleanup", "update_config", "execute"]
    assert [c for c in calls if c in phases] == phases
    core = [
        node.func.attr
        for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(Program.parse_core))))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    ]
    assert "parse_core_args" in core
    program = DeployerProgram(namespace=ns, name="deployer", binary="deployer")
    program.normalize_argv(["deployer", "--list"])
    program.parse_core_args()
    assert program.args is program.core[0].args and program.args["list-format"].value == "flat"


def _deployer(*args: str) -> subprocess.CompletedProcess:
    """The console script as installed runs it (argv[0] is `deployer`), its output to a pipe."""
    code = "import sys; sys.argv = ['deployer', *sys.argv[1:]]; from deployer.cli.main import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        cwd=REPO,
        env=cli_env(),
    )


LIST = """\
Tasks:

  analyze        Judge the live release by its traffic ([analysis] metrics),
                 read-only: exit 0 pass, 1 fail.
  artifacts      Stored artifacts: version, git sha, sha256, size, built.
  audit          The ledger of every deploy, rollback, failure, unlock and
                 cleanup, merged across hosts.
  build          Build the artifact for HEAD: artifacts/<name>-<version>.tar.gz
                 + .json (reproducible).
  check          Connect to every host and check it can take a deploy.
  cleanup        Remove old, failed and leftover releases beyond keep_releases
                 (never current or its predecessor).
  deploy         Deploy: build (or take) the artifact, prepare every host,
                 switch, verify, clean up.
  disconnect     Close the connections `ssh.persist` keeps open, for every host
                 (the connection agent exits).
  hosts          The stage's resolved inventory (static hosts or
                 hosts_command), with roles and env keys.
  init           Write a commented hosts.toml and a tasks.py (and a CI
                 workflow) for the git repository here.
  logs           Tail a file under shared/ on every host, each line prefixed by
                 host (--follow: until Ctrl-C).
  maintenance    Put up (on) or take down (off) shared/maintenance.html, served
                 with 503 by the nginx snippet.
  publish        Upload the artifact and its .json to [store] (what is there
                 already is skipped); any machine
  releases       Every release on every host, with its state and the current
                 marker.
  rollback       Switch current back to an earlier release on every host (no
                 upload, no extraction).
  run            Run a command in `current` on every host: deployer run -- CMD
                 (output prefixed by host).
  setup          Once per host, as root: deploy user, deploy_to, the recipe's
                 systemd unit, sudo rule, nginx site.
  ssh            An interactive shell in `current` on one host (through a
                 pseudo-terminal, same SSH settings).
  status         What runs where: current release, version, git sha, who
                 deployed it, lock.
  unlock         Remove a stale deploy lock by force (shows who held it).
  verify         Check each host's live files against its release's manifest:
                 modified, added, removed.
  config.diff    Keys that differ between the hosts' env files and what push
                 would write (secrets masked).
  config.keys    Every hosts.toml key: its type, default and what it does
                 (needs no hosts.toml).
  config.push    Write the stage's [env] to each host's env file (no new
                 artifact), then run the restart.
  sandbox.down   Stop and remove the hosts sandbox.up started from this
                 directory (no other checkout's or user's).
  sandbox.up     Start throwaway SSH hosts in containers and write a ready
                 config for them.

"""

TASKS = """analyze artifacts audit build check cleanup deploy disconnect hosts init logs maintenance publish releases
rollback run setup ssh status unlock verify config.diff config.keys config.push sandbox.down sandbox.up""".split()
CORE = "--complete --debug --print-completion-script -c --config -h --help --list -l --version -V".split()
DEPLOY = """--allow-dirty --artifact --bake --batch --canary --force --full --json --lock-wait --max-fail --pause
--reason --strategy --transfer --version --config --hosts --parallel --dry-run --roles --stage""".split()


def test_the_curated_list_is_exactly_this():
    proc = _deployer("--list")
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == LIST


def test_the_curated_completion_is_exactly_this():
    """Task names in the collection's order; flags as a set (invoke prints them in a set's order)."""
    tasks = _deployer("--complete", "--", "deployer")
    assert (tasks.returncode, tasks.stdout.split()) == (0, TASKS)
    core = _deployer("--complete", "--", "deployer", "-")
    assert (core.returncode, sorted(core.stdout.split())) == (0, sorted(CORE))
    deploy = _deployer("--complete", "--", "deployer", "deploy", "--")
    assert (deploy.returncode, sorted(deploy.stdout.split())) == (0, sorted(DEPLOY))
    namespace = _deployer("--list", "sandbox")
    assert namespace.stdout.split("\n")[2:4] == [
        "  .down   Stop and remove the hosts sandbox.up started from this directory (no",
        "          other checkout's or user's).",
    ]
