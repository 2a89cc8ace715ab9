"""hosts.toml → frozen, validated settings. Read once; nothing downstream reads the file.

Every problem becomes one line naming the file (and line, where it can be found), the key and what is
expected; a file's problems are all reported in one run (one ConfigError, one line each).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import tomllib
from pathlib import Path

from deployer.config import analysis as analysis_mod
from deployer.config import canary as canary_mod
from deployer.config import schema, stages
from deployer.config import store as store_mod
from deployer.config.reader import Doc, Reader
from deployer.config.settings import (
    AppSettings,
    BuildSettings,
    CanarySettings,
    Config,
    EnvValue,
    PipelineSettings,
    SSHSettings,
)
from deployer.errors import ConfigError, did_you_mean

DEFAULT_FILE = "hosts.toml"
ENV_VAR = "DEPLOYER_CONFIG"


def find_config_path(explicit: str | None = None) -> Path:
    """--config PATH, else $DEPLOYER_CONFIG, else ./hosts.toml."""
    chosen = explicit or os.environ.get(ENV_VAR) or DEFAULT_FILE
    path = Path(chosen).expanduser()
    if not path.is_file():
        how = "--config" if explicit else (ENV_VAR if os.environ.get(ENV_VAR) else "default")
        raise ConfigError(f"config file {path} not found ({how}; pass --config PATH or set {ENV_VAR})")
    return path


def load(explicit: str | None = None) -> Config:
    path = find_config_path(explicit)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse(text, path)


def parse(text: str, path: Path) -> Config:
    """Validate a hosts.toml document's text."""
    reader = Reader(path, lambda where: locate(text, where))
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        at = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        raise ConfigError(f"{path}:{at.group(1) + ':' if at else ''} invalid TOML: {exc}") from None
    for key, value in list(data.items()):
        if key not in schema.TOP:
            reader.note(
                key, "unknown table" + (did_you_mean(key, schema.TOP) or f" (expected one of: {', '.join(schema.TOP)})")
            )
            del data[key]
        elif not isinstance(value, dict):
            reader.note(key, "expected a table")
            del data[key]
    if "app" not in data:
        reader.note("app", "missing table (needs at least deploy_to)")
        data["app"] = {"deploy_to": "/unset"}  # read on, to report the other problems too
    recipe = data["app"].get("recipe")
    if recipe:
        data = reader.section(with_recipe, data, recipe, reader, default=data)
    app = reader.section(reader.app, data["app"], "app", None, default=AppSettings(name="app", deploy_to="/unset"))
    build = reader.section(reader.build, data.get("build", {}), default=BuildSettings(source=Path(".")))
    ssh = reader.section(reader.ssh, data.get("ssh", {}), "ssh", SSHSettings(), default=SSHSettings())
    pipeline = PipelineSettings()
    for name in schema.PIPELINE_TABLES:
        if name in data:
            pipeline = reader.section(reader.pipeline, {name: data[name]}, "", pipeline, default=pipeline)
    env: dict[str, EnvValue] = reader.section(reader.env, data.get("env", {}), "env", default={})
    store = reader.section(store_mod.read, reader, data["store"], default=None) if "store" in data else None
    analysis = reader.section(analysis_mod.read, reader, data["analysis"], default=None) if "analysis" in data else None
    declared = data.get("stages", {})
    read = {
        name: reader.section(stages.stage, reader, name, body, app, ssh, pipeline, env, default=None)
        for name, body in declared.items()
    }
    if not declared:
        reader.note("stages", "no stage defined (expected [stages.NAME] with hosts)")
    for name, body in declared.items():
        requires = body.get("requires", []) if isinstance(body, dict) else []
        for req in [requires] if isinstance(requires, str) else requires:
            if isinstance(req, str) and (req not in declared or req == name):
                reader.note(
                    f"stages.{name}.requires",
                    f"{req!r} is not another stage{did_you_mean(req, declared)} (stages: {', '.join(declared)})",
                )
    canary = reader.section(canary_mod.read, reader, data["canary"], default=None) if "canary" in data else None
    if canary is not None:
        canary_mod.check_stages(reader, canary, read)
    if reader.problems:
        raise ConfigError("\n".join(reader.problems))
    return Config(
        path=path,
        app=app,
        build=build,
        ssh=ssh,
        pipeline=pipeline,
        store=store,
        canary=canary or CanarySettings(),
        analysis=analysis,
        stages={name: st for name, st in read.items() if st is not None},
    )


def with_recipe(data: Doc, name: object, reader: Reader) -> Doc:
    """The recipe's DEFAULTS under the user's document: user keys win, hook lists are appended to."""
    recipes = importlib.import_module("deployer.recipes")  # a checkout's recipes/ (deployer/__init__.py)
    known = sorted(m.name for m in pkgutil.iter_modules(recipes.__path__) if not m.name.startswith("_"))
    if not isinstance(name, str) or name not in known:
        raise reader.fail("app.recipe", f"unknown recipe {name!r} (recipes: {', '.join(known)})")
    defaults: Doc = getattr(importlib.import_module(f"deployer.recipes.{name}"), "DEFAULTS", {})
    return _merge(defaults, data)


def _merge(base: Doc, over: Doc, path: str = "") -> Doc:
    out = dict(base)
    for key, value in over.items():
        if path == "hooks" and isinstance(out.get(key), list) and isinstance(value, list):
            out[key] = out[key] + value
        elif isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = _merge(out[key], value, key if not path else f"{path}.{key}")
        else:
            out[key] = value
    return out


def locate(text: str, where: str) -> int | None:
    """Best effort: the line of `where` (e.g. stages.prod.hosts[1].port) in a TOML text: the line
    that sets that key, else the closest enclosing table or key. tomllib gives no positions."""
    parts = [p for p in re.sub(r"\[\d+\]", "", where).split(".") if p]
    header: list[str] = []
    last_key: list[str] = []
    best, best_line = 0, None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        table = re.match(r"^\[\[?\s*([^\]]+?)\s*\]\]?", line)
        key = re.match(r"^([A-Za-z0-9_.\"' -]+?)\s*=", line)
        if table:
            path = header = _keys(table.group(1))
        elif key:
            path = last_key = header + _keys(key.group(1))
        else:
            path = last_key
        score = len(path) if path == parts[: len(path)] else 0
        if 0 < score < len(parts) and re.search(r"[{,]\s*" + re.escape(parts[-1]) + r"\s*=", line):
            score = len(parts)  # set in an inline table on this line
        if (table or key or score == len(parts)) and score > best:
            best, best_line = score, number
    return best_line


def _keys(dotted: str) -> list[str]:
    return [k.strip().strip("\"'") for k in dotted.split(".")]
