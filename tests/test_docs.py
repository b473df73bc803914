"""The README stays a short guide and the docs/ pages it links to stay reachable and portable."""
import re

import pytest

from tests.conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
# The parts the README's tour walks through; each must keep its reference page.
PARTS = ["compile", "serve", "image", "benchmark", "deploy"]
# Paths that exist on one machine only (a scratch file, a work tree), not on a reader's.
MACHINE_PATHS = ("/tmp/", "/work/")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def relative_links(path):
    """Targets of the Markdown links in `path` that point into the repository."""
    prose = FENCE.sub("", path.read_text())
    return [t for t in LINK.findall(prose)
            if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_readme_is_a_guide_under_300_lines():
    assert len(README.read_text().splitlines()) < 300


@pytest.mark.parametrize("part", PARTS)
def test_each_part_has_its_page(part):
    assert (DOCS / f"{part}.md").is_file()


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(REPO_ROOT / t.split("#")[0]).resolve() for t in relative_links(README)}
    missing = [p.name for p in PAGES if p.resolve() not in linked]
    assert PAGES and not missing, f"docs pages the README does not link to: {missing}"


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: p.name)
def test_relative_links_resolve(path):
    broken = [t for t in relative_links(path) if not (path.parent / t.split("#")[0]).exists()]
    assert not broken, f"{path.name} links to files that do not exist: {broken}"


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: p.name)
def test_no_paths_of_one_machine(path):
    found = [(n, line.strip()) for n, line in enumerate(path.read_text().splitlines(), 1)
             if any(m in line for m in MACHINE_PATHS)]
    assert not found, f"{path.name} names paths of one machine: {found}"
