"""generic: the plain release flow (unpack, link shared paths, switch); no restart, no checks.

The same as setting no recipe.
"""

DEFAULTS: dict = {}
