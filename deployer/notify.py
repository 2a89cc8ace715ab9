"""Tell people what happened: webhooks (Slack-compatible JSON) and/or a local command.

Failures are always sent, whatever `events` says. A notification that cannot be delivered is
reported on stderr, never silently dropped, and never fails the deploy itself.
"""

from __future__ import annotations

import json
import subprocess
import sys

from .config import NotifySettings
from .output import redact as output_redact

ALWAYS = ("failed", "rolled back")


def message(event: str, data: dict) -> str:
    icon = {"started": "▶", "succeeded": "✔", "failed": "✖", "rolled back": "↩"}.get(event, "")
    head = f"{icon} {data.get('action', 'deploy')} {event}: {data.get('app', '')} {data.get('version', '')}"
    head += f" to {data.get('stage', '')}"
    if data.get("release") is not None:
        head += f" (release {data['release']})"
    if data.get("error"):
        head += f": {data['error']}"
    return head.strip()


def send(settings: NotifySettings, event: str, data: dict, redact=output_redact) -> list[str]:
    """Deliver one event; returns the delivery errors (also printed to stderr)."""
    if event not in settings.events and event not in ALWAYS:
        return []
    payload = {"text": redact(message(event, data)), "event": event,
               **{k: redact(v) if isinstance(v, str) else v for k, v in data.items()}}
    body = json.dumps(payload, sort_keys=True, default=str).encode()
    import urllib.request        # loaded only when something is sent (~20 ms)

    errors = []
    for url in settings.webhooks:
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=settings.timeout) as response:
                response.read(1024)
        except Exception as exc:     # any failure to deliver is reported, never raised
            errors.append(f"webhook {_safe_url(url)}: {exc}")
    if settings.command:
        try:
            proc = subprocess.run(settings.command, shell=True, input=body, capture_output=True,
                                  timeout=settings.timeout * 2,
                                  env={"DEPLOY_EVENT": event, **_env_base()})
            if proc.returncode != 0:
                errors.append(f"notify command exited {proc.returncode}: "
                              f"{proc.stderr.decode(errors='replace').strip()[-200:]}")
        except (OSError, subprocess.TimeoutExpired) as exc:
            errors.append(f"notify command: {exc}")
    for err in errors:
        print(f"warning: notification '{event}' not delivered: {redact(err)}", file=sys.stderr, flush=True)
    return errors


def _safe_url(url: str) -> str:
    """Webhook URLs often carry a token in the path: show only scheme and host."""
    parts = url.split("/")
    return "/".join(parts[:3]) + "/…" if len(parts) > 3 else url


def _env_base() -> dict:
    import os
    return {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "USER")}
