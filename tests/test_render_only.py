"""Values reach a remote shell only through deployer/remote/render.py: no module outside
deployer/remote/ builds shell text. Two checks over the source, with Python's own parser:

- no shell quoting (`shlex.quote`, `shlex.join`, under any alias) outside remote/, unless it only
  compares (a check that a path needs no quoting builds nothing);
- no script written in place reaching a transport: the script argument of every `.run(...)` and
  `.interactive(...)` call is followed through the function's assignments and the module's own
  helpers; a string literal, an f-string, a concatenation, `%`, `.format` or `.join` found there
  is shell built outside remote/.

sandbox/ is left out: it builds the `docker exec` commands of throwaway containers, never a
deploy host's script (the sandbox is an optional extra for demos and tests).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "deployer"
SKIPPED = ("remote", "sandbox")
QUOTING = {"quote", "join"}  # shlex's functions that build shell words
NOT_TRANSPORTS = {"subprocess", "containers", "runloop"}  # .run() of things that are not a Transport


def _shlex_names(tree: ast.Module) -> tuple[set[str], set[str]]:
    """The module's names for the shlex module and for its quoting functions."""
    modules, functions = set(), set()
    for node in _nodes(tree):
        if isinstance(node, ast.Import):
            modules |= {a.asname or a.name for a in node.names if a.name == "shlex"}
        elif isinstance(node, ast.ImportFrom) and node.module == "shlex":
            functions |= {a.asname or a.name for a in node.names if a.name in QUOTING}
    for node in _nodes(tree):  # q = shlex.quote
        if isinstance(node, ast.Assign) and _is_quoting(node.value, modules, set()):
            functions |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return modules, functions


def _is_quoting(node: ast.AST, modules: set[str], functions: set[str]) -> bool:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.value.id in modules and node.attr in QUOTING
    return isinstance(node, ast.Name) and node.id in functions


def quoting(tree: ast.Module) -> list[int]:
    """Lines where shell words are quoted (used other than in a comparison)."""
    modules, functions = _shlex_names(tree)
    compared = {id(o) for n in _nodes(tree) if isinstance(n, ast.Compare) for o in (n.left, *n.comparators)}
    return sorted(
        node.lineno
        for node in _nodes(tree)
        if isinstance(node, ast.Call) and _is_quoting(node.func, modules, functions) and id(node) not in compared
    )


@functools.cache
def _nodes(tree: ast.AST) -> list[ast.AST]:
    return list(ast.walk(tree))


@functools.cache
def _parents(tree: ast.Module) -> dict[int, ast.AST]:
    return {id(child): node for node in _nodes(tree) for child in ast.iter_child_nodes(node)}


@functools.cache
def _assigned(scope: ast.AST) -> dict[str, list[ast.expr]]:
    """What each name is assigned in a scope (a function, or the module)."""
    values: dict[str, list[ast.expr]] = {}
    for node in _nodes(scope):
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AugAssign | ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Name):
                values.setdefault(target.id, []).append(node.value)  # type: ignore[union-attr]
    return values


def _scope(node: ast.AST, parents: dict[int, ast.AST], tree: ast.Module) -> ast.AST:
    while id(node) in parents:
        node = parents[id(node)]
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            return node
    return tree


def _script_argument(call: ast.Call, index: int | None = None) -> ast.expr | None:
    """What a transport call sends: a `script`/`command` keyword, else the last positional
    argument of `.run(...)` (Transport.run(script), Session.run(run, step, script)), the first of
    `.interactive(...)`; of a sender's call, its argument at `index`."""
    if index is not None:
        return call.args[index] if index < len(call.args) else None
    for kw in call.keywords:
        if kw.arg in ("script", "command"):
            return kw.value
    if not call.args:
        return None
    return call.args[0] if isinstance(call.func, ast.Attribute) and call.func.attr == "interactive" else call.args[-1]


