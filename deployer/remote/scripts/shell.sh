# `deployer ssh`: an interactive login shell in current (in deploy_to before the first release),
# as RUN_AS if set.
# Inputs: CURRENT, DEPLOY_TO, RUN_AS.
cd "$CURRENT" 2>/dev/null || { echo "no current release in $DEPLOY_TO yet"; cd "$DEPLOY_TO" 2>/dev/null || :; }
if [ -n "$RUN_AS" ]; then exec sudo -u "$RUN_AS" -s; fi
exec "${SHELL:-/bin/sh}" -l
