"""django: a Django project on the python_wsgi recipe, plus migrations and collected static files.

Everything python_wsgi does (self-contained ``venv/``, gunicorn config and app checked before the
switch, graceful reload, health check through nginx), and:

- ``[migrate]``: ``venv/bin/python manage.py migrate --noinput``, once per deploy, on the first host
  with the ``migrate`` role, in the new release, before any host switches. No ``rollback_command``
  by default: a Django down-migration needs the target migration names
  (``manage.py migrate <app> <migration>``); set one if you want ``rollback --with-migrations``.
- ``after_prepare`` on every host (after the venv is built): ``manage.py collectstatic --noinput``,
  so ``STATIC_ROOT`` (point it inside the release, e.g. ``BASE_DIR / "static"``) holds this
  release's assets and nginx serves ``/static/`` through ``current`` — never another release's.

``gunicorn.conf.py`` needs ``wsgi_app = "<project>.wsgi:application"``. Settings the app reads from
the environment (SECRET_KEY, DATABASE_URL) must be there for ``manage.py`` and for gunicorn: the
release's ``.env`` (rendered from ``[env]`` for that release) read by the settings module from
``BASE_DIR / ".env"``, or loaded in ``gunicorn.conf.py``.
"""

from __future__ import annotations

import copy

from . import python_wsgi

MIGRATE = "venv/bin/python manage.py migrate --noinput"
COLLECTSTATIC = "venv/bin/python manage.py collectstatic --noinput"

DEFAULTS: dict = copy.deepcopy(python_wsgi.DEFAULTS)
DEFAULTS["hooks"]["after_prepare"].append({"command": COLLECTSTATIC})
DEFAULTS["migrate"] = {"command": MIGRATE, "role": "migrate"}
DEFAULTS["app"]["generated"] = ["venv", "static"]

systemd_unit = python_wsgi.systemd_unit


def nginx_site(deploy_to: str = "/srv/app", upstream: str = "127.0.0.1:8000") -> str:
    """python_wsgi's server block plus /static/ straight from the current release's STATIC_ROOT."""
    base = python_wsgi.nginx_site(deploy_to, upstream)
    static = f"""

    location /static/ {{
        alias {deploy_to}/current/static/;
        expires 1h;
    }}
}}
"""
    return base[: base.rstrip().rindex("}")] + static.lstrip("\n")
