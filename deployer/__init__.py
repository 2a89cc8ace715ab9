"""Push-based SSH deployer with atomic symlink releases."""

import sys
from importlib.machinery import ModuleSpec
from importlib.util import spec_from_file_location
from pathlib import Path

__version__ = "0.1.0"  # the one place: pyproject.toml reads it (tool.setuptools.dynamic)
DISTRIBUTION = "symlink-deployer"  # the name on the package index (pyproject.toml's project.name)


class _CheckoutRecipes:
    """deployer.recipes is the top-level recipes/ of a checkout (the wheel has it inside the
    package): found there when the package runs from the checkout itself (PYTHONPATH, or an
    editable install), ahead of an editable install made from another checkout."""

    def __init__(self, init: Path) -> None:
        self.init = init

    def find_spec(self, name: str, path: object = None, target: object = None) -> ModuleSpec | None:
        return spec_from_file_location(name, self.init) if name == "deployer.recipes" else None


def _checkout_recipes() -> Path | None:
    here = Path(__file__).resolve().parent
    init = here.parent / "recipes" / "__init__.py"
    if (here / "recipes").is_dir() or not (init.is_file() and (here.parent / "pyproject.toml").is_file()):
        return None  # installed (the recipes are inside), or not this project's checkout
    return init


if (_init := _checkout_recipes()) is not None:
    sys.meta_path.insert(0, _CheckoutRecipes(_init))
