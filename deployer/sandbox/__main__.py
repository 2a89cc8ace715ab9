"""`python -m deployer.sandbox`: build the sandbox image, serve or probe the running hosts (see cli.py)."""

import sys

from deployer.sandbox.cli import main
from deployer.sandbox.image import SandboxError

try:
    main(sys.argv[1:])
except SandboxError as e:
    sys.exit(f"sandbox: {e}")
