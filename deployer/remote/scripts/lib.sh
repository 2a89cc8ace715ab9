# Shared by most scripts. Inputs: STATE, LEDGER (the ledger file), LOCK, LOCK_TOKEN_FILE, TOKEN.

# emit KEY VALUE: a tab-separated line the state parser reads
emit() { printf '%s\t%s\n' "$1" "$2"; }

# ledger LINE: one O_APPEND write of one line (< PIPE_BUF): never torn, never interleaved
ledger() { if [ -d "$STATE" ] || mkdir -p "$STATE"; then printf '%s\n' "$1" >> "$LEDGER"; fi; }

# owned: the lock holds this run's token
owned() {
  t=; { read -r t < "$LOCK_TOKEN_FILE"; } 2>/dev/null || :
  [ "$t" = "$TOKEN" ]
}

# unlock_own: release the lock only if it holds this run's token
unlock_own() { if owned; then rm -rf "$LOCK"; fi; }
