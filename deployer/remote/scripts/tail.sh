# `deployer logs`: the last LINES lines of shared/FILE (a file, or every *.log in a directory);
# with FOLLOW, followed (tail -F) until the connection is closed.
# Inputs: SHARED, DEPLOY_TO, FILE (relative to shared/, checked by the client), LINES, FOLLOW.
cd "$SHARED" 2>/dev/null || { echo "no shared/ in $DEPLOY_TO" >&2; exit 1; }
if [ -d "$FILE" ]; then
  cd "$FILE" && set -- *.log
  [ -f "$1" ] || { printf "no *.log file in shared/%s\n" "$FILE" >&2; exit 1; }
else
  [ -f "$FILE" ] || { printf "shared/%s: no such file\n" "$FILE" >&2; exit 1; }
  set -- "$FILE"
fi
if [ -n "$FOLLOW" ]; then exec tail -n "$LINES" -F -- "$@"; fi
exec tail -n "$LINES" -- "$@"
