"""The `deployer` console script: an invoke Program over the same task collection as tasks.py."""

from invoke import Program

from . import __version__
from .tasks import ns

program = Program(namespace=ns, version=__version__, name="deployer", binary="deployer")


def main() -> None:
    program.run()
