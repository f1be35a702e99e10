"""Storage: the DuckDB catalog (schema, connections, slice writes, named queries, views) and the image store.

All SQL text of the project lives in this package: ``schema`` (tables, keys, views from ``sql/``),
``store`` (connections and writes) and the named query modules.
"""

from sp_assets.storage.images import ImageStore, png_bytes
from sp_assets.storage.schema import KEYS, SCHEMA, join_on, schema_markdown
from sp_assets.storage.store import Store

__all__ = ["KEYS", "SCHEMA", "ImageStore", "Store", "join_on", "png_bytes", "schema_markdown"]
