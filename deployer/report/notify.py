"""Tell people what happened: webhooks (Slack-compatible JSON) and/or a local command.

Failures are always sent, whatever `events` says. A notification that cannot be delivered is
reported on stderr, never silently dropped, and never fails the deploy itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

from deployer.config.settings import NotifySettings
from deployer.redact import MASK, add_secret, redact_data
from deployer.report.output import note

ALWAYS = ("failed", "rolled back")
ATTEMPTS = 2  # a webhook that fails is tried once more, after BACKOFF seconds
BACKOFF = 1.0


def message(event: str, data: dict) -> str:
    icon = {"started": "▶", "succeeded": "✔", "failed": "✖", "rolled back": "↩"}.get(event, "")
    head = f"{icon} {data.get('action', 'deploy')} {event}: {data.get('app', '')} {data.get('version', '')}"
    head += f" to {data.get('stage', '')}"
    if data.get("release") is not None:
        head += f" (release {data['release']})"
    if data.get("error"):
        head += f": {data['error']}"
    return head.strip()


def send(settings: NotifySettings, event: str, data: dict) -> list[str]:
    """Deliver one event; returns the delivery errors (also printed to stderr). Every string in
    the payload has the run's secret values masked before it is serialised."""
    if event not in settings.events and event not in ALWAYS:
        return []
    payload = redact_data({"text": message(event, data), "event": event, **data})
    body = json.dumps(payload, sort_keys=True, default=str).encode()
    import urllib.request  # loaded only when something is sent: not every run pays the import

    errors = []
    for ref in settings.webhooks:
        try:
            url = webhook_url(ref)
        except ValueError as exc:
            errors.append(str(exc))
            continue
        bare, headers = _credentials(url)
        request = urllib.request.Request(bare, data=body, headers={"Content-Type": "application/json", **headers})
        for attempt in range(ATTEMPTS):
            try:
                with urllib.request.urlopen(request, timeout=settings.timeout) as response:
                    response.read(1024)
                break
            except Exception as exc:  # any failure to deliver is reported, never raised
                if attempt + 1 < ATTEMPTS and _worth_retrying(exc):
                    time.sleep(BACKOFF)
                    continue
                tries = f" (after {attempt + 1} attempts)" if attempt else ""
                errors.append(f"webhook {_label(ref, url)}: {_scrub(str(exc), url)}{tries}")
                break
    if settings.command:
        try:
            proc = subprocess.run(
                settings.command,
                shell=True,
                input=body,
                capture_output=True,
                timeout=settings.timeout * 2,
                env=command_env(event, data),
            )
            if proc.returncode != 0:
                errors.append(
                    f"notify command exited {proc.returncode}: {proc.stderr.decode(errors='replace').strip()[-200:]}"
                )
        except (OSError, subprocess.TimeoutExpired) as exc:
            errors.append(f"notify command: {exc}")
    errors = redact_data(errors)
    for err in errors:
        note(f"warning: notification '{event}' not delivered: {err}")
    return errors


def _credentials(url: str) -> tuple[str, dict]:
    """A URL's user:password@ taken out of it and sent as HTTP basic auth instead."""
    from base64 import b64encode
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.username is None:
        return url, {}
    host = parts.netloc.rpartition("@")[2]
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
    return urlunsplit(parts._replace(netloc=host)), {"Authorization": "Basic " + b64encode(pair).decode()}


def _safe_url(url: str) -> str:
    """Webhook URLs carry tokens (in user:password@, the path or the query): only scheme, host
    and port are shown."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "(webhook URL)"
    rest = "/…" if parts.path.strip("/") or parts.query or parts.fragment else ""
    return f"{parts.scheme}://{host}{rest}"


def _scrub(text: str, url: str) -> str:
    """An error message with the webhook URL's secret parts masked (some errors quote the URL)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return text.replace(url, MASK)
    userinfo = parts.netloc.rpartition("@")[0]
    secret_parts = [
        url,
        userinfo,
        parts.password or "",
        parts.path.lstrip("/") if parts.path.strip("/") else "",
        parts.query,
    ]
    for part in sorted(filter(None, secret_parts), key=len, reverse=True):
        text = text.replace(part, MASK)
    return text


def command_env(event: str, data: dict) -> dict:
    """The notify command's environment: the deployer's own (CI variables included, as any CI
    step sees them), plus DEPLOY_EVENT and what the payload says of the run as DEPLOY_* names."""
    env = dict(os.environ)
    env["DEPLOY_EVENT"] = event
    for key in ("action", "app", "stage", "version", "release", "error"):
        value = data.get(key)
        env[f"DEPLOY_{key.upper()}"] = "" if value is None else str(redact_data(str(value)))
    return env


def webhook_url(ref: str) -> str:
    """A webhook as configured: a URL, or env:NAME / file:PATH holding one (masked in all output
    from here on). ValueError (naming the reference, never its value) when it cannot be read."""
    kind, _, rest = ref.partition(":")
    if kind == "env":
        url = os.environ.get(rest, "").strip()
        if not url:
            raise ValueError(f"webhook {ref}: the variable is not set")
    elif kind == "file":
        try:
            with open(rest, encoding="utf-8") as fh:
                url = fh.read().strip()
        except OSError as exc:
            raise ValueError(f"webhook {ref}: cannot read it: {exc.strerror}") from None
    else:
        return ref
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"webhook {ref}: does not hold an http(s) URL")
    add_secret(url)
    return url


def _label(ref: str, url: str) -> str:
    return f"{ref} ({_safe_url(url)})" if ref != url else _safe_url(url)


def _worth_retrying(exc: Exception) -> bool:
    """A refused or reset connection, a timeout, a 5xx or 429: once more. Other 4xx answers will not change."""
    code = getattr(exc, "code", None)
    return not isinstance(code, int) or code >= 500 or code == 429
