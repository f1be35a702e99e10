"""Human review: a self-contained review page per category, and the import of reviewers' decisions."""

from sp_assets.review.decisions import (
    DECISION_COLUMNS,
    Decision,
    DecisionsFileError,
    ImportReport,
    RowError,
    apply_review,
    effective_decisions,
    export_review,
    import_decisions,
    main,
    page_paths,
    parse_time,
)

__all__ = ["DECISION_COLUMNS", "Decision", "DecisionsFileError", "ImportReport", "RowError", "apply_review",
           "effective_decisions", "export_review", "import_decisions", "main", "page_paths", "parse_time"]
