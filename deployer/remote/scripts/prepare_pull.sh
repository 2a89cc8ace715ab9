# Part of prepare, for a pull: the artifact downloaded from the store into "$PART".
# Inputs: STORE_ENDPOINT (the store as this host reaches it, for messages), PULL_PY (the python3
# fallback), STALL_TIME (seconds under 1 KiB/s that make a stall), MAX_TIME (seconds the whole
# download may take). stdin: after the env, one line holding the presigned URL: a secret, so it
# reaches curl through its config on a pipe (-K -) or python3 on stdin, never a command line.
# A failed download exits 26 naming why, a stalled or too slow one 28; the sha256 is checked
# after it, as for an upload.

# start_fetch: the download into "$PART" in the background (pulling: its pid; its HTTP status
# goes to "$PART.got"); the URL is read here, by this shell (a background job's stdin is /dev/null)
start_fetch() {
  IFS= read -r url || :
  : > "$PART"
  if command -v curl >/dev/null 2>&1; then
    printf 'url = "%s"\n' "$url" | curl -sS -f --connect-timeout 10 --speed-limit 1024 \
      --speed-time "$STALL_TIME" --max-time "$MAX_TIME" -o "$PART" -w '%{http_code} %{num_connects}' -K - \
      > "$PART.got" 2>/dev/null &
  elif command -v python3 >/dev/null 2>&1; then
    printf '%s\n' "$url" | python3 -c "$PULL_PY" "$PART" "$STALL_TIME" "$MAX_TIME" > "$PART.got" 2>/dev/null &
  else
    url=; echo 'artifact download failed: neither curl nor python3 on this host' >&2; exit 26
  fi
  pulling=$!; url=
}

# fetched: wait for the download; exit 26 (28: stalled or too slow) naming why when it failed
fetched() {
  rc=0; wait "$pulling" || rc=$?
  pulling=
  [ $rc -ne 0 ] || return 0
  code=; connects=; { read -r code connects < "$PART.got"; } 2>/dev/null || :
  [ "$rc:$connects" != 28:0 ] || rc=7 # curl's connect timeout: the store was never reached
  case $rc:$code in
    28:*)
      echo "artifact download failed: store $STORE_ENDPOINT too slow / stalled while this host fetched the artifact (under 1 KiB/s for ${STALL_TIME}s, or not done within ${MAX_TIME}s)" >&2
      exit 28 ;;
    22:403) echo 'artifact download failed: the store refused the URL (HTTP 403: expired, or its signature does not match)' >&2 ;;
    22:404) echo 'artifact download failed: the artifact is not in the store (HTTP 404)' >&2 ;;
    22:*) echo "artifact download failed: the store answered HTTP $code" >&2 ;;
    18:*) echo "artifact download failed: the connection to the store at $STORE_ENDPOINT broke before the whole artifact arrived" >&2 ;;
    *) echo "artifact download failed: cannot reach the store at $STORE_ENDPOINT from this host (exit $rc)" >&2 ;;
  esac
  exit 26
}

# the whole download first (receive_whole, where tail cannot follow a writer)
pull_artifact() { start_fetch; fetched; }

# Extracted while it downloads, as receive_streamed does for an upload: tar and the checksum read
# the growing file. Before anything is linked or renamed: the download's own failure (named), then
# the sha256, then tar's status (its errors shown only then: a cut download makes tar fail too).
receive_pulled() {
  if ! tail --pid=$$ -c 0 /dev/null 2>/dev/null; then receive_whole; return; fi
  start_fetch
  tail -s 0.01 --pid="$pulling" -c +1 -f "$PART" | digest > "$PART.sum" &
  t=$!
  rc_tar=0
  tail -s 0.01 --pid="$pulling" -c +1 -f "$PART" | tar -xzf - -C "$TMP_RELEASE" --no-same-owner 2> "$PART.err" ||
    rc_tar=$?
  wait "$t" || :
  fetched
  got=$(cut -d' ' -f1 "$PART.sum")
  if [ "$got" != "$SHA256" ]; then mismatch; fi
  cat "$PART.err" >&2
  if [ $rc_tar -ne 0 ]; then no_space; exit $rc_tar; fi
  mv -f "$PART" "$CACHED"; rm -f "$PART.sum" "$PART.got" "$PART.err"
}
