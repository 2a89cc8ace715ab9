# Part of prepare. link_shared dir|file REL: REL in the release ($TMP_RELEASE) becomes a link to
# shared/REL; a shared dir is created, a shared file must exist. Inputs: TMP_RELEASE, SHARED.
link_shared() {
  ls_s="$SHARED/$2" ls_in="$TMP_RELEASE/$2"
  if [ "$1" = dir ]; then mkdir -p "$ls_s"
  else [ -e "$ls_s" ] || { echo "missing shared file $ls_s: create it on the host" >&2; exit 24; }; fi
  # a link above it in the release (from the artifact) would make rm -rf and ln act wherever it points
  ls_p=$2
  while case $ls_p in */*) true;; *) false;; esac; do
    ls_p=${ls_p%/*}
    if [ -L "$TMP_RELEASE/$ls_p" ]; then
      echo "refusing to link shared path $2: a parent in the release is a symlink" >&2; exit 25
    fi
  done
  rm -rf "$ls_in"
  case $2 in */*) mkdir -p "$TMP_RELEASE/${2%/*}";; esac
  ln -s "$ls_s" "$ls_in"
}
