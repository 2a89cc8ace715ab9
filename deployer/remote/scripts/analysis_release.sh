# Where current points, for the analysis' {release} and its canary/baseline split. Inputs: CURRENT.
readlink "$CURRENT" || true
