# Part of prepare. refuse_unsafe: one pass over the extracted tree, before it is linked or becomes
# a release: a device, fifo, socket, setuid/setgid file or a symlink resolving outside it fails
# the step (and the trap removes it). So does anything in the deployer's own directory but the
# manifest (a forged `migrated` or `bad` marker). The client's member check refuses all of
# these; this holds even if one got past. Inputs: TMP_RELEASE, NUMBER, MANIFEST (.deployer/manifest...).
refuse_unsafe() {
  ru_own="$TMP_RELEASE/${MANIFEST%/*}"
  ru_forged="release $NUMBER refused: the artifact brings entries of its own into ${MANIFEST%/*}/ (reserved)"
  # its entries listed by the shell (no process): anything below a subdirectory is refused with
  # that subdirectory; a manifest that is not a regular file (a link) is refused too
  if [ -L "$ru_own" ] || { [ -e "$ru_own" ] && [ ! -d "$ru_own" ]; }; then echo "$ru_forged" >&2; exit 25; fi
  for e in "$ru_own"/* "$ru_own"/.[!.]* "$ru_own"/..?*; do
    [ -e "$e" ] || [ -L "$e" ] || continue
    if [ "${e##*/}" != "${MANIFEST##*/}" ] || [ -L "$e" ] || [ ! -f "$e" ]; then echo "$ru_forged" >&2; exit 25; fi
  done
  T=$(readlink -f "$TMP_RELEASE")
  # a find that fails (no -printf, no readlink -m, a directory it cannot read) refuses too: `?`
  bad=$( { find "$T" \( -type b -o -type c -o -type p -o -type s -o \( -type f -perm /6000 \) \) -printf '!%p\n' \
          -o -type l -exec readlink -m -- {} + || echo '?'; } |
        T="$T" awk '$0 != ENVIRON["T"] && index($0, ENVIRON["T"] "/") != 1 { print; exit }')
  if [ "$bad" = '?' ]; then
    echo "release $NUMBER refused: its tree could not be checked (find -printf and readlink -m, GNU's, are needed)" >&2
    exit 25
  fi
  if [ -n "$bad" ]; then
    echo "release $NUMBER refused: unsafe entry in the extracted artifact (device, fifo, socket, setuid/setgid file, or a link resolving outside the release): ${bad#!}" >&2
    exit 25
  fi
}
