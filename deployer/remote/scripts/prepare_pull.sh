# Part of prepare, for a pull: the artifact downloaded from the store into "$PART".
# Inputs: STORE_ENDPOINT (the store as this host reaches it, for messages), PULL_PY (the python3
# fallback). stdin: after the env, one line holding the presigned URL: a secret, so it reaches
# curl through its config on a pipe (-K -) or python3 on stdin, never a command line.
# A failed download exits 26 naming why; the caller checks the sha256 as for an upload.
pull_artifact() {
  IFS= read -r url || :
  rc=0
  if command -v curl >/dev/null 2>&1; then
    code=$(printf 'url = "%s"\n' "$url" | curl -sS -f --connect-timeout 10 -o "$PART" -w '%{http_code}' -K - 2>/dev/null) || rc=$?
  elif command -v python3 >/dev/null 2>&1; then
    code=$(printf '%s\n' "$url" | python3 -c "$PULL_PY" "$PART" 2>/dev/null) || rc=$?
  else
    echo 'artifact download failed: neither curl nor python3 on this host' >&2; exit 26
  fi
  url=
  [ $rc -ne 0 ] || return 0
  case $rc:$code in
    22:403) echo 'artifact download failed: the store refused the URL (HTTP 403: expired, or its signature does not match)' >&2 ;;
    22:404) echo 'artifact download failed: the artifact is not in the store (HTTP 404)' >&2 ;;
    22:*) echo "artifact download failed: the store answered HTTP $code" >&2 ;;
    *) echo "artifact download failed: cannot reach the store at $STORE_ENDPOINT from this host (exit $rc)" >&2 ;;
  esac
  exit 26
}
