"""The lb's weights file (scripts/weights.sh): set a share, or put back what was there before the
first step. Builders only; the engine (engine/weights.py) runs them."""

from __future__ import annotations

from deployer.plan import setup as setup_plan
from deployer.remote.render import Value, render

REJECTED = 41  # nginx -t refused the new file: the previous one is back
NOT_SET_UP = 42  # no weights file, or its directory is not writable: nothing changed
NO_RELOAD = 43  # nginx did not reload (sudo rule?): the file is new, nginx serves the old weights


def saved_path(weights_file: str) -> str:
    """Where the content before the first step waits to be put back (beside the file: one mv)."""
    directory, _, base = weights_file.rpartition("/")
    return f"{directory}/.{base}.deployer-saved"


def set_weights(weights_file: str, content: str) -> str:
    return _script("set", weights_file, content)


def restore(weights_file: str) -> str:
    return _script("restore", weights_file, "")


def _script(action: str, weights_file: str, content: str) -> str:
    values: dict[str, Value] = {
        "ACTION": action,
        "WEIGHTS_FILE": weights_file,
        "SAVED": saved_path(weights_file),
        "CONTENT": content,
        "NGINX": setup_plan.NGINX,
        "SYSTEMCTL": setup_plan.SYSTEMCTL,
    }
    return render(["weights.sh"], values)
