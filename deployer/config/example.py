"""Where hosts.example.toml is: the reference config, every key with its default."""

from pathlib import Path

NAME = "hosts.example.toml"


def path() -> Path:
    """The package's copy in an installed wheel (the build puts it there: setup.py), else the one
    copy at the top of the checkout this package runs from (PYTHONPATH, editable install)."""
    here = Path(__file__).resolve().parent
    shipped = here / NAME
    return shipped if shipped.is_file() else here.parent.parent / NAME