@functools.cache
def _transport_calls(tree: ast.Module) -> list[ast.Call]:
    """`.run(...)`/`.interactive(...)` on objects; not on an imported name (a module's function,
    such as the engine's `ops.run` flow) nor on what NOT_TRANSPORTS names."""
    imported = {
        a.asname or a.name.split(".")[0]
        for n in _nodes(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
        for a in n.names
    }
    calls = []
    for node in _nodes(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr not in ("run", "interactive"):
            continue
        owner = node.func.value
        name = owner.attr if isinstance(owner, ast.Attribute) else owner.id if isinstance(owner, ast.Name) else ""
        if name not in NOT_TRANSPORTS and not (isinstance(owner, ast.Name) and owner.id in imported):
            calls.append(node)
    return calls


def _text_built(expr: ast.AST) -> bool:
    """Shell text made right here: a literal, an f-string, or text put together."""
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return True
    if isinstance(expr, ast.JoinedStr):
        return True
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add | ast.Mod):
        return True
    return isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and expr.func.attr in ("format", "join")


def _sources(expr: ast.AST, scope: ast.AST, tree: ast.Module, seen: set[int], depth: int = 0) -> list[ast.AST]:
    """The expressions `expr` may hold: through names assigned in its scope, conditional
    expressions, lambdas' bodies and calls to the module's own functions (their returns)."""
    if depth > 8 or id(expr) in seen:
        return []
    seen.add(id(expr))
    found: list[ast.AST] = [expr]
    if isinstance(expr, ast.IfExp):
        for branch in (expr.body, expr.orelse):
            found += _sources(branch, scope, tree, seen, depth + 1)
    elif isinstance(expr, ast.Name):
        for value in _assigned(scope).get(expr.id, []):
            found += _sources(value, scope, tree, seen, depth + 1)
    elif isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name):
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == expr.func.id:
                for ret in _nodes(node):
                    if isinstance(ret, ast.Return) and ret.value is not None:
                        found += _sources(ret.value, node, tree, seen, depth + 1)
    return found


Senders = dict[tuple[str, str], int]  # (module, function) -> the parameter whose value it sends


def _sender_calls(tree: ast.Module, module: str, senders: Senders) -> list[tuple[ast.Call, int]]:
    """Calls to a function that passes one of its parameters on to a transport: `f(...)` in its
    own module, `module.f(...)` elsewhere."""
    calls = []
    for node in _nodes(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name) and (module, f.id) in senders:
            calls.append((node, senders[(module, f.id)]))
        elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and (f.value.id, f.attr) in senders:
            calls.append((node, senders[(f.value.id, f.attr)]))
    return calls


def _sends(tree: ast.Module, module: str, senders: Senders) -> list[tuple[ast.Call, ast.expr]]:
    """Every call that sends a script, with the expression it sends."""
    found = [(call, _script_argument(call)) for call in _transport_calls(tree)]
    found += [(call, _script_argument(call, i)) for call, i in _sender_calls(tree, module, senders)]
    return [(call, arg) for call, arg in found if arg is not None]


def find_senders(trees: dict[str, ast.Module]) -> Senders:
    """Module-level functions whose parameter reaches a transport (or another sender) unchanged."""
    senders: Senders = {}
    for _ in range(4):  # a sender calling a sender calling a transport
        for module, tree in trees.items():
            parents = _parents(tree)
            for call, arg in _sends(tree, module, senders):
                scope = _scope(call, parents, tree)
                if not (isinstance(scope, ast.FunctionDef) and scope in tree.body):
                    continue
                params = [a.arg for a in scope.args.args]
                for source in _sources(arg, scope, tree, set()):
                    if isinstance(source, ast.Name) and source.id in params:
                        senders[(module, scope.name)] = params.index(source.id)
    return senders


def shell_sent(tree: ast.Module, module: str = "", senders: Senders | None = None) -> tuple[list[int], int]:
    """Lines of calls that send a script written in place, and how many sending calls were checked."""
    parents, bad = _parents(tree), []
    sends = _sends(tree, module, senders or {})
    for call, arg in sends:
        if any(_text_built(s) for s in _sources(arg, _scope(call, parents, tree), tree, set())):
            bad.append(call.lineno)
    return bad, len(sends)


