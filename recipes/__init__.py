"""App recipes (installed as deployer.recipes): defaults and hooks for kinds of apps."""

# The access log the canary analysis reads (docs/canary-analysis.md): nginx's "combined" plus
# $request_time and $upstream_response_time, the times the p50_ms / p99_ms measures need.
TIMED_LOG_FORMAT = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent" $request_time $upstream_response_time'
)


def timed_log(deploy_to: str, path: str = "/var/log/nginx/access.log") -> tuple[str, str]:
    """(the log_format line for the http level, the access_log line for the server block). The
    format's name is the site's own (two sites on one nginx never define one name twice)."""
    name = "timed_" + "".join(c if c.isalnum() else "_" for c in deploy_to.strip("/"))
    return f"log_format {name} '{TIMED_LOG_FORMAT}';\n", f"    access_log {path} {name};"
