"""Named queries of the model-call memo (table ``model_calls``)."""

from __future__ import annotations

from typing import Any, Sequence

from sp_assets.storage.store import Store

KEY = ("role", "config_sha256", "input_key")


def lookup(store: Store, role: str, config_sha256: str, input_keys: Sequence[str]) -> list[dict[str, Any]]:
    """Stored answers of one role and config for these input keys."""
    if not input_keys:
        return []
    return store.query(
        "SELECT input_key, output_json, output_blob, files_json, stage, computed_run_id FROM model_calls "
        "WHERE role = ? AND config_sha256 = ? AND input_key IN (SELECT UNNEST(?))",
        [role, config_sha256, list(input_keys)]).to_dicts()


def save(store: Store, rows: Sequence[dict[str, Any]]) -> None:
    """Store answers (replacing any stored under the same key), in one transaction."""
    store.upsert("model_calls", KEY, rows)