def findings(source: str) -> list[str]:
    tree = ast.parse(source)
    senders = find_senders({"sample": tree})
    return [f"{line}: {what}" for line, what in _lines(tree, "sample", senders)]


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in SKIPPED)


def test_no_module_outside_remote_builds_shell_text():
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in modules()}
    senders = find_senders({path.stem: tree for path, tree in trees.items()})
    problems, checked = [], 0
    for path, tree in trees.items():
        problems += [f"{path.relative_to(PACKAGE)}:{n}: {what}" for n, what in _lines(tree, path.stem, senders)]
        checked += shell_sent(tree, path.stem, senders)[1]
    assert problems == [], "shell text built outside deployer/remote/ (use a script file and render.render)"
    # it saw the flows' transport calls (session.run, conn.run, backend.run, interactive) and the
    # functions that pass a script on to one (the terminal relay, the ops flows' runner)
    assert checked >= 25, checked
    assert {("terminal", "relay"), ("ops", "_run")} <= set(senders), senders


def _lines(tree: ast.Module, module: str, senders: Senders) -> list[tuple[int, str]]:
    sent, _ = shell_sent(tree, module, senders)
    return [(n, "shell quoted") for n in quoting(tree)] + [(n, "script written in place") for n in sent]


# --- the check itself: it finds what it is meant to find -----------------------------------------

BUILT = {
    "a quoting alias": """
import shlex
q = shlex.quote
def in_current(paths, command):
    return "\\n".join([f"cd {q(paths.current)}", command])
""",
    "shlex.join": "import shlex\ndef f(argv):\n    return shlex.join(argv)\n",
    "from shlex import quote": "from shlex import quote as qq\nx = qq('a b')\n",
    "an f-string sent": "def f(run, path):\n    return run.conn.run(f'rm -rf {path}')\n",
    "a literal through a name": "def f(s, run):\n    script = 'rm -rf /x'\n    s.run(run, 'step', script)\n",
    "a module helper's text": """
def script_of(path):
    return "cat " + path
def f(conn, path):
    return conn.run(script_of(path), timeout=5)
""",
    "one branch written in place": "def f(s, r, ok):\n    s.run(r, 'x', commands.a() if ok else 'true')\n",
    "a keyword script": "def f(conn):\n    conn.run(script='echo %s' % 1)\n",
    "through the module's own sender": """
def send(conn, command):
    return conn.interactive(command, "xterm", 80, 24)
def shell(conn, where):
    return send(conn, f"cd {where}; exec sh -l")
""",
    "an interactive command": "def f(conn, where):\n    conn.interactive('cd {}'.format(where), 'xterm', 80, 24)\n",
}

FROM_REMOTE = {
    "a builder's script": "def f(s, r):\n    s.run(r, 'switch', commands.switch(s.paths, 1, s.token))\n",
    "through a name and a helper": """
def script_of(s):
    return lock.unleased(commands.abort(s.paths, None, s.token))
def f(s, r):
    script = script_of(s)
    s.run(r, "abort", script, timeout=60)
""",
    "a parameter": "def f(conn, script):\n    return conn.run(script)\n",
    "a check that needs no quoting": "import shlex\ndef f(p):\n    if shlex.quote(p) != p:\n        raise ValueError\n",
    "a module's own run function": "from deployer.engine import ops\nops.run(stage, hosts, out, 1, 'uptime')\n",
    "a local process": "import subprocess\nsubprocess.run(['ls', '-l'])\n",
}


@pytest.mark.parametrize("name", BUILT)
def test_the_check_finds_shell_built_in_place(name):
    assert findings(BUILT[name]), name


@pytest.mark.parametrize("name", FROM_REMOTE)
def test_the_check_passes_scripts_from_remote(name):
    assert findings(FROM_REMOTE[name]) == [], name
