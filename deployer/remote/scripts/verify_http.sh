# Fetch URL from the host itself (curl, else python3 with FETCH_PY) until it answers STATUS (and
# has BODY, when not empty), at most RETRIES times, INTERVAL seconds apart.
# Inputs: URL, STATUS, BODY, WITHOUT (how the failure names BODY), TIMEOUT, RETRIES, INTERVAL, FETCH_PY.
f=$(mktemp); trap 'rm -f "$f"' EXIT; i=0
while :; do
  i=$((i+1))
  if command -v curl >/dev/null 2>&1; then code=$(curl -s -o "$f" -w '%{http_code}' --max-time "$TIMEOUT" "$URL" || true)
  else code=$(python3 -c "$FETCH_PY" "$URL" "$TIMEOUT" "$f" 2>/dev/null || echo 0); fi
  if [ "$code" = "$STATUS" ] && { [ -z "$BODY" ] || grep -qF -- "$BODY" "$f"; }; then
    echo "HTTP $code after $i attempt(s)"; exit 0
  fi
  if [ $i -ge "$RETRIES" ]; then
    printf '%s %s%s (expected %s) after %s attempt(s)\n' "health check failed: $URL answered HTTP" "$code" "$WITHOUT" "$STATUS" "$i" >&2
    head -c 300 "$f" >&2; exit 1
  fi
  sleep "$INTERVAL"
done
