# `deployer run`: COMMAND run by sh in current, with USER_ENV (word list of NAME=value), as RUN_AS
# if set; exit 1 with a line when there is no current release.
# Inputs: CURRENT, DEPLOY_TO, COMMAND, USER_ENV, RUN_AS.
cd "$CURRENT" 2>/dev/null || { echo "no current release in $DEPLOY_TO" >&2; exit 1; }
eval "set -- $USER_ENV"
if [ -n "$RUN_AS" ]; then exec sudo -n -u "$RUN_AS" -- env "$@" sh -c "$COMMAND"; fi
# exported by this shell, not through `env`: BusyBox's env would start its own sh applet
# shellcheck disable=SC2163 # each word is NAME=value (names checked at config load)
for assignment do export "$assignment"; done
exec sh -c "$COMMAND"
