# Release the lock: with the holder's token (recorded only if it held), or by force (FORCE=1:
# report and record it). Inputs: FORCE, LOCK, LOCK_INFO, LEDGER_LINE (empty: none), and lib.sh's.
if [ -z "$FORCE" ]; then
  if owned; then [ -z "$LEDGER_LINE" ] || ledger "$LEDGER_LINE"; rm -rf "$LOCK"; fi
elif [ -d "$LOCK" ]; then
  printf 'removed\t'; { tr -d '\n' < "$LOCK_INFO"; } 2>/dev/null || true
  echo; rm -rf "$LOCK"
  [ -z "$LEDGER_LINE" ] || ledger "$LEDGER_LINE"
fi
