# Undo a first deploy's switch: remove current only if it points at releases/N (TARGET).
# Inputs: CURRENT, TARGET. Prints `unchanged` when current does not point there.
if [ "$(readlink "$CURRENT" 2>/dev/null)" = "$TARGET" ]; then held; rm -f "$CURRENT"
else printf 'unchanged\t\n'; fi
