# Mark release N bad: never a rollback target again, purged first by cleanup. REASON (a failed
# step's output) comes with every secret value masked. Inputs: STATE_DIR, REASON.
if [ -d "$STATE_DIR" ]; then held; printf '%s\n' "$REASON" > "$STATE_DIR/bad"; fi
