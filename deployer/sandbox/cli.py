"""``python -m deployer.sandbox``: build the image; ``serve`` and ``probe`` the hosts ``up()`` started."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from deployer.report.output import note, show
from deployer.sandbox.deploy_files import toml_module
from deployer.sandbox.hosts import serve_nginx
from deployer.sandbox.image import FLAVOURS, SandboxError, ensure_image
from deployer.sandbox.instance import running


def main(argv: list[str]) -> None:
    """No arguments: build the images, both flavours (scripts/setup). ``serve``: make the running sandbox hosts web
    servers for a recipe. ``probe``: GET / once on each of them. (A request stream against them:
    ``python -m benchmarks.traffic`` in the repository.)"""
    parser = argparse.ArgumentParser(prog="python -m deployer.sandbox")
    sub = parser.add_subparsers(dest="cmd")
    serve = sub.add_parser(
        "serve", help="nginx on every running sandbox host for a recipe; sets [app] recipe in the config"
    )
    serve.add_argument("--config", required=True, help="the config sandbox.up wrote")
    serve.add_argument("--recipe", required=True, help="python_wsgi, django or static_site")
    sub.add_parser("probe", help="GET / once on every running sandbox host, print the answers")
    args = parser.parse_args(argv)

    if args.cmd is None:
        for flavour in FLAVOURS.values():
            show(ensure_image(log=note, flavour=flavour))
        return
    hosts = [h for h in running() if h.http_port]
    if not hosts:
        raise SandboxError("no running sandbox host with port 80 published (run: deployer sandbox.up)")
    if args.cmd == "serve":
        toml = toml_module()
        recipe = importlib.import_module(f"deployer.recipes.{args.recipe}")
        doc = toml.loads(Path(args.config).read_text())
        doc["app"]["recipe"] = args.recipe
        Path(args.config).write_text(toml.dumps(doc))
        ports = {h["port"] for h in doc["stages"]["sandbox"]["hosts"]}
        for h in hosts:
            if h.port in ports:
                serve_nginx(h, recipe.nginx_site(doc["app"]["deploy_to"]))
                show(f"{h.name}: nginx serves http://127.0.0.1:{h.http_port}/ ({args.recipe})")
        return
    import urllib.request

    for h in hosts:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{h.http_port}/", timeout=5) as r:
                show(f"{h.name}: {r.status} {r.read(200).decode(errors='replace').strip()}")
        except Exception as exc:
            show(f"{h.name}: {exc}")
