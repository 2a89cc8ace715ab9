# Receive (or reuse) the artifact, verify its sha256, extract it into a temp dir, link shared
# paths, mark it complete, then rename it into releases/N. Any failure removes the temp dir.
# Inputs: RELEASES, SHARED, CACHE, TMP_RELEASE (the temp release), PART (this run's upload), CACHED,
# FINAL (releases/N), NUMBER, TOKEN, SHA256, RELEASE_JSON, UPLOAD (1: the artifact comes on
# stdin), STREAM (1: extract it as it arrives), PULL (1: the host downloads it, prepare_pull.sh), SHARED_DIRS and SHARED_FILES (word lists),
# ENV_FILE (empty: none), ENV_BYTES, ENV_TMP, ENV_LINK, LINK_FROM (empty: extract; else an earlier
# release of the artifact to hard-link, see prepare_link.sh), DELTA (1: stdin carries a delta
# against an earlier release instead of the artifact, see prepare_delta.sh).
# stdin: ENV_BYTES bytes of env first (values never on a command line), then the artifact (PULL:
# the presigned URL instead, see prepare_pull.sh).
# (the abort renames a temp dir that a prepare still writes to .tmp-aborted-TOKEN: the last one out removes it)
# (a pull still downloading is stopped: `pulling` is its pid, see prepare_pull.sh)
pulling=
trap '[ -z "$pulling" ] || kill "$pulling" 2>/dev/null || :
rm -rf "$TMP_RELEASE" "${TMP_RELEASE%/*}/.tmp-aborted-$TOKEN" "$PART" "$PART".sum "$PART".got "$PART".err "$ENV_TMP"' EXIT
trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 143' TERM
mkdir -p "$RELEASES" "$SHARED" "$CACHE"
if [ -n "$ENV_FILE" ]; then
  (umask 077; head -c "$ENV_BYTES" > "$ENV_TMP")
  [ "$(wc -c < "$ENV_TMP")" -eq "$ENV_BYTES" ] || { echo 'env file truncated in transit' >&2; exit 23; }
fi
# digest [FILE]: its sha256 first on the line. OpenSSL's when it works (it uses the CPU's SHA
# instructions: much less CPU than coreutils), else sha256sum.
if openssl dgst -sha256 -r </dev/null >/dev/null 2>&1; then digest() { openssl dgst -sha256 -r "$@"; }
else digest() { sha256sum "$@"; }; fi

mkdir "$TMP_RELEASE"
if [ -n "$DELTA" ]; then
  receive_delta; refuse_unsafe
elif [ -n "$UPLOAD" ]; then
  if [ -n "$PULL" ]; then receive_pulled; elif [ -n "$STREAM" ]; then receive_streamed; else receive_whole; fi
  refuse_unsafe
else
  linked=0
  [ -z "$LINK_FROM" ] || link_release
  if [ "$linked" = 0 ]; then extract_cached; refuse_unsafe; fi
fi

mkdir -p "$TMP_RELEASE/.deployer"
printf '%s\n' "$RELEASE_JSON" > "$TMP_RELEASE/.deployer/release.json"
printf '%s\n' "$TOKEN" > "$TMP_RELEASE/.deployer/deploy_id"
eval "set -- $SHARED_DIRS"
for rel; do link_shared dir "$rel"; done
eval "set -- $SHARED_FILES"
for rel; do link_shared file "$rel"; done
if [ -n "$ENV_FILE" ]; then
  # the release's own env (0600), <env_file> linking to it: the live env changes with `current`
  mv -f "$ENV_TMP" "$TMP_RELEASE/.deployer/env"; rm -rf "${TMP_RELEASE:?}/$ENV_FILE"
  case $ENV_FILE in */*) mkdir -p "$TMP_RELEASE/${ENV_FILE%/*}";; esac
  ln -s "$ENV_LINK" "$TMP_RELEASE/$ENV_FILE"
  share_env
fi
: > "$TMP_RELEASE/.deployer/complete"
held; mv -T "$TMP_RELEASE" "$FINAL"
trap - EXIT
[ -z "$LINK_FROM" ] || [ "$linked" = 0 ] || emit linked "$LINK_FROM"
emit prepared "$FINAL"
