"""Design notes the code cites live in the repository, under docs/.

Comments and docstrings cite them as ``docs/contract.md §4``. Every cited file must exist, every
cited section must be one of its ``## N.`` headings, and nothing may cite a note that is not in
the repository (the team's working notes outside it, which a clone does not have).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("sync_service", "tests", "bench", "migrations")

# `docs/name.md`, optionally followed by a section: `docs/name.md §4`, ``docs/x.md`` §6.2
CITATION = re.compile(r"docs/(?P<file>[\w.-]+\.md)`{0,2}(?:\s+§(?P<section>\d+))?")
# any `something.md` mentioned: it must be a file of the repository
MARKDOWN_NAME = re.compile(r"(?<![\w/.-])(?P<path>(?:[\w.-]+/)*[\w.-]+\.md)\b")
OUTSIDE = ("/work/", "/shared/")


def _files() -> list[Path]:
    files = [p for folder in SOURCES for p in sorted((ROOT / folder).rglob("*.py"))]
    files += sorted(ROOT.glob("*.md")) + sorted((ROOT / "docs").glob("*.md"))
    return [p for p in files if p != Path(__file__).resolve() and ".venv" not in p.parts]


def _sections(doc: Path) -> set[str]:
    return set(re.findall(r"^## (\d+)\.", doc.read_text(), flags=re.MULTILINE))


def test_docs_exist_and_are_numbered() -> None:
    docs = sorted((ROOT / "docs").glob("*.md"))
    assert {d.name for d in docs} >= {"contract.md", "upstream-2024.md", "testing.md"}
    for doc in docs:
        assert _sections(doc), f"{doc.name} has no numbered sections to cite"


def test_every_cited_doc_and_section_exists() -> None:
    cited = 0
    for path in _files():
        for match in CITATION.finditer(path.read_text()):
            cited += 1
            doc = ROOT / "docs" / match.group("file")
            where = f"{path.relative_to(ROOT)}: {match.group(0)!r}"
            assert doc.is_file(), f"{where} cites a file docs/ does not have"
            section = match.group("section")
            if section:
                assert section in _sections(doc), f"{where}: {doc.name} has no section {section}"
    assert cited >= 20, f"only {cited} citations found: is the pattern still right?"


def test_no_design_note_outside_the_repository_is_cited() -> None:
    for path in _files():
        text = path.read_text()
        rel = path.relative_to(ROOT)
        for marker in OUTSIDE:
            assert marker not in text, f"{rel} points outside the repository ({marker})"
        for match in MARKDOWN_NAME.finditer(text):
            name = match.group("path")
            candidates = (ROOT / name, ROOT / "docs" / name, path.parent / name)
            assert any(c.is_file() for c in candidates), (
                f"{rel} cites {name}, which is not in the repository (move what it needs to docs/)"
            )
