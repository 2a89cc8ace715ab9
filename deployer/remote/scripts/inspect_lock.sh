# Part of inspect: take the lock (mkdir wins once), or report who holds it.
# Inputs: LOCK, LOCK_INFO, LOCK_TOKEN_FILE, LOCK_BEAT, LOCK_CLAIM, LOCK_FUTURE, INFO (this run's, one line),
# TOKEN, LOCK_TTL (empty: never take over), RELEASES, CACHE, DEPLOY_TO, ENV_FILE, SHARED_ENV
# (shared/<env_file>), RECORD_TAKEOVER (1: record the takeover in the ledger as TAKEOVER_PRE +
# {"holder": ..., "silent_s": ...} + TAKEOVER_POST).
mkdir -p "$STATE" 2>/dev/null || { printf '%s\n' "cannot create $STATE: deploy_to is not writable by"" $(id -un)" >&2; exit 20; }
# silence: s, how long ago the holder renewed the lease by the host's clock (empty without a
# heartbeat). A heartbeat in the future (the clock stepped back after it was written) says
# nothing: it is measured from when a run first saw that heartbeat there (LOCK_FUTURE holds its
# mtime, written then, and has the file's own mtime) and `future` is set. A live holder renews
# with the host's clock, which ends it at once (another mtime: the mark no longer matches).
silence() {
  future=; b=$(stat -c %Y "$LOCK_BEAT" 2>/dev/null) || { s=; return; }
  now=$(date +%s)
  if [ "$b" -le "$now" ]; then s=$((now - b)); return; fi
  future=1; f=; { read -r f < "$LOCK_FUTURE"; } 2>/dev/null || :
  m=$(stat -c %Y "$LOCK_FUTURE" 2>/dev/null) || m=
  if [ "$f" = "$b" ] && [ -n "$m" ] && [ "$m" -le "$now" ]; then s=$((now - m)); return; fi
  { printf '%s\n' "$b" > "$LOCK_FUTURE.new" && mv -f "$LOCK_FUTURE.new" "$LOCK_FUTURE"; } 2>/dev/null || :
  s=0
}
# A lost race reads the holder at once (the holder may be done a moment later); one that has just
# released means try again, one between its mkdir and its info write is waited for: at most 20
# more tries, 1 s in all. The heartbeat is written last: a lock without one is never judged stale.
i=0
while :; do
  if mkdir "$LOCK" 2>/dev/null; then
    printf '%s\n' "$INFO" > "$LOCK_INFO"
    printf '%s' "$TOKEN" > "$LOCK_TOKEN_FILE"; : > "$LOCK_BEAT"
    emit lock_acquired 1; break
  fi
  h=$(head -c 4096 "$LOCK_INFO" 2>/dev/null | tr -d '\n')
  if [ -n "$h" ]; then
    s=; future=
    if [ -n "$LOCK_TTL" ]; then
      # s: see silence (empty without a heartbeat: never stale). Past the TTL the lock is claimed
      # (mkdir lock/claim: one claimant per lock), judged again under the claim, and made this run's in place: token, info and
      # heartbeat replaced, so the old holder's next `held` fails. The dead run's temp dirs,
      # partial upload, env uploads and temp links are removed. A claim on a lock that turned out live is
      # withdrawn.
      silence
      if [ -n "$s" ] && [ "$s" -gt "$LOCK_TTL" ]; then
        if mkdir "$LOCK_CLAIM" 2>/dev/null; then
          silence
          if [ -n "$s" ] && [ "$s" -gt "$LOCK_TTL" ]; then
            h=$(head -c 4096 "$LOCK_INFO" 2>/dev/null | tr -d '\n')
            t=; { read -r t < "$LOCK_TOKEN_FILE"; } 2>/dev/null || :
            printf '%s' "$TOKEN" > "$LOCK/token.new" && mv -f "$LOCK/token.new" "$LOCK_TOKEN_FILE"
            printf '%s\n' "$INFO" > "$LOCK_INFO"; : > "$LOCK_BEAT"; rm -f "$LOCK_FUTURE"; rmdir "$LOCK_CLAIM"
            case $t in
              ''|*[!0-9A-Za-z_-]*) ;;
              *) rm -rf "$RELEASES"/.tmp-*-"$t" "$CACHE"/.part-"$t" "$CACHE"/.part-"$t".* "$DEPLOY_TO"/.current-"$t"
                 # a config push's env upload and the temp links of its env (env_shared.sh)
                 rm -f "$RELEASES"/*/.deployer/env.tmp-"$t" "$RELEASES"/*/"$ENV_FILE".tmp-"$t" "$SHARED_ENV".tmp-"$t";;
            esac
            [ -z "$future" ] || emit lock_future 1
            printf 'takeover\t%s\t%s\n' "$s" "$h"
            if [ -n "$RECORD_TAKEOVER" ]; then
              case $h in '{'*'}') j=$h;; *) j=null;; esac
              { printf '%s{"holder": %s, "silent_s": %s}%s\n' "$TAKEOVER_PRE" "$j" "$s" "$TAKEOVER_POST" >> "$LEDGER"; } 2>/dev/null || :
            fi
            emit lock_acquired 1; break
          fi
          rmdir "$LOCK_CLAIM"; h=$(head -c 4096 "$LOCK_INFO" 2>/dev/null | tr -d '\n')
        elif [ $i -lt 20 ]; then
          i=$((i+1)); sleep 0.05; continue
        fi
      fi
    fi
    printf 'lockinfo\t%s\n' "$h"; [ -z "$s" ] || emit lock_silent "$s"; [ -z "$future" ] || emit lock_future 1
    break
  fi
  [ $i -lt 20 ] || break
  i=$((i+1)); [ -d "$LOCK" ] || continue; sleep 0.05
done
