"""`python -m deployer.sandbox`: build the sandbox image, start or stop hosts (see hosts.py)."""

import sys

from deployer.sandbox.hosts import SandboxError, _cli

try:
    _cli(sys.argv[1:])
except SandboxError as e:
    sys.exit(f"sandbox: {e}")
