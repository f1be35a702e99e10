"""Storage: the DuckDB tables (one per stage), slice writes, lineage, and the content-addressed image store.

All SQL of the project lives here. Stage modules call these functions with short-lived
connections: open, read or write, close. No model ever runs while a connection is open, because
DuckDB lets one process at a time hold a database file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Mapping, Sequence

import duckdb
import polars as pl
from PIL import Image, ImageOps

ConnectionFactory = Callable[[], ContextManager[duckdb.DuckDBPyConnection]]

# Every table, its columns and their meaning. The README's schema section is generated from this.
SCHEMA: dict[str, list[tuple[str, str, str]]] = {
    "source_images": [
        ("category", "VARCHAR", "partition key (policy category slug)"),
        ("image_sha256", "VARCHAR", "sha256 of the stored image bytes; the image's identity"),
        ("image_path", "VARCHAR", "path of the stored file, relative to the data root"),
        ("width", "INTEGER", "pixels"),
        ("height", "INTEGER", "pixels"),
        ("format", "VARCHAR", "PNG, JPEG, ..."),
        ("n_bytes", "BIGINT", "file size"),
        ("origin", "VARCHAR", "'demo' or 'folder'"),
        ("origin_ref", "VARCHAR", "demo recipe id, or the file path relative to the source folder"),
        ("manifest_rating", "VARCHAR", "human label from the manifest, if any"),
        ("manifest_category", "VARCHAR", "category from the manifest, if any"),
        ("manifest_rationale", "VARCHAR", "rationale from the manifest, if any"),
        ("demo_intended", "VARCHAR", "demo only: the label the generator intended"),
        ("demo_text", "VARCHAR", "demo only: the text rendered on the sign"),
        ("recipe_json", "VARCHAR", "demo only: everything needed to regenerate the image"),
        ("policy_sha256", "VARCHAR", "hash of the policy file in force"),
        ("source_config_sha256", "VARCHAR", "hash of the source settings"),
        ("run_id", "VARCHAR", "Dagster run that wrote the row"),
        ("created_at", "TIMESTAMP", "UTC"),
    ],
    "source_rejections": [
        ("category", "VARCHAR", "partition key"),
        ("origin_ref", "VARCHAR", "the file or manifest row that was refused"),
        ("reason", "VARCHAR", "short code: corrupt, truncated, not_an_image, too_many_pixels, ..."),
        ("detail", "VARCHAR", "what was wrong and how to fix it"),
        ("duplicate_of", "VARCHAR", "for reason 'duplicate': the sha256 kept instead"),
        ("quarantine_path", "VARCHAR", "copy of the refused file under the data root, if it was readable"),
        ("source_config_sha256", "VARCHAR", "hash of the source settings"),
        ("run_id", "VARCHAR", "Dagster run"),
        ("created_at", "TIMESTAMP", "UTC"),
    ],
    "policy_labels": [
        ("category", "VARCHAR", "partition key; the category the image was judged under"),
        ("image_sha256", "VARCHAR", "the judged source image"),
        ("judge_profile", "VARCHAR", "profile name from resources/judges.yaml"),
        ("judge_config_sha256", "VARCHAR", "hash of the judge's fully resolved config"),
        ("rating", "VARCHAR", "'unsafe', 'safe' or 'invalid' (unparseable or undecidable; never safe)"),
        ("judged_category", "VARCHAR", "category the judge found violated"),
        ("score", "DOUBLE", "probability of unsafe, when the judge gives one"),
        ("rationale", "VARCHAR", "the judge's reason"),
        ("regions_json", "VARCHAR", "evidence regions (scene text boxes)"),
        ("raw_output", "VARCHAR", "the model's raw answer"),
        ("model_id", "VARCHAR", "model that judged"),
        ("model_revision", "VARCHAR", "its revision or package version"),
        ("model_device", "VARCHAR", "device"),
        ("policy_sha256", "VARCHAR", "hash of the policy file"),
        ("run_id", "VARCHAR", "Dagster run"),
        ("created_at", "TIMESTAMP", "UTC"),
    ],
    "edit_instructions": [
        ("instruction_id", "VARCHAR", "sha256 of (source, instruction, target); the instruction's identity"),
        ("category", "VARCHAR", "partition key"),
        ("image_sha256", "VARCHAR", "source image"),
        ("judge_profile", "VARCHAR", "judge whose finding the instruction answers"),
        ("writer_profile", "VARCHAR", "profile from resources/writers.yaml"),
        ("writer_config_sha256", "VARCHAR", "hash of the writer's resolved config"),
        ("variant", "INTEGER", "index among the variants for this image"),
        ("kind", "VARCHAR", "'flip' (removes the violation) or 'null' (control: changes nothing the policy cares about)"),
        ("instruction", "VARCHAR", "the instruction text"),
        ("keep", "VARCHAR", "what must stay unchanged"),
        ("target_json", "VARCHAR", "machine-readable target (regions, replacement text)"),
        ("model_id", "VARCHAR", "writer model"),
        ("seed", "BIGINT", "seed the writer used"),
        ("policy_sha256", "VARCHAR", "hash of the policy file"),
        ("run_id", "VARCHAR", "Dagster run"),
        ("created_at", "TIMESTAMP", "UTC"),
    ],
    "edited_images": [
        ("candidate_id", "VARCHAR", "sha256 of (source, instruction, editor config, seed): the cache key"),
        ("category", "VARCHAR", "partition key"),
        ("image_sha256", "VARCHAR", "source image"),
        ("instruction_id", "VARCHAR", "the instruction applied"),
        ("judge_profile", "VARCHAR", "lineage: judge profile"),
        ("writer_profile", "VARCHAR", "lineage: writer profile"),
        ("editor_profile", "VARCHAR", "profile from resources/editors.yaml"),
        ("editor_config_sha256", "VARCHAR", "hash of the editor's resolved config"),
        ("seed", "BIGINT", "seed of this candidate"),
        ("status", "VARCHAR", "'ok' or 'failed'"),
        ("error", "VARCHAR", "why the edit failed"),
        ("edited_sha256", "VARCHAR", "sha256 of the edited image file"),
        ("edited_path", "VARCHAR", "relative to the data root"),
        ("source_width", "INTEGER", "source size"),
        ("source_height", "INTEGER", "source size"),
        ("raw_width", "INTEGER", "size the editor produced"),
        ("raw_height", "INTEGER", "size the editor produced"),
        ("width", "INTEGER", "stored size (brought back to the source size)"),
        ("height", "INTEGER", "stored size"),
        ("region_json", "VARCHAR", "boxes the editor changed, if it reports them"),
        ("detail_json", "VARCHAR", "editor-specific detail"),
        ("model_id", "VARCHAR", "editor model"),
        ("model_revision", "VARCHAR", "its revision"),
        ("model_device", "VARCHAR", "device"),
        ("seconds", "DOUBLE", "time to compute the edit"),
        ("computed_run_id", "VARCHAR", "run that computed the edit (earlier runs are reused by cache key)"),
        ("run_id", "VARCHAR", "Dagster run that wrote the row"),
        ("created_at", "TIMESTAMP", "UTC"),
    ],
    "verified_pairs": [
        ("candidate_id", "VARCHAR", "the edited candidate"),
        ("category", "VARCHAR", "partition key"),
        ("kind", "VARCHAR", "'flip' (must become safe) or 'null' (control edit: must stay unsafe)"),
        ("image_sha256", "VARCHAR", "source (unsafe) image"),
        ("edited_sha256", "VARCHAR", "edited image, if the edit succeeded"),
        ("judge_profile", "VARCHAR", "lineage: judge that labelled the source"),
        ("verifier_profile", "VARCHAR", "judge that rated the edit"),
        ("verifier_config_sha256", "VARCHAR", "hash of the verifier judge's resolved config"),
        ("writer_profile", "VARCHAR", "lineage"),
        ("editor_profile", "VARCHAR", "lineage"),
        ("embedder_profile", "VARCHAR", "embedder used for global similarity"),
        ("verify_config_sha256", "VARCHAR", "hash of thresholds + judge + embedder config"),
        ("source_rating", "VARCHAR", "judge's rating of the source"),
        ("source_score", "DOUBLE", "P(unsafe) of the source"),
        ("edit_rating", "VARCHAR", "judge's rating of the edit"),
        ("edit_score", "DOUBLE", "P(unsafe) of the edit"),
        ("edit_judged_category", "VARCHAR", "category the judge found in the edit"),
        ("edit_rationale", "VARCHAR", "judge's reason for the edit"),
        ("edit_raw_output", "VARCHAR", "judge's raw answer for the edit"),
        ("ssim_outside", "DOUBLE", "mean SSIM outside the edited region"),
        ("psnr_outside", "DOUBLE", "PSNR (dB) outside the edited region, capped at 100"),
        ("embedding_cosine", "DOUBLE", "cosine similarity of whole-image embeddings"),
        ("lpips", "DOUBLE", "LPIPS distance of the whole images, when its weights are on the machine (else NULL)"),
        ("changed_fraction", "DOUBLE", "share of pixels inside the edited region"),
        ("region_source", "VARCHAR", "'editor' (reported) or 'diff' (derived from a difference map)"),
        ("sizes_match", "BOOLEAN", "source and edit have the same size"),
        ("accepted", "BOOLEAN", "all tests passed"),
        ("reject_reason", "VARCHAR", "why not accepted (semicolon-separated codes)"),
        ("quality_score", "DOUBLE", "ranking score among accepted candidates"),
        ("auto_accepted", "BOOLEAN", "the automatic verdict, before any human review"),
        ("auto_reject_reason", "VARCHAR", "the automatic reasons, before any human review"),
        ("review_verdict", "VARCHAR", "human decision that overrides the automatic one ('accept' / 'reject'), if any"),
        ("reviewer", "VARCHAR", "who decided"),
        ("reviewed_at", "TIMESTAMP", "when (UTC)"),
        ("review_note", "VARCHAR", "why"),
        ("review_decisions_sha256", "VARCHAR", "hash of the decisions file the verdict came from"),
        ("thresholds_json", "VARCHAR", "thresholds in force"),
        ("run_id", "VARCHAR", "Dagster run"),
        ("created_at", "TIMESTAMP", "UTC"),
    ],
    "benchmark_split": [
        ("pair_id", "VARCHAR", "sha256 of (source, edited); the pair's identity"),
        ("category", "VARCHAR", "partition key"),
        ("split", "VARCHAR", "'train', 'validation' or 'test'"),
        ("image_sha256", "VARCHAR", "the unsafe half (source)"),
        ("unsafe_path", "VARCHAR", "relative to the data root"),
        ("candidate_id", "VARCHAR", "the chosen candidate"),
        ("safe_sha256", "VARCHAR", "the safe half (edit)"),
        ("safe_path", "VARCHAR", "relative to the data root"),
        ("instruction", "VARCHAR", "the instruction that made the safe half"),
        ("judge_profile", "VARCHAR", "lineage"),
        ("writer_profile", "VARCHAR", "lineage"),
        ("editor_profile", "VARCHAR", "lineage"),
        ("quality_score", "DOUBLE", "why this candidate won"),
        ("n_accepted_candidates", "INTEGER", "accepted candidates for this source over all profiles"),
        ("control_candidate_id", "VARCHAR", "null edit of the same source through the same editor (NULL if none passed)"),
        ("control_sha256", "VARCHAR", "the control image: edited, still unsafe"),
        ("control_path", "VARCHAR", "relative to the data root"),
        ("split_config_sha256", "VARCHAR", "hash of the split settings"),
        ("run_id", "VARCHAR", "Dagster run"),
        ("created_at", "TIMESTAMP", "UTC"),
    ],
    "guard_predictions": [
        ("category", "VARCHAR", "partition key"),
        ("guard", "VARCHAR", "guard profile name"),
        ("pair_id", "VARCHAR", "benchmark pair"),
        ("split", "VARCHAR", "split of the pair"),
        ("half", "VARCHAR", "'unsafe' (source), 'control' (null-edited, unsafe) or 'safe' (flip edit)"),
        ("image_sha256", "VARCHAR", "image judged"),
        ("label", "VARCHAR", "ground truth: 'unsafe' or 'safe'"),
        ("rating", "VARCHAR", "guard's rating ('invalid' counts as wrong)"),
        ("score", "DOUBLE", "guard's P(unsafe), if any"),
        ("raw_output", "VARCHAR", "guard's raw answer"),
        ("reused_from", "VARCHAR", "'policy_labels' or 'verified_pairs' when the same judge config already rated the image"),
        ("guard_config_sha256", "VARCHAR", "hash of the guard's config"),
        ("run_id", "VARCHAR", "Dagster run"),
        ("created_at", "TIMESTAMP", "UTC"),
    ],
    "guard_metrics": [
        ("category", "VARCHAR", "partition key"),
        ("guard", "VARCHAR", "guard profile name"),
        ("split", "VARCHAR", "'test' or 'all'"),
        ("pair_type", "VARCHAR", "'original' (source vs edit) or 'controlled' (null edit vs edit: both halves edited)"),
        ("n_pairs", "INTEGER", "pairs evaluated"),
        ("acc_unsafe", "DOUBLE", "accuracy on the unsafe halves"),
        ("acc_safe", "DOUBLE", "accuracy on the safe halves"),
        ("pair_accuracy", "DOUBLE", "share of pairs with both halves right"),
        ("roc_auc", "DOUBLE", "ROC-AUC from scores (NULL without scores or with one class)"),
        ("n_invalid", "INTEGER", "answers rated invalid (counted as wrong)"),
        ("guard_config_sha256", "VARCHAR", "hash of the guard's config"),
        ("run_id", "VARCHAR", "Dagster run"),
        ("created_at", "TIMESTAMP", "UTC"),
    ],
    "probe_results": [
        ("scope", "VARCHAR", "the categories pooled, comma-separated (the run's partition range)"),
        ("features", "VARCHAR", "'image' or 'image+text' (embedding of the scene text the judge read)"),
        ("condition", "VARCHAR", "'pairs' (k counterfactual pairs added) or 'ordinary' (2k ordinary images)"),
        ("k", "INTEGER", "pairs asked for"),
        ("k_used", "INTEGER", "pairs (or ordinary image pairs) available and used"),
        ("eval_set", "VARCHAR", "'heldout_pairs' (validation + test) or 'non_pair'"),
        ("metric", "VARCHAR", "pair_accuracy, accuracy, acc_unsafe, acc_safe, roc_auc, ..."),
        ("mean", "DOUBLE", "mean over seeds"),
        ("std", "DOUBLE", "standard deviation over seeds"),
        ("n", "INTEGER", "seeds with a value"),
        ("run_id", "VARCHAR", "Dagster run"),
        ("created_at", "TIMESTAMP", "UTC"),
    ],
    "review_decisions": [
        ("candidate_id", "VARCHAR", "the candidate reviewed"),
        ("category", "VARCHAR", "partition key"),
        ("reviewer", "VARCHAR", "who decided"),
        ("decided_at", "TIMESTAMP", "when (UTC), as given in the decisions file"),
        ("verdict", "VARCHAR", "'accept' or 'reject'"),
        ("note", "VARCHAR", "why"),
        ("decisions_file", "VARCHAR", "file the decision was imported from"),
        ("decisions_sha256", "VARCHAR", "hash of that file"),
        ("imported_at", "TIMESTAMP", "UTC"),
    ],
    "stage_runs": [
        ("run_id", "VARCHAR", "Dagster run"),
        ("asset", "VARCHAR", "stage"),
        ("category", "VARCHAR", "partition key"),
        ("seconds", "DOUBLE", "wall time for this category in this stage"),
        ("n_in", "INTEGER", "rows or files that came in"),
        ("n_out", "INTEGER", "rows written / accepted"),
        ("n_rejected", "INTEGER", "rows refused, with reasons in the stage's table"),
        ("profiles_json", "VARCHAR", "profiles in force"),
        ("created_at", "TIMESTAMP", "UTC"),
    ],
}

# A walk from every benchmark pair back to its source file and every decision on the way.
LINEAGE_VIEW = """
CREATE OR REPLACE VIEW pair_lineage AS
SELECT
    b.pair_id, b.category, b.split,
    s.origin, s.origin_ref AS source_file, s.image_path AS source_path, b.image_sha256 AS source_sha256,
    s.policy_sha256, s.run_id AS source_run_id,
    l.judge_profile, l.judge_config_sha256, l.model_id AS judge_model, l.rating AS source_rating,
    l.score AS source_score, l.rationale AS judge_rationale, l.raw_output AS judge_raw_output,
    l.run_id AS label_run_id,
    i.instruction_id, i.writer_profile, i.writer_config_sha256, i.instruction, i.target_json,
    i.run_id AS instruction_run_id,
    e.candidate_id, e.editor_profile, e.editor_config_sha256, e.model_id AS editor_model,
    e.model_revision AS editor_revision, e.seed, e.edited_path, b.safe_sha256,
    e.computed_run_id AS edit_run_id,
    v.edit_rating, v.edit_score, v.ssim_outside, v.psnr_outside, v.embedding_cosine,
    v.quality_score, v.thresholds_json, v.auto_accepted, v.review_verdict, v.reviewer, v.reviewed_at,
    v.review_note, v.run_id AS verify_run_id, b.control_candidate_id, b.control_sha256,
    b.run_id AS split_run_id
