# Report the host's deploy state as tab-separated lines (see state.py). Run before every action,
# so it forks little: every release's metadata and the lock's owner are read by one awk.
# Inputs: DEPLOY_TO, LOCK, LOCK_INFO, META_AWK (inspect_meta.awk), FREE_SPACE (1: report it),
# CACHED (the artifact's cache path; empty: not asked), SUDO_UNIT (a unit file: when it exists,
# each of SUDO_CMDS, a word list of command lines, the user may not run through sudo is reported),
# SETUP_PATHS (a word list of files setup writes: each one present is reported with its sha256
# and mode:owner:group, compared by the caller with what setup would write).
# TOOLS (1: probe the tools' GNU options).
emit user "${LOGNAME:-$(id -un)}"
p="$DEPLOY_TO"; while [ ! -d "$p" ]; do p=$(dirname "$p"); done; w=0; [ -w "$p" ] && w=1
if [ -d "$DEPLOY_TO" ]; then emit deploy_to "present $w"; else emit deploy_to "absent $w"; fi
c="$DEPLOY_TO/current"
if [ -L "$c" ]; then k='link'; [ -e "$c" ] || k=dangling
elif [ -d "$c" ]; then k='dir'; elif [ -e "$c" ]; then k='file'; else k=absent; fi
emit current "$k $(readlink "$c" 2>/dev/null || true)"
# names are printed only when made of [A-Za-z0-9._-] (so no line can be forged); others are
# counted. One starting with '-' (`-v`, `--help`) is no release of anybody's: printed as such,
# never read. A directory without .deployer/ is another tool's release (foreign). The files awk
# reads are collected in "$@".
set --
o=0; f=
for r in "$DEPLOY_TO"/releases/* "$DEPLOY_TO"/releases/.tmp-*; do
  [ -d "$r" ] || continue; n=${r##*/}
  case $n in ""|*[!A-Za-z0-9._-]*) o=$((o+1)); continue;; esac
  [ ${#n} -le 128 ] || { o=$((o+1)); continue; }
  case $n in .tmp-*) emit stray "$n"; continue;; .*) continue;; -*) emit dashed "$n"; continue;; esac
  # a link is no release (it may lead out of deploy_to): never switched to, never removed
  if [ -L "$r" ]; then emit linked "$n"; continue; fi
  s="$r/.deployer"
  if [ ! -d "$s" ]; then
    emit foreign "$n"; f="$f $n"; [ ! -f "$r/REVISION" ] || set -- "$@" "$r/REVISION"; continue
  fi
  c=0; b=0; rb=0; m=0
  [ -f "$s/complete" ] && c=1; [ -f "$s/bad" ] && b=1; [ -f "$s/rolled_back" ] && rb=1; [ -f "$s/migrated" ] && m=1
  printf 'release\t%s %s %s %s %s\n' "$n" $c $b $rb $m
  [ ! -f "$s/release.json" ] || set -- "$@" "$s/release.json"
done
emit odd "$o"
if [ -n "$f" ]; then
  # the names are safe words (checked above): split on purpose
  # shellcheck disable=SC2086
  (cd "$DEPLOY_TO/releases" && stat -c '%Y %n' -- $f 2>/dev/null) |
    while read -r t n; do printf 'fmtime\t%s\t%s\n' "$n" "$t"; done
  for l in "$DEPLOY_TO/revisions.log" "$DEPLOY_TO/.dep/releases_log"; do [ ! -f "$l" ] || set -- "$@" "$l"; done
fi
if [ -d "$LOCK" ]; then printf 'lock\t\n'; [ ! -f "$LOCK_INFO" ] || set -- "$@" "$LOCK_INFO"; fi
[ $# -eq 0 ] || awk -v f="$f" "$META_AWK" "$@" 2>/dev/null || true
[ -z "$FREE_SPACE" ] || emit free_kb "$(df -Pk "$p" | awk 'NR==2{print $4}')"
m=''; for t in tar find sha256sum mv ln readlink; do command -v $t >/dev/null 2>&1 || m="$m $t"; done
emit missing_tools "$m"
# TOOLS (a deploy, check): does each tool present have the GNU options the deploy's scripts use?
# `unfit TOOL busybox|other` when not: a silent difference otherwise (find without -printf lets
# refuse_unsafe pass anything). The probes change nothing: /dev/null/x never exists.
if [ -n "$TOOLS" ]; then
  unfit() { case " $m " in *" $1 "*) return 0;; esac
    case $2 in *BusyBox*|*busybox*) emit unfit "$1 busybox";; *) emit unfit "$1 other";; esac; }
  o=$(LC_ALL=C tar --version 2>&1) || :; case $o in *'GNU tar'*) ;; *) unfit tar "$o";; esac
  o=$(LC_ALL=C find /dev/null -maxdepth 0 -printf '' 2>&1) || unfit find "$o"
  o=$(LC_ALL=C readlink -m /dev/null/x 2>&1) || unfit readlink "$o"
  o=$(LC_ALL=C mv -T /dev/null/x /dev/null/y 2>&1) || :; case $o in *option*|*[Uu]sage*) unfit mv "$o";; esac
fi
if [ -n "$CACHED" ]; then c=0; [ -f "$CACHED" ] && c=1; emit cached "$c"; fi
if [ -n "$SUDO_UNIT" ] && [ -f "$SUDO_UNIT" ]; then
  eval "set -- $SUDO_CMDS"
  set -f
  for c in "$@"; do
    # a command line of plain words (app names are checked at config load): split on purpose
    # shellcheck disable=SC2086
    sudo -n -l $c >/dev/null 2>&1 || emit sudo_missing "$c"
  done
  set +f
fi
if [ -n "$SETUP_PATHS" ]; then
  eval "set -- $SETUP_PATHS"
  for f in "$@"; do
    [ -e "$f" ] || [ -L "$f" ] || continue
    d=$(sha256sum < "$f" 2>/dev/null) || d=unreadable
    emit setup_file "${d%% *} $(stat -c %a:%U:%G "$f") $f"
  done
fi
