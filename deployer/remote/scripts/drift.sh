# Compare current's files with the manifest that came in the artifact: prints
# `modified|removed|added<TAB>path` lines, or `no_manifest`. SHARED_PATHS are skipped, and so are
# SKIP (shared and hook-generated paths) and __pycache__ directories.
# Inputs: CURRENT, MANIFEST, SHARED_PATHS and SKIP (word lists).
cd "$CURRENT"/ 2>/dev/null || { echo 'no current release' >&2; exit 1; }
m=$MANIFEST
[ -f "$m" ] || { echo no_manifest; exit 0; }
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
eval "without_shared \"\$m\" $SHARED_PATHS" > "$t/m"
sha256sum -c "$t/m" 2>/dev/null | while IFS= read -r l; do
  case $l in
    *': OK') ;;
    *': FAILED open or read') printf 'removed\t%s\n' "${l%: FAILED open or read}";;
    # BusyBox's sha256sum says only FAILED of a file it cannot open
    *': FAILED') f=${l%: FAILED}; if [ -f "$f" ]; then printf 'modified\t%s\n' "$f"; else printf 'removed\t%s\n' "$f"; fi;;
  esac
done
cut -c67- "$t/m" | LC_ALL=C sort > "$t/want"
eval "release_files $SKIP" > "$t/have"
LC_ALL=C comm -13 "$t/want" "$t/have" | while IFS= read -r f; do printf 'added\t%s\n' "$f"; done
emit checked "$(wc -l < "$t/m" | tr -d " ")"
