"""Recipes (deployer.recipes): their defaults merged into real configs, and each one on real hosts —
python_wsgi (gunicorn behind nginx, reloads picking up the new release), django (migrate once,
collectstatic per host), static_site (nginx straight from current) and generic."""

from __future__ import annotations

import importlib
import pkgutil
import shutil
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import REPO, cli, current, git, wait_until

from deployer import recipes as recipes_pkg
from deployer.config import load as config
from deployer.recipes import django, python_wsgi, static_site
from deployer.sandbox import hosts as sandbox_mod

SAMPLE_APP = REPO / "deployer" / "sandbox" / "sample_app"
WEB = {"ports": {"80/tcp": None}}  # publish each host's nginx on 127.0.0.1


# --- helpers shared with test_zero_downtime ------------------------------------------------------


def make_repo(path: Path, files: dict[str, str], *, copy_of: Path | None = None) -> Path:
    """A git work tree (a copy of copy_of, if given, plus files) with one commit."""
    if copy_of:
        shutil.copytree(copy_of, path, ignore=shutil.ignore_patterns("__pycache__"))
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "commit.gpgsign", "false")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "first")
    return path


def commit(repo: Path, message: str, files: dict[str, str] | None = None, remove: tuple[str, ...] = ()) -> None:
    for name, text in (files or {}).items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    for name in remove:
        (repo / name).unlink()
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def sample_repo(tmp_path: Path, version: str = "v1", **files: str) -> Path:
    """The bundled sample app (gunicorn.conf.py included) as its own repo, reporting `version`."""
    return make_repo(tmp_path / "sample", {"VERSION": version + "\n", **files}, copy_of=SAMPLE_APP)


def web_hosts(sandbox, repo: Path, recipe: str, n: int, **extra):
    """n sandbox hosts with nginx configured by the recipe's own server block, port 80 published."""
    app = {"recipe": recipe, **extra.pop("app", {})}
    sb = sandbox(n, source=repo, docker_kwargs=WEB, app=app, **extra)
    site = importlib.import_module(f"deployer.recipes.{recipe}").nginx_site("/srv/app")
    for h in sb.hosts:
        sandbox_mod.serve_nginx(h, site)
    return sb


def get(host, path: str = "/", timeout: float = 5) -> tuple[int, str]:
    """GET through the host's nginx from this machine (loopback)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{host.http_port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def reload_log(sb, host) -> list[tuple[float, str, str]]:
    """python_wsgi's reload log on a host: (epoch, current target, what happened) per restart."""
    code, out = sb.exec(host, "cat /srv/app/shared/log/gunicorn-reload.log 2>/dev/null")
    rows = []
    for line in out.splitlines():
        stamp, target, what = line.split(" ", 2)
        rows.append((float(stamp), target, what))
    return rows


