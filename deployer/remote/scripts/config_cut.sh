# A config push whose answer never came (a signal cut it off). Run unleased. `written 1` when
# release N's env holds what was sent (its sha256 is DIGEST), else `written 0`. If the lock still
# holds this run's token: record the push (LEDGER_LINE, unless write_env.sh did: `recorded` in
# the lock dir) or its interruption (CUT_LINE), remove the temp upload, release the lock (a
# write_env.sh still running stops at its next `held`). If not, its script completed (recorded,
# lock released) or the lock was taken over: nothing to add. Inputs: OWN, ENV_TMP, DIGEST,
# LEDGER_LINE, CUT_LINE, and lib.sh's.
d=$(sha256sum < "$OWN" 2>/dev/null) || d=
w=0; [ "${d%% *}" != "$DIGEST" ] || w=1
if owned; then
  if [ $w = 1 ]; then [ -f "$LOCK/recorded" ] || ledger "$LEDGER_LINE"; else ledger "$CUT_LINE"; fi
  rm -f "$ENV_TMP"
  rm -rf "$LOCK"
fi
emit written $w
