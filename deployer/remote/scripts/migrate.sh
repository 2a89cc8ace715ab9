# Run the migration in releases/N; on success record it (digest of its output) in the release.
# Inputs: RELEASE, RECORD (its `migrated` marker), and user.sh's.
cd "$RELEASE" || exit
out=$(mktemp)
st=0; as_user > "$out" 2>&1 || st=$?
if [ $st -ne 0 ]; then
  tail -c 2000 "$out" >&2; rm -f "$out"; echo "migration failed (exit $st)" >&2; exit $st
fi
cat "$out"; d=$(sha256sum < "$out" | cut -d" " -f1); rm -f "$out"
printf '{"digest": "%s", "at": "%s"}\n' "$d" "$(date -u +%FT%TZ)" > "$RECORD"
emit migrated "$d"
