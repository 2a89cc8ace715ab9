# A metric's command (provider "command"), in the live release; its stdout is the number.
# Inputs: CURRENT, COMMAND.
cd "$CURRENT" || exit 3
sh -c "$COMMAND"
