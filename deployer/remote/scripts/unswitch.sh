# Undo a first deploy's switch: remove current only if it points at releases/N (TARGET).
# Inputs: CURRENT, TARGET.
if [ "$(readlink "$CURRENT" 2>/dev/null)" = "$TARGET" ]; then held; rm -f "$CURRENT"; fi
