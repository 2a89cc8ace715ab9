# The manifest (sha256  path lines; paths from column 67) against a release's files.

# without_shared MANIFEST [SHARED...]: its lines, minus entries at or under a shared path (those
# live in shared/)
without_shared() {
  ws_m=$1; shift
  if [ $# -eq 0 ]; then cat "$ws_m"; return; fi
  ws_list=$1; shift
  for ws_p; do ws_list="$ws_list
$ws_p"; done
  awk -v list="$ws_list" 'BEGIN{n=split(list,s,"\n")} {p=substr($0,67); keep=1; for(i=1;i<=n;i++) if(p==s[i] || index(p, s[i] "/")==1) keep=0; if(keep) print}' "$ws_m"
}

# release_files [SKIP...]: the regular files of the release in the working directory that should
# match the manifest, sorted: not the deployer's own, SKIP paths (shared, hook-generated) or
# __pycache__
release_files() {
  rf_n=$#; while [ $rf_n -gt 0 ]; do set -- "$@" -o -path "./$1"; shift; rf_n=$((rf_n-1)); done
  find . \( -path ./.deployer -o -name __pycache__ "$@" \) -prune -o -type f -printf '%P\n' | LC_ALL=C sort
}