def deploy_ok(sb, *args: str) -> str:
    proc = cli(sb, "deploy", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def gunicorn_master(sb, host) -> int:
    code, out = sb.exec(host, "cat /srv/app/shared/tmp/pids/gunicorn.pid")
    assert code == 0, out
    return int(out)


def workers(sb, host, master: int) -> dict[int, str]:
    """Every worker of a gunicorn master: pid -> its real working directory."""
    # as the workers' user: reading another user's /proc/PID/cwd needs CAP_SYS_PTRACE
    code, out = sb.exec(
        host, f"su deploy -s /bin/sh -c 'for p in $(pgrep -P {master}); do echo $p $(readlink /proc/$p/cwd); done'"
    )
    pairs = [line.split() for line in out.splitlines()]
    return {int(pair[0]): pair[1] for pair in pairs if len(pair) == 2}  # a worker gone meanwhile: no cwd


def worker_dirs(sb, host) -> set[str]:
    """The real working directory of every worker of the recipe's gunicorn master."""
    return set(workers(sb, host, gunicorn_master(sb, host)).values())


# --- configuration level -------------------------------------------------------------------------

BASE = textwrap.dedent("""
    [app]
    name = "shop"
    deploy_to = "/srv/shop"
    {app}
    [stages.production]
    hosts = [ {{ host = "web-1", roles = ["web", "migrate"] }}, {{ host = "web-2", roles = ["web"] }} ]
    {extra}
""")


def parse(tmp_path: Path, recipe: str, app: str = "", extra: str = "") -> config.Config:
    text = BASE.format(app=f'recipe = "{recipe}"\n{app}', extra=extra)
    return config.parse(text, tmp_path / "hosts.toml")


def test_every_recipe_documents_itself_and_parses(tmp_path):
    names = sorted(m.name for m in pkgutil.iter_modules(recipes_pkg.__path__) if not m.name.startswith("_"))
    assert names == ["django", "generic", "python_wsgi", "static_site"]
    for name in names:
        module = importlib.import_module(f"deployer.recipes.{name}")
        assert module.__doc__ and module.__doc__.startswith(f"{name}: "), name
        assert isinstance(module.DEFAULTS, dict)
        cfg = parse(tmp_path, name)
        assert cfg.stage("production").pipeline == cfg.pipeline
        assert cfg.app.recipe == name
    assert (
        parse(tmp_path, "generic").pipeline
        == config.parse(BASE.format(app="", extra=""), tmp_path / "hosts.toml").pipeline
    )


def test_python_wsgi_defaults_and_user_keys_win(tmp_path):
    cfg = parse(tmp_path, "python_wsgi")
    p = cfg.pipeline
    assert [h.command for h in p.hooks_at("after_prepare")] == [python_wsgi.PREPARE]
    assert p.restart.command == python_wsgi.RESTART and p.restart.roles == ()  # every host reloads
    assert (p.verify.url, p.verify.status, p.verify.body) == ("http://127.0.0.1/health", 200, "ok")
    assert cfg.app.shared_dirs == ("log", "tmp/pids")
    assert "--chdir" in python_wsgi.RESTART and "$D/current" in python_wsgi.RESTART

    cfg = parse(
        tmp_path,
        "python_wsgi",
        app='shared_dirs = ["log"]',
        extra='[verify]\nurl = "http://127.0.0.1/up"\n[[hooks.after_prepare]]\ncommand = "bin/assets"\n',
    )
    assert cfg.app.shared_dirs == ("log",)
    assert cfg.pipeline.verify.url == "http://127.0.0.1/up" and cfg.pipeline.verify.body == "ok"
    assert [h.command for h in cfg.pipeline.hooks_at("after_prepare")] == [python_wsgi.PREPARE, "bin/assets"]


def test_django_defaults_build_on_python_wsgi(tmp_path):
    p = parse(tmp_path, "django").pipeline
    assert p.migrate.command == "venv/bin/python manage.py migrate --noinput" and p.migrate.role == "migrate"
    assert [h.command for h in p.hooks_at("after_prepare")] == [python_wsgi.PREPARE, django.COLLECTSTATIC]
    assert p.restart.command == python_wsgi.RESTART and p.verify.url == "http://127.0.0.1/health"
    assert python_wsgi.DEFAULTS["hooks"]["after_prepare"] == [{"command": python_wsgi.PREPARE}]  # not mutated
    assert "location /static/" in django.nginx_site("/srv/shop") and "/srv/shop/current/static/" in django.nginx_site(
        "/srv/shop"
    )


def test_static_site_defaults(tmp_path):
    p = parse(tmp_path, "static_site").pipeline
    assert "public/index.html" in p.smoke and not p.restart.command and p.verify.url == "http://127.0.0.1/"
    site = static_site.nginx_site("/srv/shop")
    assert "root /srv/shop/current/public;" in site and "set $release_root $realpath_root;" in site
    assert "root $release_root;" in site and "open_file_cache off;" in site


# --- on real hosts ---------------------------------------------------------------------------------


def naive_gunicorn(sb, host) -> None:
    """The trap, for comparison: gunicorn started inside `current` with a resolved working directory
    and no --chdir (what systemd's WorkingDirectory= gives), on port 8001."""
    code, out = sb.exec(
        host,
        "su deploy -s /bin/sh -c 'cd /srv/app/current && env -u PWD python3 -m gunicorn "
        "--daemon --pid /tmp/naive.pid --bind 127.0.0.1:8001 app:application'",
    )
    assert code == 0, out


def curl(sb, host, url: str) -> str:
    code, out = sb.exec(host, f"curl -s --max-time 5 {url}")
    return out


def test_python_wsgi_reload_serves_the_new_release_from_the_same_master(sandbox, tmp_path):
    repo = sample_repo(tmp_path, "v1")
    sb = web_hosts(sandbox, repo, "python_wsgi", 2)
    out = deploy_ok(sb)
    for h in sb.hosts:
        assert get(h) == (200, f"sample v1 {git(repo, 'rev-parse', '--short=7', 'HEAD')}\n")
        assert get(h, "/health") == (200, "ok\n")
        assert reload_log(sb, h)[-1][1] == "releases/1" and "started master" in reload_log(sb, h)[-1][2]
        assert worker_dirs(sb, h) == {"/srv/app/releases/1"}
        code, _ = sb.exec(h, "test -x /srv/app/releases/1/venv/bin/python")
        assert code == 0
    assert "verify" in out and "HTTP 200" in out
    masters = [gunicorn_master(sb, h) for h in sb.hosts]
    naive_gunicorn(sb, sb.hosts[0])

    commit(repo, "v2", {"VERSION": "v2\n"})
    deploy_ok(sb)
    for h, master in zip(sb.hosts, masters, strict=True):
        # the moment the deploy returns, every worker runs the new release, under the same master
        assert {get(h)[1].split()[1] for _ in range(20)} == {"v2"}
        assert gunicorn_master(sb, h) == master
        assert worker_dirs(sb, h) == {"/srv/app/releases/2"}
        stamp, target, what = reload_log(sb, h)[-1]
        assert target == "releases/2" and what.startswith(f"reloaded master {master}:")
    # the trap: the same HUP on a gunicorn started without --chdir from a resolved cwd keeps the old code
    first = sb.hosts[0]
    naive = int(sb.exec(first, "cat /tmp/naive.pid")[1])
    old = wait_until(lambda: workers(sb, first, naive), 30, "the naive gunicorn's workers")
    sb.exec(first, f"kill -HUP {naive}")
    # reloaded: every worker it had is gone and new ones run (in the release it started in)
    new = wait_until(
        lambda: (w := workers(sb, first, naive)) and not w.keys() & old.keys() and w,
        30,
        "the naive gunicorn's new workers after HUP",
    )
    assert set(new.values()) == {"/srv/app/releases/1"}
    assert curl(sb, first, "http://127.0.0.1:8001/").split()[1] == "v1"

    proc = cli(sb, "rollback")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for h, master in zip(sb.hosts, masters, strict=True):
        assert {get(h)[1].split()[1] for _ in range(10)} == {"v1"}
        assert gunicorn_master(sb, h) == master and worker_dirs(sb, h) == {"/srv/app/releases/1"}
    # the venv the recipe builds and the workers' __pycache__ are not drift; a hand edit is
    proc = cli(sb, "verify")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sb.exec(sb.hosts[1], "echo '# hotfix' >> /srv/app/current/app.py")
    proc = cli(sb, "verify")
    assert proc.returncode == 1 and "app.py" in proc.stdout and "host-2" in proc.stderr


def test_python_wsgi_refuses_releases_that_cannot_boot(sandbox, tmp_path):
    repo = sample_repo(tmp_path, "v1")
    sb = web_hosts(sandbox, repo, "python_wsgi", 2)
    deploy_ok(sb)
    commit(
        repo,
        "preload",
        {"VERSION": "v2\n", "gunicorn.conf.py": (SAMPLE_APP / "gunicorn.conf.py").read_text() + "preload_app = True\n"},
    )
    proc = cli(sb, "deploy")
    assert proc.returncode == 1 and "preload_app = True is refused" in proc.stdout + proc.stderr
    commit(
        repo,
        "broken import",
        {"gunicorn.conf.py": (SAMPLE_APP / "gunicorn.conf.py").read_text(), "app.py": "import no_such_module_here\n"},
    )
    proc = cli(sb, "deploy")
    assert proc.returncode == 1 and "gunicorn cannot load this release" in proc.stdout + proc.stderr
    assert "no_such_module_here" in proc.stdout + proc.stderr
    commit(repo, "no gunicorn config", {"app.py": (SAMPLE_APP / "app.py").read_text()}, remove=("gunicorn.conf.py",))
    proc = cli(sb, "deploy")
    assert proc.returncode == 1 and "gunicorn.conf.py missing" in proc.stdout + proc.stderr
    for h in sb.hosts:  # nothing switched, nothing reloaded: v1 still serves
        assert current(sb, h) == "releases/1" and get(h)[1].split()[1] == "v1"
        assert len(reload_log(sb, h)) == 1


def _wheel(directory: Path) -> None:
    """A tiny pure-Python wheel, so requirements.txt installs offline (the hosts have no internet)."""
    import base64
    import hashlib
    import zipfile

    files = {
        "tinydep/__init__.py": "VALUE = 'from the wheel'\n",
        "tinydep-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: tinydep\nVersion: 1.0\n",
        "tinydep-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    record.append("tinydep-1.0.dist-info/RECORD,,")
    directory.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(directory / "tinydep-1.0-py3-none-any.whl", "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
        z.writestr("tinydep-1.0.dist-info/RECORD", "\n".join(record) + "\n")


@pytest.mark.slow  # a venv with pip (ensurepip) per deploy
def test_python_wsgi_builds_the_release_venv_with_requirements_offline(sandbox, tmp_path):
    repo = sample_repo(tmp_path, "v1", **{"requirements.txt": "tinydep==1.0\n"})
    _wheel(repo / "wheels")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "wheel")
    sb = web_hosts(sandbox, repo, "python_wsgi", 1)
    deploy_ok(sb)
    h = sb.hosts[0]
    code, out = sb.exec(h, "/srv/app/current/venv/bin/python -c 'import tinydep, gunicorn; print(tinydep.VALUE)'")
    assert code == 0 and out.strip() == "from the wheel", out
    code, out = sb.exec(h, "python3 -c 'import tinydep'")
    assert code != 0  # in the release's venv only
    assert get(h)[1].startswith("sample v1 ")


FAKE_MANAGE = '''\
#!/usr/bin/env python3
"""A stand-in for Django's manage.py: records each call, collectstatic writes static/."""
import os
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
command = sys.argv[1]
with open(os.path.join(os.environ["DEPLOY_TO"], "shared", "manage.log"), "a") as log:
    log.write(f"{command} {os.environ.get('DEPLOY_HOST', '?')} {here.name} {' '.join(sys.argv[2:])}\\n")
if command == "collectstatic":
    (here / "static").mkdir(exist_ok=True)
    (here / "static" / "site.css").write_text("/* " + (here / "VERSION").read_text().strip() + " */\\n")
'''


def test_django_migrates_once_and_collects_static_on_every_host(sandbox, tmp_path):
    repo = sample_repo(tmp_path, "v1", **{"manage.py": FAKE_MANAGE})
    sb = web_hosts(sandbox, repo, "django", 3)
    deploy_ok(sb)
    commit(repo, "v2", {"VERSION": "v2\n"})
    deploy_ok(sb)
    for i, h in enumerate(sb.hosts):  # shared/ is per host: only host-1 (role migrate) migrated
        code, log = sb.exec(h, "cat /srv/app/shared/manage.log")
        calls = sorted(tuple(line.split()) for line in log.splitlines())
        expected = [("collectstatic", h.name, n, "--noinput") for n in "12"]
        expected += [("migrate", h.name, n, "--noinput") for n in "12"] if i == 0 else []
        assert calls == sorted(expected), log
    for h in sb.hosts:
        assert get(h, "/static/site.css") == (200, "/* v2 */\n")
        assert get(h)[1].startswith("sample v2 ")
    code, out = sb.exec(0, "cat /srv/app/releases/2/.deployer/migrated")
    assert code == 0 and "digest" in out


def test_static_site_served_by_nginx_straight_from_current(sandbox, tmp_path):
    repo = make_repo(
        tmp_path / "site",
        {
            "public/index.html": "<h1>v1</h1>\n",
            "public/about.html": "about v1\n",
            "public/docs/index.html": "docs v1\n",
        },
    )
    sb = web_hosts(sandbox, repo, "static_site", 2)
    deploy_ok(sb)
    for h in sb.hosts:
        assert get(h) == (200, "<h1>v1</h1>\n")
        assert get(h, "/about") == (200, "about v1\n") and get(h, "/docs/") == (200, "docs v1\n")
        assert get(h, "/missing")[0] == 404
    commit(
        repo,
        "v2",
        {"public/index.html": "<h1>v2</h1>\n", "public/about.html": "about v2\n"},
        remove=("public/docs/index.html",),
    )
    out = deploy_ok(sb)
    assert "restart" not in out
    for h in sb.hosts:  # no reload of anything: the next request is served from the new release
        assert get(h) == (200, "<h1>v2</h1>\n") and get(h, "/about.html") == (200, "about v2\n")
        assert get(h, "/docs/")[0] == 404
    assert cli(sb, "rollback").returncode == 0
    for h in sb.hosts:
        assert get(h) == (200, "<h1>v1</h1>\n") and get(h, "/docs/") == (200, "docs v1\n")
    commit(repo, "no index", remove=("public/index.html",))
    proc = cli(sb, "deploy")
    assert proc.returncode == 1 and "public/index.html missing" in proc.stdout + proc.stderr
    assert all(current(sb, h) == "releases/1" for h in sb.hosts)


def test_generic_recipe_is_the_plain_flow(sandbox, app_repo):
    sb = sandbox(2, app={"recipe": "generic"})
    out = deploy_ok(sb)
    assert "restart" not in out and "verify" not in out
    commit(app_repo, "two", {"x.txt": "2\n"})
    deploy_ok(sb)
    for h in sb.hosts:
        assert current(sb, h) == "releases/2"
        code, out = sb.exec(h, "cat /srv/app/current/x.txt && ls /srv/app/current")
        assert out.split()[0] == "2" and "venv" not in out
