"""The user guide holds together: the README stays a short guide (<= 15 KB, no dated measurements,
the Quick start a checker looks for), every relative link in README.md and docs/*.md resolves to a
file and, with a #fragment, to a heading there, and every page in docs/ is reachable from the README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code."""
    text = re.sub(r"(?ms)^(```|~~~).*?^\1[^\n]*$", "", text)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in prose(page.read_text()).splitlines():
        m = re.match(r"^#{1,6} (.+?)#*\s*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(page: Path) -> list[str]:
    return [t for t in LINK.findall(prose(page.read_text())) if not re.match(r"^[a-z]+:", t)]


def test_slugs_follow_github():
    assert slug("What happens when…") == "what-happens-when"
    assert slug("Provenance: what was tested is what runs") == "provenance-what-was-tested-is-what-runs"
    assert slug("`deployer init`") == "deployer-init"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    broken = []
    for target in links(page):
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: no heading #{fragment} in {dest.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_readme_is_a_short_guide():
    text = (REPO / "README.md").read_text()
    assert len(text.encode()) <= 15 * 1024, f"README.md is {len(text.encode())} bytes"
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), "dated narration belongs in benchmarks/results.md"
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "./scripts/demo" in quick and "./scripts/test" in quick
    for heading in (
        "## Install",
        "## A first deploy to your own server, in five steps",
        "## Daily commands",
        "## Exit codes",
    ):
        assert heading in text, heading


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(REPO / t.partition("#")[0]).resolve() for t in links(REPO / "README.md") if t.partition("#")[0]}
    orphans = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert not orphans, orphans


def test_exit_codes_in_the_readme_are_the_ones_the_code_uses():
    from deployer import errors

    text = (REPO / "README.md").read_text().split("## Exit codes", 1)[1]
    listed = {int(n) for m in re.findall(r"(?m)^\| (\d+(?:, \d+)*) \|", text) for n in m.split(", ")}
    used = {v for k, v in vars(errors).items() if k.isupper() and isinstance(v, int)}
    assert used <= listed, used - listed
