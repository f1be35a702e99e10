"""The README's promises that code can check: the schema section and the commands it names."""

from __future__ import annotations

from sp_assets.policy import REPO_ROOT
from sp_assets.storage import schema_markdown


def test_readme_schema_matches_the_tables():
    readme = (REPO_ROOT / "README.md").read_text()
    assert schema_markdown() in readme, "regenerate the README schema section from sp_assets.storage.schema_markdown()"


def test_ci_runs_the_readme_test_command():
    assert "make test" in (REPO_ROOT / "README.md").read_text()
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()
