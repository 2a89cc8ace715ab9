# A release's manifest, as it is on the host (the deployer checks its sha256 against the one the
# release recorded before it uses it as a delta's base). Inputs: RELEASE (releases/N), MANIFEST.
m=$RELEASE/$MANIFEST
if [ ! -f "$m" ] || [ -L "$m" ]; then echo "no manifest in $RELEASE" >&2; exit 1; fi
exec cat -- "$m"
