"""The README's promises that code can check: the column reference (docs/schema.md), the links between
them, and the commands it names.

Regenerate docs/schema.md with: .venv/bin/python tests/test_readme.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
SCHEMA_DOC = README.parent / "docs" / "schema.md"
_SECTION = re.compile(r"(<!-- schema:start[^>]*-->\n)(.*?)(<!-- schema:end -->)", re.S)


def _schema_markdown() -> str:
    from sp_assets.storage import schema_markdown

    return schema_markdown()


def test_the_column_reference_matches_the_tables():
    match = _SECTION.search(SCHEMA_DOC.read_text())
    assert match, "docs/schema.md lost its schema markers"
    assert match.group(2) == _schema_markdown(), "docs/schema.md is stale: run python tests/test_readme.py"


def test_the_readme_links_resolve():
    """Every relative link of the README and the docs names a file that exists."""
    for doc in [README, *sorted((README.parent / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.name} links to {target}, which does not exist"


def test_ci_runs_the_readme_test_command():
    assert "make test" in README.read_text()
    assert "make test-all" in README.read_text()
    assert "make test-all" in (README.parent / ".ci" / "run").read_text()


if __name__ == "__main__":
    sys.path.insert(0, str(README.parent))
    text = SCHEMA_DOC.read_text()
    SCHEMA_DOC.write_text(_SECTION.sub(lambda m: m.group(1) + _schema_markdown() + m.group(3), text))
    print(f"updated {SCHEMA_DOC}")
