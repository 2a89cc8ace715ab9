"""Push-based SSH deployer with atomic symlink releases."""

__version__ = "0.1.0"
