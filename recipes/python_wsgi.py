"""python_wsgi: a Python WSGI app run by gunicorn behind nginx, reloaded without a failed request.

The release: the app's code at its root, a ``gunicorn.conf.py`` there (``wsgi_app``, ``bind``,
``workers``...; never ``preload_app``), optionally ``requirements.txt`` (and ``wheels/`` for an
offline install) or a shipped ``venv/``.

What the recipe adds to the flow:

- ``after_prepare`` on every host: the release becomes self-contained — ``venv/`` is created in it
  (``python3 -m venv --system-site-packages``, unless the artifact ships ``venv/bin/python``) and
  ``requirements.txt`` installed into it; then gunicorn loads the release's config and imports its
  app (``--check-config``), so a release that cannot boot fails before any host switches.
- ``restart`` on every host: a graceful reload of the running gunicorn master (``HUP``, found via
  ``<deploy_to>/shared/tmp/pids/gunicorn.pid``) that returns only once every worker of the old
  release has finished its requests and exited; the first deploy starts the master instead. With
  the unit ``deployer setup`` installs (``/etc/systemd/system/<app>.service``), both go through
  systemd: ``sudo -n systemctl reload|start <app>.service``.
- ``verify``: ``GET http://127.0.0.1/health`` through nginx on each host must answer 200 with ``ok``.

Why a reload picks up the new release: gunicorn 20.x re-reads its configuration on ``HUP`` and
``chdir``s to the ``--chdir`` path again; the recipe starts it with ``--chdir <deploy_to>/current``
and ``--config <deploy_to>/current/gunicorn.conf.py`` (the symlink path, never a resolved one), so
each reload resolves ``current`` anew and the new workers import the new code. Started without
``--chdir`` from a resolved working directory (systemd's ``WorkingDirectory=``), or with
``preload_app``, a ``HUP`` keeps serving the old release.

Zero downtime: the listening socket belongs to the master and is never closed; on ``HUP`` the
master forks the new workers first, then stops the old ones with ``TERM`` (each finishes its
in-flight request, up to ``graceful_timeout``). A connection arriving in between waits in the
socket's backlog for a new worker. See README "Recipes" for hosts.toml, the systemd unit and nginx.
"""

from __future__ import annotations

from . import timed_log

PIDFILE = "shared/tmp/pids/gunicorn.pid"  # relative to deploy_to
RELOAD_LOG = "shared/log/gunicorn-reload.log"

# after_prepare, in the new release dir: build venv/, install requirements, let gunicorn load it all.
PREPARE = r"""# python_wsgi: self-contained release (venv/ + requirements), checked by gunicorn before any switch
set -e
if [ ! -x venv/bin/python ]; then
    if [ -f requirements.txt ]; then python3 -m venv --system-site-packages venv
    else python3 -m venv --without-pip --system-site-packages venv; fi
fi
if [ -f requirements.txt ]; then
    set -- --quiet --disable-pip-version-check --no-input -r requirements.txt
    if [ -d wheels ]; then set -- "$@" --no-index --find-links wheels; fi
    venv/bin/python -m pip install "$@"
fi
if [ ! -f gunicorn.conf.py ]; then
    echo "python_wsgi: gunicorn.conf.py missing at the release root (it sets wsgi_app and bind)" >&2; exit 1
fi
check() { PYTHONDONTWRITEBYTECODE=1 venv/bin/python -P -m gunicorn "$@" --chdir "$(pwd -P)" --config gunicorn.conf.py; }
if ! out=$(check --check-config 2>&1); then
    printf '%s\n' "$out" | tail -n 15 >&2
    echo "python_wsgi: gunicorn cannot load this release (config or app import failed)" >&2; exit 1
fi
if check --print-config 2>&1 | grep -Eq '^preload_app +=[ ]+True'; then
    echo "python_wsgi: preload_app = True is refused: a reloaded master would keep serving the old code" >&2; exit 1
fi
"""