FROM benchmark_split b
JOIN source_images s ON s.category = b.category AND s.image_sha256 = b.image_sha256
JOIN edited_images e ON e.candidate_id = b.candidate_id AND e.category = b.category
JOIN edit_instructions i ON i.instruction_id = e.instruction_id AND i.category = b.category
    AND i.judge_profile = e.judge_profile AND i.writer_profile = e.writer_profile
JOIN policy_labels l ON l.category = b.category AND l.image_sha256 = b.image_sha256
    AND l.judge_profile = e.judge_profile
JOIN verified_pairs v ON v.candidate_id = b.candidate_id AND v.category = b.category
    AND v.judge_profile = e.judge_profile
"""


# Attempts, acceptances and rejection reasons per category and profile set: the yield report.
YIELD_VIEW = """
CREATE OR REPLACE VIEW yield_by_profile AS
WITH reasons AS (
    SELECT category, judge_profile, writer_profile, editor_profile, kind, unnest(string_split(reject_reason, ';')) AS reason
    FROM verified_pairs WHERE NOT accepted
), histogram AS (
    SELECT category, judge_profile, writer_profile, editor_profile, kind,
           string_agg(reason || ': ' || n, ', ' ORDER BY n DESC, reason) AS rejection_reasons
    FROM (SELECT category, judge_profile, writer_profile, editor_profile, kind, reason, count(*) AS n
          FROM reasons GROUP BY ALL) GROUP BY ALL
)
SELECT v.category, v.judge_profile, v.writer_profile, v.editor_profile, v.kind,
       count(*) AS attempts, count(*) FILTER (WHERE v.accepted) AS accepted,
       round(count(*) FILTER (WHERE v.accepted) / count(*), 4) AS yield,
       count(DISTINCT v.image_sha256) AS sources,
       count(DISTINCT v.image_sha256) FILTER (WHERE v.accepted) AS sources_with_accepted,
       any_value(h.rejection_reasons) AS rejection_reasons
