# A finish cut short by a signal, the release live here. Run unleased: if the lock no longer holds
# this run's token, its finish completed (or the lock was taken over): nothing to add (`finished`).
# Else the deploy's line unless the finish had written it (`recorded` in the lock dir), then
# LEDGER_LINE, then release the lock. Inputs: DONE_LINE, LEDGER_LINE (empty: none), and lib.sh's.
owned || { emit finished 1; exit 0; }
[ -f "$LOCK/recorded" ] || [ -z "$DONE_LINE" ] || ledger "$DONE_LINE"
[ -z "$LEDGER_LINE" ] || ledger "$LEDGER_LINE"
unlock_own
