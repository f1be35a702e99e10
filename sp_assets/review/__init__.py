"""Human review: a self-contained review page per category, and the import of reviewers' decisions.

``page`` writes the page, ``decisions`` reads decisions files and picks the decisions that count,
``spreadsheet`` keeps CSV cells from running as formulas in a spreadsheet (and undoes it on import),
``cli`` is ``python -m sp_assets.review``; the rules themselves are in sp_assets.core.review_rules.
"""

from sp_assets.core.review_rules import apply_review
from sp_assets.review.cli import main
from sp_assets.review.decisions import (
    DECISION_COLUMNS,
    Decision,
    DecisionsFileError,
    ImportReport,
    RowError,
    effective_decisions,
    import_decisions,
    parse_time,
)
from sp_assets.review.page import export_review, page_paths

__all__ = ["DECISION_COLUMNS", "Decision", "DecisionsFileError", "ImportReport", "RowError", "apply_review",
           "effective_decisions", "export_review", "import_decisions", "main", "page_paths", "parse_time"]
