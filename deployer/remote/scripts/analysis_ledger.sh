# The analysis' ledger line (one append, under PIPE_BUF). Inputs: STATE, LEDGER, LINE.
[ -d "$STATE" ] || mkdir -p "$STATE"
printf '%s\n' "$LINE" >> "$LEDGER"
