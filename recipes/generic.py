"""generic: the plain release flow (unpack, link shared paths, switch); no restart, no checks."""

DEFAULTS: dict = {}
