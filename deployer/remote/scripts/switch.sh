# Point current at releases/N atomically: a temp link renamed over it (rename(2)).
# Inputs: CURRENT, RELEASE, NUMBER, FOREIGN (1: another tool's release: it only has to be a
# directory, nothing is written into it), TARGET (what current points at), TMP_LINK, MARK_STATE
# (the state dir of a release to mark rolled back; empty: none), LEDGER_LINE (empty: none),
# UNLOCK (1: release the lock), ONLY_FROM (non-empty: switch only if current points there, else
# print `unchanged` and change nothing: putting back a host whose switch's answer never came),
# and lib.sh's.
if [ -n "$ONLY_FROM" ] && [ "$(readlink "$CURRENT" 2>/dev/null)" != "$ONLY_FROM" ]; then
  emit unchanged "$(readlink "$CURRENT" 2>/dev/null || :)"; exit 0
fi
if [ -e "$CURRENT" ] && [ ! -L "$CURRENT" ]; then
  echo "$CURRENT is a real directory or file, not a symlink: refusing to replace it" >&2; exit 30
fi
if [ -L "$RELEASE" ]; then
  echo "releases/$NUMBER is a symlink, not a directory under releases/: refusing to switch to it" >&2; exit 31
fi
if [ -n "$FOREIGN" ]; then
  [ -d "$RELEASE" ] || { echo "release $NUMBER is not on this host" >&2; exit 31; }
else
  [ -f "$RELEASE/.deployer/complete" ] || { echo "release $NUMBER is not complete on this host" >&2; exit 31; }
fi
ln -sfn "$TARGET" "$TMP_LINK"
held; mv -T "$TMP_LINK" "$CURRENT"
[ -n "$FOREIGN" ] || [ ! -e "$RELEASE/.deployer/rolled_back" ] || rm -f "$RELEASE/.deployer/rolled_back"
if [ -n "$MARK_STATE" ] && [ -d "$MARK_STATE" ]; then date -u +%FT%TZ > "$MARK_STATE/rolled_back"; fi
[ -z "$LEDGER_LINE" ] || ledger "$LEDGER_LINE"
[ -z "$UNLOCK" ] || unlock_own
emit current "$TARGET"
