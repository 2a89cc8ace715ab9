# as_user: sh -c COMMAND with USER_ENV (a word list of NAME=value), as the deploy user or, with RUN_AS,
# via `sudo -n -u RUN_AS` (never prompts). env sets the values: they never touch this script's
# own variables.
as_user() {
  eval "set -- $USER_ENV"
  if [ -n "$RUN_AS" ]; then sudo -n -u "$RUN_AS" -- env "$@" sh -c "$COMMAND"
  else env "$@" sh -c "$COMMAND"; fi
}
