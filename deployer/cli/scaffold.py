"""`deployer init`: a commented hosts.toml, a tasks.py for `inv`, and on request a CI workflow,
for the git repository the command runs in. Pure text building plus one careful write."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from deployer.errors import UsageError

# The first marker found in the repository decides the recipe (django projects often carry a
# gunicorn.conf.py too, so manage.py is asked first).
RECIPE_MARKERS = (("manage.py", "django"), ("gunicorn.conf.py", "python_wsgi"), ("public/index.html", "static_site"))
CI_FILES = {"github": ".github/workflows/deploy.yml", "gitlab": ".gitlab-ci.yml"}
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class Plan:
    """What init would write: repository-relative path -> text."""

    root: Path
    files: dict[str, str]
    recipe: str
    reason: str
    ignore: tuple[str, ...] = ()  # lines to append to .gitignore (the build output)


def repository_root(start: Path) -> Path:
    """The top of the git work tree holding `start`; bad input (exit 2) outside of one."""
    try:
        proc = subprocess.run(["git", "-C", str(start), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    except OSError:
        raise UsageError("init needs git: install it, then run init in your app's repository") from None
    if proc.returncode != 0:
        raise UsageError(f"{start} is not in a git repository: run `git init` (and commit your app) first")
    return Path(proc.stdout.strip())


def app_name(root: Path) -> str:
    """The repository's directory name, made a valid artifact name (lower case, no spaces)."""
    name = re.sub(r"[^a-z0-9._-]+", "-", root.name.lower()).strip("-._")
    return name if _NAME.match(name) else "app"


def guess_recipe(root: Path) -> tuple[str, str]:
    """(recipe, why) from the files at the top of the tree; ("", why) when nothing matches."""
    for marker, recipe in RECIPE_MARKERS:
        if (root / marker).is_file():
            return recipe, f"{marker} found"
    return "", "no gunicorn.conf.py, manage.py or public/index.html found"


def hosts_toml(name: str, deploy_to: str, stage: str, hosts: list[str], user: str, recipe: str, why: str) -> str:
    entries = "\n".join(f"    {_toml_str(h)}," for h in hosts) or '    "deploy@app1.example.com",   # user@host[:port]'
    recipe_line = (
        f'recipe = "{recipe}"{" " * max(1, 22 - len(recipe))}# guessed: {why}'
        if recipe
        else f'# recipe = "python_wsgi"       # {why}: none guessed (generic release flow)'
    )
    return f"""# hosts.toml for {name}, written by `deployer init`. Every key, with its default, is described
# in hosts.example.toml (shipped in the deployer package; see docs/configuration.md).
# Next: put your server(s) below, then run `deployer check`, then `deployer deploy`.

[app]
name = {_toml_str(name)}
deploy_to = {_toml_str(deploy_to)}{" " * max(1, 20 - len(deploy_to))}# releases/, shared/ and current live here
{recipe_line}
keep_releases = 5
# shared_dirs = ["log"]         # kept across releases, linked into each one

[build]
source = "."                    # this repository: the tracked files of HEAD are deployed

[ssh]
user = {_toml_str(user)}
host_key_policy = "strict"      # the hosts' keys must be in known_hosts (ssh-keyscan HOST >> ~/.ssh/known_hosts)
# key = "~/.ssh/id_ed25519"     # default: ssh-agent and ~/.ssh/id_* keys
# known_hosts = "~/.ssh/known_hosts"
# gateway = "bastion.example.com"

[stages.{stage}]
hosts = [
{entries}
]
"""


TASKS_PY = '''"""`inv --list` in this repository: the deployer's tasks (deploy, rollback, status, ...),
the same ones the `deployer` command runs."""

from deployer.cli.tasks import ns  # noqa: F401  (invoke picks up `ns`)
'''


def github_workflow(stage: str) -> str:
    return f"""# Deploy on every push to main: build the artifact once, deploy it to {stage}.
# Secrets (Settings > Secrets and variables > Actions): DEPLOY_SSH_KEY (a private key the hosts
# authorize) and DEPLOY_KNOWN_HOSTS (their lines from `ssh-keyscan`). More: docs/ci-and-cron.md.
name: deploy
on:
  push:
    branches: [main]
concurrency: deploy-{stage}
env:
  DEPLOYER_PACKAGE: "git+https://github.com/your-org/deployer.git"   # or the URL of its sdist
jobs:
  deploy:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.11"
      - name: Install the deployer
        run: pip install "$DEPLOYER_PACKAGE"
      - name: SSH key and known_hosts from the secret store
        run: |
          install -d -m 700 ~/.ssh
          printf '%s\\n' "$DEPLOY_SSH_KEY" > ~/.ssh/id_ed25519 && chmod 600 ~/.ssh/id_ed25519
          printf '%s\\n' "$DEPLOY_KNOWN_HOSTS" > ~/.ssh/known_hosts
        env:
          DEPLOY_SSH_KEY: ${{{{ secrets.DEPLOY_SSH_KEY }}}}
          DEPLOY_KNOWN_HOSTS: ${{{{ secrets.DEPLOY_KNOWN_HOSTS }}}}
      - name: Build the artifact
        run: deployer build
      - name: Deploy it (waits up to 10 min for a lock someone holds)
        run: deployer deploy --stage {stage} --version "$GITHUB_SHA" --lock-wait 600 --json > deploy.json
      - uses: actions/upload-artifact@v4
        if: always()
        with:
          name: deploy-result
          path: deploy.json
"""


