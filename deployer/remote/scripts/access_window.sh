# The access log lines written since the last check, summarised here: never the lines themselves.
# The window starts at byte OFFSET of the file that had inode INODE and ends at the log's size now.
# Rotated since (another inode, or the file shrank): the rest of the rotated LOG.1 if it is that
# file, then the new LOG from 0. INODE empty: only mark where the next window starts.
# TIMED (1): the lines end in $request_time $upstream_response_time (the "deployer" log format).
# Prints: inode size requests non_5xx unparsed p50_ms p99_ms rotated (0 no | 1 read LOG.1 | 2 lost)
# Inputs: LOG, INODE, OFFSET, TIMED.
export LC_ALL=C
now=$(stat -L -c '%i %s' -- "$LOG" 2>&1) || { printf 'cannot read %s: %s\n' "$LOG" "${now##*: }" >&2; exit 3; }
[ -r "$LOG" ] || { printf 'cannot read %s: permission denied\n' "$LOG" >&2; exit 3; }
inode=${now% *}; size=${now#* }
if [ -z "$INODE" ]; then echo "$inode $size 0 0 0 - - 0"; exit 0; fi
rotated=0; from=$OFFSET
if [ "$inode" != "$INODE" ] || [ "$size" -lt "$OFFSET" ]; then
  rotated=2; from=0
  old=$(stat -L -c '%i %s' -- "$LOG.1" 2>/dev/null || true)
  if [ "$inode" != "$INODE" ] && [ "${old% *}" = "$INODE" ] && [ "${old#* }" -ge "$OFFSET" ]; then rotated=1; fi
fi
{
  if [ "$rotated" = 1 ]; then tail -c +"$((OFFSET + 1))" -- "$LOG.1"; fi
  tail -c +"$((from + 1))" -- "$LOG" | head -c "$((size - from))"
} | awk -F '\n' -v timed="$TIMED" -v head="$inode $size" -v rotated="$rotated" '
  function pct(p,   need, seen, v) {
    if (!n) return "-"
    need = int((p * n + 99) / 100)
    for (v = 0; v <= top; v++) if (v in h) { seen += h[v]; if (seen >= need) return v }
    return top
  }
  {
    if (!match($0, /\] "[^"]*" [1-5][0-9][0-9] /)) { bad++; next }
    req++
    if (substr($0, RSTART + RLENGTH - 4, 1) != "5") ok++
    if (timed == 1 && match($0, /" [0-9]+(\.[0-9]+)? [^"]*$/)) {
      t = substr($0, RSTART + 2); sub(/ .*/, "", t)
      ms = int(t * 1000 + 0.5); if (ms > 600000) ms = 600000
      h[ms]++; n++; if (ms > top) top = ms
    }
  }
  END { printf "%s %d %d %d %s %s %s\n", head, req, ok, bad, pct(50), pct(99), rotated }'