# restart, in a release dir (the deploy's, or the rollback target's): reload or start gunicorn.
RESTART = r"""# python_wsgi: graceful gunicorn reload; returns once no worker of the old release is left
set -eu
D=${DEPLOY_TO:-$(cd ../.. && pwd)}
pidfile=$D/shared/tmp/pids/gunicorn.pid
log=$D/shared/log
limit=${GUNICORN_RELOAD_TIMEOUT:-60}
mkdir -p "${pidfile%/*}" "$log"
t0=$(date +%s.%N)
unit=''                                  # installed by `deployer setup`: systemd runs gunicorn
if [ -n "${DEPLOY_APP:-}" ] && [ -f "/etc/systemd/system/$DEPLOY_APP.service" ]; then unit=$DEPLOY_APP.service; fi
master=''
for i in 1 2 3; do                       # a reloading master rewrites its pid file: look again
    p=$(cat "$pidfile" 2>/dev/null || true)
    if [ -n "$p" ] && [ -r "/proc/$p/cmdline" ] && tr '\0' ' ' < "/proc/$p/cmdline" | grep -q gunicorn; then
        master=$p; break
    fi
    sleep 0.1
done
kids() { pgrep -P "$1" | tr '\n' ' '; }
if [ -n "$master" ]; then
    old=$(kids "$master")
    if [ -n "$unit" ] && systemctl is-active -q "$unit"; then
        sudo -n systemctl reload "$unit" || { echo "python_wsgi: cannot reload $unit (sudo rule?)" >&2; exit 1; }
    else kill -HUP "$master"; fi
    while :; do
        now=$(kids "$master"); left=''
        for p in $old; do case " $now " in *" $p "*) left="$left $p";; esac; done
        [ -z "$left" ] && [ -n "$now" ] && break
        if [ ! -d "/proc/$master" ]; then
            tail -n 20 "$log/gunicorn.log" >&2 2>/dev/null || true
            echo "python_wsgi: gunicorn master $master exited during the reload (see $log/gunicorn.log)" >&2; exit 1
        fi
        if [ $(( $(date +%s) - ${t0%.*} )) -ge "$limit" ]; then
            echo "python_wsgi: old gunicorn workers$left still running after ${limit}s" >&2; exit 1
        fi
        sleep 0.05
    done
    what="reloaded master $master: workers $old-> $now"
else
    conf=$D/current/gunicorn.conf.py
    [ -f "$conf" ] || { echo "python_wsgi: no $conf: nothing to start" >&2; exit 1; }
    if [ -n "$unit" ]; then
        sudo -n systemctl start "$unit" || { echo "python_wsgi: cannot start $unit (sudo rule?)" >&2; exit 1; }
    elif [ -x "$D/shared/bin/start-gunicorn" ]; then
        "$D/shared/bin/start-gunicorn" </dev/null >>"$log/gunicorn.log" 2>&1
    else
        py=$D/current/venv/bin/python; [ -x "$py" ] || py=python3
        (cd / && "$py" -P -m gunicorn --daemon --chdir "$D/current" --config "$conf" --pid "$pidfile" \
            --error-logfile "$log/gunicorn.log" </dev/null >>"$log/gunicorn.log" 2>&1)
    fi
    master=''
    while :; do
        p=$(cat "$pidfile" 2>/dev/null || true)
        if [ -n "$p" ] && [ -d "/proc/$p" ] && [ -n "$(kids "$p")" ]; then master=$p; break; fi
        if [ $(( $(date +%s) - ${t0%.*} )) -ge "$limit" ]; then
            tail -n 20 "$log/gunicorn.log" >&2 2>/dev/null || true
            echo "python_wsgi: gunicorn did not start within ${limit}s (see $log/gunicorn.log)" >&2; exit 1
        fi
        sleep 0.1
    done
    what="started master $master: workers $(kids "$master")"
fi
line="$(date +%s.%N) $(readlink "$D/current") $what"
printf '%s\n' "$line" >> "$log/gunicorn-reload.log"
printf '%s\n' "$line"
"""

DEFAULTS: dict = {
    "app": {"shared_dirs": ["log", "tmp/pids"], "generated": ["venv"]},
    "hooks": {"after_prepare": [{"command": PREPARE}]},
    "restart": {"command": RESTART},
    "verify": {
        "url": "http://127.0.0.1/health",
        "status": 200,
        "body": "ok",
        "retries": 5,
        "interval": 1.0,
        "timeout": 5,
    },
}


def nginx_site(deploy_to: str = "/srv/app", upstream: str = "127.0.0.1:8000") -> str:
    """The nginx server block the recipe expects: everything proxied to gunicorn's bind address,
    logged with the request times the canary analysis reads (recipes.timed_log)."""
    log_format, access_log = timed_log(deploy_to)
    return f"""{log_format}server {{
    listen 80 default_server;
    server_name _;
{access_log}

{_proxy_to(upstream)}}}
"""


def _proxy_to(upstream: str) -> str:
    """The location block both sites use: every request proxied to ``upstream``."""
    return f"""    location / {{
        proxy_pass http://{upstream};
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_read_timeout 60s;
    }}
"""


def lb_site(name: str = "app", weights_file: str = "/etc/nginx/deployer/app-weights.conf") -> str:
    """The nginx config of a load balancer (a host with role ``lb``) in front of the app hosts: one
    upstream whose servers and weights are the lines of ``weights_file`` (a deploy with ``[canary]
    steps`` rewrites that file at each step, then puts it back), and the server block proxying to
    it. ``zone`` shares the round robin between nginx's workers, so the shares hold exactly."""
    return f"""upstream {name} {{
    zone {name}_upstream 64k;
    include {weights_file};
}}

server {{
    listen 80 default_server;
    server_name _;

{_proxy_to(name)}}}
"""


def lb_weights(servers: list[str]) -> str:
    """The weights file before any canary: every app host (``host:port`` as the lb reaches it) with
    the same weight."""
    return "".join(f"server {server} weight=1;\n" for server in servers)


def systemd_unit(name: str = "app", deploy_to: str = "/srv/app", user: str = "deploy") -> str:
    """A gunicorn unit matching the recipe: the same pid file, --chdir and --config through current."""
    return f"""[Unit]
Description={name} (gunicorn)
After=network.target

[Service]
Type=notify
User={user}
Group={user}
# --chdir/--config through the current symlink: every reload (HUP) resolves it again.
ExecStart={deploy_to}/current/venv/bin/python -P -m gunicorn --chdir {deploy_to}/current \\
    --config {deploy_to}/current/gunicorn.conf.py --pid {deploy_to}/{PIDFILE} \\
    --error-logfile {deploy_to}/shared/log/gunicorn.log
ExecReload=/bin/kill -s HUP $MAINPID
KillMode=mixed
TimeoutStopSec=30
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""
