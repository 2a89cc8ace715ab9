# Part of prepare: the artifact into $TMP_RELEASE (received, streamed, or from the cache), checked.

mismatch() {
  printf '%s %s %s\n' "artifact sha256 mismatch on host: expected $SHA256, got" "$got" '(truncated or corrupted in transit)' >&2
  exit 23
}

# GNU tar reports a full disk only as "Wrote only N of M bytes": probe, and say it plainly
no_space() {
  if ! head -c 65536 /dev/zero > "$TMP_RELEASE/.space-probe" 2>/dev/null; then
    echo "no space left on device: extracting release $NUMBER into $RELEASES failed" >&2
  fi
}

# received whole and checked before tar reads it: on a fast link (hosts short of CPU) that
# measured faster than streaming into tar
receive_whole() {
  if [ -n "$PULL" ]; then pull_artifact; else cat > "$PART"; fi
  got=$(digest "$PART" | cut -d' ' -f1)
  if [ "$got" != "$SHA256" ]; then mismatch; fi
  mv -f "$PART" "$CACHED"
  rc=0; tar -xzf "$CACHED" -C "$TMP_RELEASE" --no-same-owner || rc=$?
  if [ $rc -ne 0 ]; then no_space; exit $rc; fi
}

# The upload stored at the link's pace while tar and the checksum read the growing file as fast
# as the host's CPU allows: a busy tar never holds up the upload (through a pipe it would, the SSH
# window staying shut until the pipe drains). tail ends once the writer did and all is read: new
# data wakes it at once (inotify), the writer's exit within `-s` (it polls the pid). A tail
# without --pid (busybox) takes receive_whole instead.
receive_streamed() {
  if ! tail --pid=$$ -c 0 /dev/null 2>/dev/null; then receive_whole; return; fi
  : > "$PART"; exec 3<&0
  cat <&3 >> "$PART" & w=$!
  tail -s 0.01 --pid="$w" -c +1 -f "$PART" | digest > "$PART.sum" &
  rc=0; tail -s 0.01 --pid="$w" -c +1 -f "$PART" | tar -xzf - -C "$TMP_RELEASE" --no-same-owner || rc=$?
  wait "$w" || rc=$?; wait $! || :
  got=$(cut -d' ' -f1 "$PART.sum")
  if [ $rc -ne 0 ] || [ "$got" != "$SHA256" ]; then no_space; fi
  if [ "$got" != "$SHA256" ]; then mismatch; fi
  [ $rc -eq 0 ] || exit $rc
  mv -f "$PART" "$CACHED"; rm -f "$PART.sum"
}

# checked when it was stored, checksummed again while it is extracted (the sum goes to this
# run's unused upload file, which the trap removes); a bad copy is removed
extract_cached() {
  digest "$CACHED" > "$PART" 2>/dev/null &
  rc=0; tar -xzf "$CACHED" -C "$TMP_RELEASE" --no-same-owner || rc=$?
  wait $! || :
  got=$(cut -d' ' -f1 "$PART")
  if [ "$got" != "$SHA256" ]; then rm -f "$CACHED"; mismatch; fi
  if [ $rc -ne 0 ]; then no_space; exit $rc; fi
}
