# Remove this run's temp files and its release N (only if this run created it and it is not
# live), then unlock. Inputs: PART, ENV_TMP, TMP_LINK, TMP_RELEASE (empty: no release number), RELEASE,
# CURRENT, TARGET, LEDGER_LINE (empty: none; written only while the lock is this run's), and lib.sh's.
# This run's prepare may still be running here (its connection dropped; this one is new). So the
# lease is revoked first: from then on that prepare's `held`, right before it renames its temp dir
# into releases/N, fails. Then the temp dir is renamed away (atomic: the prepare either renamed it
# already, and that release is whole, or never will) and removed, retried while a tar still writes.
aborting="$TOKEN-aborting"
if [ -n "$TMP_RELEASE" ]; then
  if [ -d "$LOCK" ]; then
    { printf '%s\n' "$aborting" > "$LOCK/token.new" && mv -f "$LOCK/token.new" "$LOCK_TOKEN_FILE"; } 2>/dev/null || :
  fi
  dead="${TMP_RELEASE%/*}/.tmp-aborted-$TOKEN"
  if mv -T "$TMP_RELEASE" "$dead" 2>/dev/null; then
    i=0
    until rm -rf "$dead" 2>/dev/null || [ $i -ge 50 ]; do sleep 0.2; i=$((i + 1)); done
  fi
  if [ "$(cat "$RELEASE/.deployer/deploy_id" 2>/dev/null)" = "$TOKEN" ] &&
     [ "$(readlink "$CURRENT" 2>/dev/null)" != "$TARGET" ]; then rm -rf "$RELEASE"; fi
fi
rm -rf "$PART" "$ENV_TMP" "$TMP_LINK"
# recorded and unlocked only while the lock is still this run's: a removal that outlasted the
# lease may find it taken over, and the new holder's ledger gets no line of this run after it
t=; { read -r t < "$LOCK_TOKEN_FILE"; } 2>/dev/null || :
if [ "$t" = "$TOKEN" ] || [ "$t" = "$aborting" ]; then
  [ -z "$LEDGER_LINE" ] || ledger "$LEDGER_LINE"
  rm -rf "$LOCK"
fi
