# Release the lock: with the holder's token, or by force (FORCE=1: report and record it).
# Inputs: FORCE, LOCK, LOCK_INFO, LEDGER_LINE (empty: none), and lib.sh's.
if [ -z "$FORCE" ]; then
  unlock_own
elif [ -d "$LOCK" ]; then
  printf 'removed\t'; { tr -d '\n' < "$LOCK_INFO"; } 2>/dev/null || true
  echo; rm -rf "$LOCK"
  [ -z "$LEDGER_LINE" ] || ledger "$LEDGER_LINE"
fi
