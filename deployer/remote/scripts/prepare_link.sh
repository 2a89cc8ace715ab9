# Part of prepare. link_release: fill the empty temp dir with hard links to the files of an
# earlier release of the same artifact; set linked=1 only if what was linked is exactly the
# artifact as extracted: its manifest is the artifact's, its regular files are the manifest's
# paths, and none changed since the source was prepared (no file newer than its `complete`
# marker). Otherwise empty the temp dir again, linked=0.
# Not linked: the source's markers, LINK_SKIP (hook-generated paths, the env file) and
# __pycache__ (made anew, like after an extraction); LINK_SHARED paths are linked to shared/ again
# afterwards. Inputs: TMP_RELEASE, LINK_SRC, LINK_COMPLETE, LINK_MANIFEST, LINK_MANIFEST_SUM, LINK_SKIP
# and LINK_SHARED (word lists).
# linked is read by prepare.sh
# shellcheck disable=SC2034
link_release() {
  linked=0
  eval "set -- $LINK_SKIP"
  lr_n=$#; while [ $lr_n -gt 0 ]; do set -- "$@" "$TMP_RELEASE/$1"; shift; lr_n=$((lr_n-1)); done
  lr_want="$TMP_RELEASE/.deployer/want" lr_have="$TMP_RELEASE/.deployer/have"
  if [ -f "$LINK_COMPLETE" ] &&
     [ "$(sha256sum < "$LINK_MANIFEST" 2>/dev/null)" = "$LINK_MANIFEST_SUM  -" ] &&
     cp -al "$LINK_SRC"/. "$TMP_RELEASE"/ 2>/dev/null && rm -rf "$TMP_RELEASE/.deployer" "$@" &&
     find "$TMP_RELEASE" -name __pycache__ -prune -exec rm -rf {} + &&
     [ -z "$(find "$TMP_RELEASE" ! -type d -newer "$LINK_COMPLETE" -print -quit)" ] &&
     mkdir "$TMP_RELEASE/.deployer" && ln "$LINK_MANIFEST" "$TMP_RELEASE/.deployer/" &&
     eval "without_shared \"\$LINK_MANIFEST\" $LINK_SHARED" | cut -c67- | LC_ALL=C sort > "$lr_want" &&
     (cd "$TMP_RELEASE" && eval "release_files $LINK_SHARED") > "$lr_have" && cmp -s "$lr_want" "$lr_have"; then
    linked=1; rm -f "$lr_want" "$lr_have"
  else rm -rf "$TMP_RELEASE"; mkdir "$TMP_RELEASE"; fi
}
