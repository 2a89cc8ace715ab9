"""`deployer setup`'s one script per host: setup.sh with the host's plan (plan/setup.py), run as
root; a host without systemd, or a login that cannot sudo without a password, is refused before
anything is written."""

from __future__ import annotations

import shlex

from deployer.plan import setup as setup_plan
from deployer.plan.setup import HostSetup
from deployer.remote.render import Value, render

q = shlex.quote

SETUP_REFUSED = 40  # setup.sh: this host cannot take setup; nothing was written


def setup(host: HostSetup, *, dry_run: bool) -> str:
    """setup.sh with one host's plan (see plan/setup.py), run as root: through `sudo -n` when the
    login is not root (a login that cannot sudo without a password is refused, exit 40)."""
    values: dict[str, Value] = {
        "DRY_RUN": dry_run,
        "DEPLOY_USER": host.user,
        "CREATE_USER": host.create_user,
        "DIRS": host.dirs,
        "UNIT_NAME": setup_plan.unit_name(host.app),
        "UNIT_PATH": host.unit.path if host.unit else "",
        "UNIT": host.unit.content if host.unit else "",
        "SUDOERS_PATH": host.sudoers.path if host.sudoers else "",
        "SUDOERS": host.sudoers.content if host.sudoers else "",
        "SITE_PATH": host.site.path if host.site else "",
        "SITE": host.site.content if host.site else "",
        "SITE_LINK": host.site_link,
        "DEFAULT_SITE": setup_plan.DEFAULT_SITE,
        "SYSTEMCTL": setup_plan.SYSTEMCTL,
        "NGINX": setup_plan.NGINX,
    }
    script = render(["setup.sh"], values)
    no_systemd = q("setup: no systemd on this host (/run/systemd/system is missing)")
    refused = q("setup: this login may not run sudo without a password (log in as root: --login root)")
    return (
        f"[ -d /run/systemd/system ] || {{ echo {no_systemd} >&2; exit {SETUP_REFUSED}; }}\n"
        'if [ "$(id -u)" != 0 ]; then\n'
        f"  sudo -n true 2>/dev/null || {{ echo {refused} >&2; exit {SETUP_REFUSED}; }}\n"
        f"  exec sudo -n sh -c {q(script)}\n"
        "fi\n" + script
    )
