# Part of prepare. receive_delta: the new release built in $TMP_RELEASE from an earlier release
# (DELTA_BASE) plus the delta on stdin, then proven equal to the artifact (see remote/delta.py).
# Anything that does not hold exits 27 with "delta not usable: ..." on stderr: the deployer then
# sends this host the full artifact. Inputs: TMP_RELEASE, PART, NUMBER, MANIFEST, DELTA_BASE,
# DELTA_NUMBER, DELTA_SHA256 (of the delta), DELTA_MANIFEST_SUM and DELTA_LISTING_SUM (of the
# artifact's manifest and listing), DELTA_MTIME (the artifact's file times), DELTA_CONTROL (where
# the delta's lists land in the tree).

unusable() { echo "delta not usable: $1" >&2; exit 27; }

# a full disk is said as such (the full artifact would not fit either); anything else: unusable
copy_failed() {
  if ! head -c 65536 /dev/zero > "$TMP_RELEASE/.space-probe" 2>/dev/null; then
    echo "no space left on device: building release $NUMBER from release $DELTA_NUMBER failed" >&2; exit 1
  fi
  rm -f "$TMP_RELEASE/.space-probe"
  unusable "copying from release $DELTA_NUMBER failed"
}

receive_delta() {
  rd_ctl="$TMP_RELEASE/$DELTA_CONTROL" rd_man="$TMP_RELEASE/$MANIFEST"
  if [ ! -f "$DELTA_BASE/.deployer/complete" ] || [ ! -f "$DELTA_BASE/$MANIFEST" ]; then
    unusable "release $DELTA_NUMBER is gone or incomplete"
  fi
  # 1. the delta, checked like an artifact, then extracted: directories, links, new content, lists
  cat > "$PART"
  got=$(digest "$PART" | cut -d' ' -f1)
  if [ "$got" != "$DELTA_SHA256" ]; then
    echo "delta sha256 mismatch on host: expected $DELTA_SHA256, got $got (truncated or corrupted in transit)" >&2
    exit 23
  fi
  rc=0; tar -xzf "$PART" -C "$TMP_RELEASE" --no-same-owner || rc=$?
  rm -f "$PART"
  if [ $rc -ne 0 ]; then no_space; exit $rc; fi
  if command -v python3 >/dev/null 2>&1; then
    python3 -I -S -c "$DELTA_PY" "$TMP_RELEASE" "$DELTA_BASE" "$MANIFEST" "$DELTA_CONTROL" "$DELTA_MTIME" \
      "$DELTA_MANIFEST_SUM" "$DELTA_LISTING_SUM" "$NUMBER" "$DELTA_NUMBER" || exit $?
    return 0
  fi
  # 2. what the base holds, copied (never linked), by the base's own manifest minus the skip list;
  # a path with a `..` component is never copied; -P: a link in the base is copied as a link
  # (and refused below). Anything else that is no regular file (a fifo: cp would wait on it for
  # ever, a device, a directory) is refused before anything is copied.
  (cd "$DELTA_BASE" && cut -c67- "$MANIFEST" | grep -vxF -f "$rd_ctl/skip" |
     grep -v -e '^\.\.$' -e '^\.\./' -e '/\.\./' -e '/\.\.$' > "$rd_ctl/copy") 2>/dev/null || :
  cut -f1 "$rd_ctl/pairs" | cat "$rd_ctl/copy" - | while IFS= read -r rd_p; do
    [ -L "$DELTA_BASE/$rd_p" ] || [ -f "$DELTA_BASE/$rd_p" ] || { printf '%s\n' "$rd_p"; break; }
  done > "$rd_ctl/irregular"
  [ ! -s "$rd_ctl/irregular" ] || unusable "release $DELTA_NUMBER: $(cat "$rd_ctl/irregular") is not a regular file"
  (cd "$DELTA_BASE" && sed 's|^|./|' "$rd_ctl/copy" | tr '\n' '\0' |
     xargs -0 -r cp -RP --parents -t "$TMP_RELEASE" --) 2>/dev/null || copy_failed
  rd_tab=$(printf '\t')
  while IFS=$rd_tab read -r rd_s rd_d; do
    cp -P -- "$DELTA_BASE/$rd_s" "$TMP_RELEASE/$rd_d" 2>/dev/null || copy_failed
  done < "$rd_ctl/pairs"
  # 3a. the links are exactly the artifact's before any chmod (chmod follows a link it is given)
  (cd "$TMP_RELEASE" && find . -path ./.deployer -prune -o -type l -printf '%P\t%l\n' | LC_ALL=C sort) |
    cmp -s - "$rd_ctl/links" || unusable "release $DELTA_NUMBER holds links the artifact does not"
  # 3b. modes and times as a full extraction leaves them, never the base's
  (cd "$TMP_RELEASE" && find . -path ./.deployer -prune -o -type f ! -perm 644 -exec chmod 644 {} + &&
     sed 's|^|./|' "$rd_ctl/exec" | tr '\n' '\0' | xargs -0 -r chmod 755 -- &&
     find . -path ./.deployer -prune -o -exec touch -h -d "@$DELTA_MTIME" {} +)
  rm -rf "$rd_ctl"
  # 4. every file's content, then every entry's type, mode, path and link target
  if openssl dgst -sha256 -r </dev/null >/dev/null 2>&1; then rd_h='openssl dgst -sha256 -r'; else rd_h=sha256sum; fi
  # shellcheck disable=SC2086
  (cd "$TMP_RELEASE" && find . -path ./.deployer -prune -o -type f -print0 | LC_ALL=C sort -z | xargs -0 -r $rd_h |
     sed 's|^\([0-9a-f]\{64\}\) [ *]\./|\1  |') > "$rd_man"
  [ "$(digest "$rd_man" | cut -d' ' -f1)" = "$DELTA_MANIFEST_SUM" ] ||
    unusable "files copied from release $DELTA_NUMBER differ from the artifact (edited there?)"
  rd_listed=$( (cd "$TMP_RELEASE" && find . -mindepth 1 -printf '%y %m %P\t%l\n' | LC_ALL=C sort) | digest | cut -d' ' -f1)
  [ "$rd_listed" = "$DELTA_LISTING_SUM" ] ||
    unusable "the tree built from release $DELTA_NUMBER differs from the artifact (a file added, a mode?)"
}
