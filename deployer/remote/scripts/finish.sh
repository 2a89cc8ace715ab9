# Cleanup (release dirs chosen by the planner, stale cache entries), then release the lock.
# Ledger lines: DONE_LINE first, whatever the cleanup does (a deploy's outcome: its release is live
# already; `recorded` in the lock dir says it was written, for finish_cut.sh); then LEDGER_LINE if
# the cleanup succeeded, FAILED_LINE if it did not (each: empty for none). A failed cleanup still
# releases the lock and exits 0, emitting `cleanup_failed<TAB>status` (its errors are on stderr),
# so it is never mistaken for a failure of what came before.
# Inputs: DELETE (word list of release dirs), KEEP (word list of cache file names), CACHE,
# DEPLOY_TO, and lib.sh's.
held
# the line and its mark together: a kill between them would have finish_cut.sh write it again;
# `true`, not `:`: a failed redirection of a special builtin ends a POSIX sh, `|| :` or not
trap '' HUP INT TERM
[ -z "$DONE_LINE" ] || { ledger "$DONE_LINE"; { true > "$LOCK/recorded"; } 2>/dev/null || :; }
trap - HUP INT TERM
set +e
(
  set -e
  eval "set -- $DELETE"
  # unmarked first: a removal cut short leaves an incomplete release, never a rollback target
  for d; do rm -f -- "$d/.deployer/complete"; done
  [ $# -eq 0 ] || rm -rf -- "$@"
  eval "set -- $KEEP"
  for f in "$CACHE"/*.tar.gz "$CACHE"/.part-*; do
    [ -e "$f" ] || continue
    k=; for n; do [ "${f##*/}" != "$n" ] || k=1; done
    [ -n "$k" ] || rm -f "$f"
  done
  # temp links of runs that died mid-switch: no run uses one while we hold the lock
  for l in "$DEPLOY_TO"/.current-*; do if [ -L "$l" ]; then rm -f "$l"; fi; done
)
c=$?
set -e
if [ $c -eq 0 ]; then
  [ -z "$LEDGER_LINE" ] || ledger "$LEDGER_LINE"
else
  [ -z "$FAILED_LINE" ] || ledger "$FAILED_LINE"
  emit cleanup_failed $c
fi
unlock_own
