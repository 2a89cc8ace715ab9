"""`publish`: an artifact and its .json uploaded to [store] (what a deploy takes from the store is
chosen in artifact/choice.py; the publish a pull deploy runs meanwhile is engine/pull.py's)."""

from __future__ import annotations

from invoke import Task

from deployer.artifact.choice import chosen, store_of
from deployer.cli.command import command, text_output
from deployer.config import load as config_mod
from deployer.engine.pull import show_progress
from deployer.report.document import Outcome


@command(
    artifact="Publish this .tar.gz (with its .json) instead of building HEAD.",
    version="Publish this artifact of the local store (version, or a sha256/git sha prefix).",
    allow_dirty="When building, allow a dirty work tree.",
)
def publish(c, config=None, artifact=None, version=None, allow_dirty=False, json=False):
    """Upload the artifact and its .json to [store] (what is there already is skipped); any machine
    with the store's credentials can then `deploy --version V`."""
    cfg = config_mod.load(config)
    out = text_output(json)
    store = store_of(cfg)
    show_progress(store, out)
    art = chosen(cfg, artifact, allow_dirty, out.say, version, local_only=True)
    uploaded = store.put(art)
    for name in store.replaced:
        out.say(f"the store's {name} was not this artifact's: replaced")
    if uploaded:
        out.say(f"published {art.version} ({art.sha256[:12]}) to {store.where}: {', '.join(uploaded)}")
    else:
        out.say(f"{art.version} ({art.sha256[:12]}) is already in {store.where}: nothing uploaded")
    return Outcome([], 0, None, None, {"version": art.version, "sha256": art.sha256, "uploaded": uploaded})


TASKS: tuple[Task, ...] = (publish,)
