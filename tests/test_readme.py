"""The README's promises that code can check: the schema section and the commands it names.

Regenerate the schema section with: .venv/bin/python tests/test_readme.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
_SECTION = re.compile(r"(<!-- schema:start[^>]*-->\n)(.*?)(<!-- schema:end -->)", re.S)


def _schema_markdown() -> str:
    from sp_assets.storage import schema_markdown

    return schema_markdown()


def test_readme_schema_matches_the_tables():
    match = _SECTION.search(README.read_text())
    assert match, "README lost its schema markers"
    assert match.group(2) == _schema_markdown(), "schema section is stale: run python tests/test_readme.py"


def test_ci_runs_the_readme_test_command():
    assert "make test" in README.read_text()
    assert "make test-all" in README.read_text()
    assert "make test-all" in (README.parent / ".ci" / "run").read_text()


if __name__ == "__main__":
    sys.path.insert(0, str(README.parent))
    text = README.read_text()
    README.write_text(_SECTION.sub(lambda m: m.group(1) + _schema_markdown() + m.group(3), text))
    print(f"updated {README}")