def gitlab_ci(stage: str) -> str:
    return f"""# Deploy on every push to the default branch. CI/CD variables: DEPLOY_SSH_KEY (type File: a
# private key the hosts authorize) and DEPLOY_KNOWN_HOSTS (their lines from `ssh-keyscan`).
deploy:
  image: python:3.11
  variables:
    DEPLOYER_PACKAGE: "git+https://gitlab.com/your-org/deployer.git"   # or the URL of its sdist
  resource_group: deploy-{stage}
  rules:
    - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH
  script:
    - pip install "$DEPLOYER_PACKAGE"
    - install -d -m 700 ~/.ssh
    - install -m 600 "$DEPLOY_SSH_KEY" ~/.ssh/id_ed25519
    - printf '%s\\n' "$DEPLOY_KNOWN_HOSTS" > ~/.ssh/known_hosts
    - deployer build
    - deployer deploy --stage {stage} --version "$CI_COMMIT_SHA" --lock-wait 600 --json > deploy.json
  artifacts:
    when: always
    paths: [deploy.json]
"""


def plan(
    start: Path,
    *,
    stage: str = "production",
    hosts: list[str] | None = None,
    user: str = "deploy",
    deploy_to: str = "",
    recipe: str | None = None,
    ci: str = "",
) -> Plan:
    """Every file init would write for the repository holding `start` (nothing is written)."""
    if not re.match(r"^[A-Za-z0-9_-]+$", stage):
        raise UsageError(f"--stage expects letters, digits, '_' or '-', got {stage!r}")
    if ci and ci not in CI_FILES:
        raise UsageError(f"--ci expects {' or '.join(CI_FILES)}, got {ci!r}")
    for h in hosts or []:
        if not h or any(c.isspace() or c in '"\\' for c in h) or h.startswith("-"):
            raise UsageError(f"--hosts expects [user@]host[:port] names, got {h!r}")
    root = repository_root(start)
    name = app_name(root)
    deploy_to = deploy_to or f"/srv/{name}"
    if not deploy_to.startswith("/") or any(c.isspace() or c in '"\\' for c in deploy_to):
        raise UsageError(f"--deploy-to expects an absolute path, got {deploy_to!r}")
    if recipe is None:
        recipe, why = guess_recipe(root)
    else:
        why = "chosen with --recipe"
    files = {"hosts.toml": hosts_toml(name, deploy_to, stage, hosts or [], user, recipe, why), "tasks.py": TASKS_PY}
    if ci:
        files[CI_FILES[ci]] = github_workflow(stage) if ci == "github" else gitlab_ci(stage)
    return Plan(root, files, recipe, why, () if _ignored(root, "artifacts/x.tar.gz") else ("artifacts/",))


def write(p: Plan, force: bool = False) -> list[str]:
    """Write every file, or none: without force, any file that exists already is bad input."""
    existing = [rel for rel in p.files if (p.root / rel).exists() or (p.root / rel).is_symlink()]
    if existing and not force:
        raise UsageError(
            f"{', '.join(existing)} already exist(s) in {p.root}: nothing written (add --force to overwrite)"
        )
    for rel, text in p.files.items():
        path = p.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            path.unlink()  # replace the link itself, never write through it
        path.write_text(text)
    if p.ignore:  # built artifacts land in the tree: unignored, they make the next build "dirty"
        gitignore = p.root / ".gitignore"
        if gitignore.is_symlink():
            raise UsageError(f"{gitignore} is a link: add {', '.join(p.ignore)} to it yourself")
        old = gitignore.read_text() if gitignore.exists() else ""
        gitignore.write_text(old + ("\n" if old and not old.endswith("\n") else "") + "\n".join(p.ignore) + "\n")
        return [*p.files, ".gitignore"]
    return list(p.files)


def _ignored(root: Path, rel: str) -> bool:
    return subprocess.run(["git", "-C", str(root), "check-ignore", "-q", rel], capture_output=True).returncode == 0


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
