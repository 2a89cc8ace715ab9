# `deployer maintenance on|off`: write (ON: a temp file, then renamed over it) or remove the
# maintenance page, then record it in the ledger (one O_APPEND write of one line).
# Inputs: ON, SHARED, PAGE, TMP, CONTENT, STATE, LEDGER, LEDGER_LINE.
if [ -n "$ON" ]; then
  mkdir -p "$SHARED"
  printf '%s' "$CONTENT" > "$TMP"
  chmod 644 "$TMP"
  mv -f "$TMP" "$PAGE"
else
  rm -f "$PAGE"
fi
{ [ -d "$STATE" ] || mkdir -p "$STATE"; } && printf '%s\n' "$LEDGER_LINE" >> "$LEDGER"