FROM verified_pairs v
LEFT JOIN histogram h USING (category, judge_profile, writer_profile, editor_profile, kind)
GROUP BY v.category, v.judge_profile, v.writer_profile, v.editor_profile, v.kind
"""


# Every guard over all categories: accuracies pooled over pairs (the per-category rows weighted by
# their pair counts). ROC-AUC does not pool this way; the run's ROC figure pools the scores instead.
OVERALL_VIEW = """
CREATE OR REPLACE VIEW guard_metrics_overall AS
SELECT guard, split, pair_type, count(DISTINCT category) AS categories, sum(n_pairs) AS n_pairs,
       sum(acc_unsafe * n_pairs) / nullif(sum(n_pairs), 0) AS acc_unsafe,
       sum(acc_safe * n_pairs) / nullif(sum(n_pairs), 0) AS acc_safe,
       sum(pair_accuracy * n_pairs) / nullif(sum(n_pairs), 0) AS pair_accuracy,
       sum(n_invalid) AS n_invalid
FROM guard_metrics WHERE n_pairs > 0
GROUP BY guard, split, pair_type
"""


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    existing: dict[str, set[str]] = {}
    for table, column in con.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'main'"
    ).fetchall():
        existing.setdefault(table, set()).add(column)
    for table, columns in SCHEMA.items():
        if table not in existing:
            cols = ", ".join(f"{name} {sql_type}" for name, sql_type, _ in columns)
            con.execute(f"CREATE TABLE {table} ({cols})")
            continue
        # A database made by an older version gains the new columns (NULL in old rows).
        for name, sql_type, _ in columns:
            if name not in existing[table]:
                con.execute(f"ALTER TABLE {table} ADD COLUMN {name} {sql_type}")
    con.execute(LINEAGE_VIEW)
    con.execute(YIELD_VIEW)
    con.execute(OVERALL_VIEW)


def _check_table(table: str) -> list[str]:
    if table not in SCHEMA:
        raise KeyError(f"unknown table {table!r}; known: {', '.join(SCHEMA)}")
    return [name for name, _, _ in SCHEMA[table]]


def _frame(table: str, rows: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    """Rows as a frame with exactly the table's columns, in order, typed for DuckDB."""
    columns = _check_table(table)
    dtypes = {
        "VARCHAR": pl.Utf8,
        "INTEGER": pl.Int32,
        "BIGINT": pl.Int64,
        "DOUBLE": pl.Float64,
        "BOOLEAN": pl.Boolean,
        "TIMESTAMP": pl.Datetime("us"),
    }
    schema = {name: dtypes[sql_type] for name, sql_type, _ in SCHEMA[table]}
    for i, row in enumerate(rows):
        unknown = set(row) - set(columns)
        if unknown:
            raise KeyError(f"row {i} for table {table!r} has unknown columns {sorted(unknown)}")
    data = {name: [row.get(name) for row in rows] for name in columns}
    return pl.DataFrame(data, schema=schema)


