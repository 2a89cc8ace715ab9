# The ledger's lines (only those containing MATCH, when not empty). Inputs: LEDGER, MATCH.
if [ -f "$LEDGER" ]; then
  if [ -n "$MATCH" ]; then grep -F -- "$MATCH" "$LEDGER" || true; else cat "$LEDGER"; fi
fi
