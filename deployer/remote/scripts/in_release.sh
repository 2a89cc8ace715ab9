# A user command (hook, smoke, restart, verify command) run by sh in WHERE (releases/N, or
# deploy_to before the release exists), with USER_ENV (word list of NAME=value), as RUN_AS if set.
# Inputs: WHERE, COMMAND, USER_ENV, RUN_AS.
cd "$WHERE" || exit
eval "set -- $USER_ENV"
if [ -n "$RUN_AS" ]; then exec sudo -n -u "$RUN_AS" -- env "$@" sh -c "$COMMAND"; fi
exec env "$@" sh -c "$COMMAND"
