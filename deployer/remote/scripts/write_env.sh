# config.push: stdin becomes release N's own env (0600, atomic), N being the live release; record
# it, release the lock. The release's <env_file> links to it (made so on hosts of earlier
# versions, whose releases shared one file). Inputs: RELEASE, NUMBER, OWN (its env file),
# ENV_TMP, LINK (<release>/<env_file>), ENV_FILE, ENV_LINK, LEDGER_LINE (empty: none), and those
# of lib.sh and env_shared.sh.
trap 'rm -f "$ENV_TMP"' EXIT
[ -f "$RELEASE/.deployer/complete" ] || { echo "release $NUMBER is not complete on this host" >&2; exit 31; }
share_env
(umask 077; cat > "$ENV_TMP")
held; mv -f "$ENV_TMP" "$OWN"
case $ENV_FILE in */*) mkdir -p "$RELEASE/${ENV_FILE%/*}";; esac
if [ "$(readlink "$LINK" 2>/dev/null)" != "$ENV_LINK" ]; then
  ln -sfn "$ENV_LINK" "$LINK.tmp-$TOKEN"; held; mv -Tf "$LINK.tmp-$TOKEN" "$LINK"
fi
# `recorded`: for config_cut.sh, should this answer never reach the run
held; [ -z "$LEDGER_LINE" ] || { ledger "$LEDGER_LINE"; { true > "$LOCK/recorded"; } 2>/dev/null || :; }
unlock_own
emit written "$OWN"