class Store:
    """The DuckDB side of the project. Give it a connection factory (a DuckDBResource's
    ``get_connection`` inside Dagster, ``Store.at(path)`` elsewhere)."""

    def __init__(self, connect: ConnectionFactory, read_only: bool = False):
        self._connect = connect
        self.read_only = read_only

    @classmethod
    def at(cls, db_path: str | os.PathLike[str], read_only: bool = False) -> "Store":
        db_path = Path(db_path)

        @contextlib.contextmanager
        def connect() -> Iterator[duckdb.DuckDBPyConnection]:
            if not read_only:
                db_path.parent.mkdir(parents=True, exist_ok=True)
            con = _connect_with_retry(db_path, read_only)
            try:
                yield con
            finally:
                con.close()

        return cls(connect, read_only=read_only)

    def init(self) -> None:
        with self._connect() as con:
            ensure_schema(con)

    def replace_slice(self, table: str, where: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> int:
        """Delete the rows matching ``where`` and insert ``rows``, in one transaction.

        Every row must match ``where`` (it is the slice it replaces); this keeps a partition
        write from touching rows another category or profile produced.
        """
        columns = _check_table(table)
        for key in where:
            if key not in columns:
                raise KeyError(f"slice key {key!r} is not a column of {table!r}")
        for i, row in enumerate(rows):
            for key, value in where.items():
                if row.get(key) != value:
                    raise ValueError(
                        f"row {i} for {table!r} has {key}={row.get(key)!r}, outside the slice {dict(where)}"
                    )
        frame = _frame(table, rows)
        clause = " AND ".join(f"{key} = ?" for key in where) or "TRUE"
        with self._connect() as con:
            ensure_schema(con)
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(f"DELETE FROM {table} WHERE {clause}", list(where.values()))
                if len(frame):
                    con.register("incoming_rows", frame.to_arrow())
                    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming_rows")
                    con.unregister("incoming_rows")
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
        return len(frame)

    def append(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        frame = _frame(table, rows)
        if not len(frame):
            return
        with self._connect() as con:
            ensure_schema(con)
            con.register("incoming_rows", frame.to_arrow())
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming_rows")
            con.unregister("incoming_rows")

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pl.DataFrame:
        with self._connect() as con:
            if not self.read_only:
                ensure_schema(con)
            return con.sql(sql, params=params or []).pl()

    def rows(self, table: str, where: Mapping[str, Any], order_by: str | None = None) -> list[dict[str, Any]]:
        """Rows of ``table`` matching equality filters, as dicts."""
        columns = _check_table(table)
        for key in where:
            if key not in columns:
                raise KeyError(f"filter key {key!r} is not a column of {table!r}")
        if order_by is not None and order_by not in columns:
            raise KeyError(f"order key {order_by!r} is not a column of {table!r}")
        clause = " AND ".join(f"{key} = ?" for key in where) or "TRUE"
        order = f" ORDER BY {order_by}" if order_by else ""
        return self.query(f"SELECT * FROM {table} WHERE {clause}{order}", list(where.values())).to_dicts()


def _connect_with_retry(path: Path, read_only: bool, attempts: int = 20) -> duckdb.DuckDBPyConnection:
    # Another process (the UI, a parallel run) may hold the file for a moment; wait rather than fail.
    delay = 0.1
    for attempt in range(attempts):
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or attempt == attempts - 1:
                raise duckdb.IOException(
                    f"{path}: could not open the database ({exc}). Another process holds it; "
                    "wait for it to finish or stop it."
                ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------
# Content-addressed image files


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def png_bytes(image: Image.Image) -> bytes:
    """Deterministic PNG encoding: no metadata, fixed compression."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


class ImageStore:
    """Image files under ``root/images``, named by the sha256 of their bytes.

    Files are written to a temporary name and renamed, so a crash never leaves a half file under
    a real name, and rows are committed only after their files exist.
    """

    def __init__(self, data_root: str | os.PathLike[str]):
        self.root = Path(data_root).resolve()

    def relpath(self, sha: str, suffix: str, folder: str = "images") -> str:
        return f"{folder}/{sha[:2]}/{sha}{suffix}"

    def put_bytes(self, data: bytes, suffix: str, folder: str = "images") -> tuple[str, str]:
        """Store bytes under ``folder`` by their hash; returns (sha256, path relative to the root)."""
        sha = sha256_bytes(data)
        rel = self.relpath(sha, suffix, folder)
        dest = self.root / rel
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-", suffix=suffix)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, dest)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
        return sha, rel

    def put_image(self, image: Image.Image) -> tuple[str, str]:
        return self.put_bytes(png_bytes(image), ".png")

    def path(self, rel: str) -> Path:
        """Absolute path of a stored file. Refuses paths that leave the data root."""
        full = (self.root / rel).resolve()
        if not full.is_relative_to(self.root):
            raise ValueError(f"stored path {rel!r} escapes the data root {self.root}")
        return full

    def exists(self, rel: str | None) -> bool:
        return bool(rel) and self.path(rel).is_file()

    def open(self, rel: str) -> Image.Image:
        with Image.open(self.path(rel)) as im:
            # Honour the camera's orientation tag so people and models see the picture upright.
            return ImageOps.exif_transpose(im).convert("RGB")


def schema_markdown() -> str:
    """The table reference in the README, generated from SCHEMA (a test keeps them in step)."""
    parts = []
    for table, columns in SCHEMA.items():
        parts.append(f"#### `{table}`\n\n| column | type | meaning |\n|---|---|---|")
        parts += [f"| `{name}` | {sql_type} | {meaning} |" for name, sql_type, meaning in columns]
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"
