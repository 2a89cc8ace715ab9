"""static_site: files served by nginx straight from the current release's ``public/`` directory.

No app server and no restart: nginx resolves ``current`` when it opens a file, so the next request
after the switch is served from the new release. The recipe's server block (``nginx_site()``)
resolves ``current`` once per request — ``set $release_root $realpath_root`` at server level, then
``root $release_root`` — so every lookup of one request (``try_files`` candidates, the file itself)
sees the same release, even while ``current`` flips. ``try_files`` tries ``$uri/index.html`` first
instead of relying on ``index`` (its internal redirect would resolve ``current`` again), and
``open_file_cache`` stays off.

What the recipe adds to the flow:

- ``smoke``: ``public/index.html`` must exist in the new release (before any host switches).
- ``verify``: ``GET http://127.0.0.1/`` on each host must answer 200.

Releases stay complete on disk until cleanup (never ``current`` or the one it replaced), so a
request pinned to the previous release can still finish after the switch.
"""

from __future__ import annotations

from . import timed_log

SMOKE = "test -f public/index.html || { echo 'static_site: public/index.html missing in the release' >&2; exit 1; }"

DEFAULTS: dict = {
    "smoke": {"command": SMOKE},
    "verify": {"url": "http://127.0.0.1/", "status": 200, "retries": 3, "interval": 1.0, "timeout": 5},
}


def nginx_site(deploy_to: str = "/srv/app") -> str:
    """The server block: one release per request, no caches that outlive a switch; logged with
    the request times the canary analysis reads (recipes.timed_log)."""
    log_format, access_log = timed_log(deploy_to)
    return f"""{log_format}server {{
    listen 80 default_server;
    server_name _;
{access_log}

    root {deploy_to}/current/public;
    # resolve `current` once per request: every lookup below uses the same release
    set $release_root $realpath_root;
    open_file_cache off;

    location / {{
        root $release_root;
        try_files $uri/index.html $uri $uri.html =404;
    }}
}}
"""
