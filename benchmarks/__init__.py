"""Side-by-side performance harness: the deployer against a plain OpenSSH floor.

Run: ``.venv/bin/python -m benchmarks.run --help`` (see benchmarks/README.md).
"""
