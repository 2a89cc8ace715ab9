"""`inv --list` in this repo: the deployer's task collection."""

from deployer.cli.tasks import ns  # noqa: F401  (invoke picks up `ns`)
