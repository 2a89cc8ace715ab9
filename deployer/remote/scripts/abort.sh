# Remove this run's temp files and its release N (only if this run created it and it is not
# live), then unlock. Inputs: PART, ENV_TMP, TMP_LINK, TMP_RELEASE (empty: no release number), RELEASE,
# CURRENT, TARGET, LEDGER_LINE (empty: none), and lib.sh's.
rm -rf "$PART" "$ENV_TMP" "$TMP_LINK"
if [ -n "$TMP_RELEASE" ]; then
  rm -rf "$TMP_RELEASE"
  if [ "$(cat "$RELEASE/.deployer/deploy_id" 2>/dev/null)" = "$TOKEN" ] &&
     [ "$(readlink "$CURRENT" 2>/dev/null)" != "$TARGET" ]; then held; rm -rf "$RELEASE"; fi
fi
[ -z "$LEDGER_LINE" ] || ledger "$LEDGER_LINE"
unlock_own
