# What every command of a run holding the lock starts with (before `set -e`).
# Inputs: LEASE_TOKEN, LEASE_TOKEN_FILE, LEASE_BEAT.
# `held` checks that the lock still holds this run's token and renews the lease (the heartbeat's
# mtime, set by truncating it with a builtin: no `touch` process), else stops the script with
# LEASE_LOST (32). Scripts call it again right before each change they make.
held() {
  t=; { read -r t < "$LEASE_TOKEN_FILE"; } 2>/dev/null || :
  [ "$t" = "$LEASE_TOKEN" ] || { echo 'this run lost the lock on this host: its lease was not renewed for lock_ttl seconds and another run took it over; nothing more is changed here' >&2; exit 32; }
  { printf '' > "$LEASE_BEAT"; } 2>/dev/null || :
}
held
