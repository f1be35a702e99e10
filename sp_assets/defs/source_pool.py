"""Stage 1, ``source_pool``: the images each category starts from (demo pool or the user's folder)."""


import json
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, MetadataValue, asset
from dagster_duckdb import DuckDBResource

from sp_assets.backends.sources.folder import (
    FORMAT_SUFFIX,
    Checked,
    check_file,
    iter_entries,
)
from sp_assets.core.policy import Category, Policy
from sp_assets.core.hashing import sha256_json
from sp_assets.defs.resources import PipelineSettings
from sp_assets.defs.stage import Stage, asset_kwargs, check, counts_add_up, no_duplicate_keys
from sp_assets.core.hashing import sha256_bytes
from sp_assets.storage import png_bytes

ASSET = "source_pool"
CHECKS = [
    check(ASSET, f"{ASSET}_counts_add_up", "Every file that came in is accepted or rejected with a reason."),
    check(ASSET, f"{ASSET}_has_unique_keys", "No image appears twice in a category."),
]


def demo_slug_for(category: Category, policy: Policy) -> str:
    """The demo pool speaks the default policy; map another policy's category to it by slug or id."""
    from sp_assets.backends.sources.demo import DEMO_PHRASES
    from sp_assets.core.policy import DEFAULT_POLICY_PATH, load_policy

    if category.slug in DEMO_PHRASES:
        return category.slug
    default = load_policy(DEFAULT_POLICY_PATH)
    try:
        return default.category(category.id).slug
    except KeyError:
        raise ValueError(
            f"{policy.path}: category {category.slug!r} (id {category.id}) has no demo images; the demo pool "
            f"covers {', '.join(DEMO_PHRASES)}. Use source 'folder' with your own images for this policy."
        ) from None


def _demo_rows(stage: Stage, category: Category) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    from sp_assets.backends.sources.demo import generate_demo_pool

    s = stage.settings
    source_sha = sha256_json(s.source_config())
    pool = generate_demo_pool(demo_slug_for(category, stage.policy), n_unsafe=s.demo_unsafe_per_category,
                              n_safe=s.demo_safe_per_category, seed=s.seed)
    accepted: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for item in pool:
        data = png_bytes(item.image)
        ref = f"demo:{category.slug}:{item.intended}:{item.recipe.get('index', len(accepted) + len(rejected))}"
        sha = sha256_bytes(data)
        if sha in seen:
            rejected.append({**stage.base_row(category.slug), "origin_ref": ref, "reason": "duplicate",
                             "detail": f"{ref}: same bytes as {seen[sha]}", "duplicate_of": sha,
                             "source_config_sha256": source_sha})
            continue
        sha, rel = stage.images.put_bytes(data, ".png")
        seen[sha] = ref
        accepted.append({
            **stage.base_row(category.slug), "image_sha256": sha, "image_path": rel,
            "width": item.image.width, "height": item.image.height, "format": "PNG", "n_bytes": len(data),
            "origin": "demo", "origin_ref": ref, "demo_intended": item.intended, "demo_text": item.text,
            "recipe_json": json.dumps(item.recipe, sort_keys=True), "policy_sha256": stage.policy.sha256,
            "source_config_sha256": source_sha,
        })
    return accepted, rejected, len(pool)


def _folder_rows(stage: Stage, category: Category) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    s = stage.settings
    if not s.source_dir:
        raise ValueError("source 'folder' needs source_dir (env SP_SOURCE_DIR): the folder that holds your images.")
    root = Path(s.source_dir).expanduser().resolve()
    if not root.is_dir():
        raise ValueError(f"source_dir {root} is not a folder; fix SP_SOURCE_DIR or the 'source_dir' setting.")
    manifest = Path(s.manifest).expanduser().resolve() if s.manifest else None
    source_sha = sha256_json(s.source_config())
    accepted: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    n_in = 0

    def reject(c: Checked, reason: str, detail: str, duplicate_of: str | None = None) -> None:
        quarantine = None
        if c.data is not None and reason != "duplicate":
            _, quarantine = stage.images.put_bytes(c.data, ".bin", folder="quarantine")
        rejected.append({**stage.base_row(category.slug), "origin_ref": c.entry.ref, "reason": reason,
                         "detail": detail, "duplicate_of": duplicate_of, "quarantine_path": quarantine,
                         "source_config_sha256": source_sha})

    for item in iter_entries(root, manifest, stage.policy):
        entry = item.entry if isinstance(item, Checked) else item
        if entry.categories is not None and category.slug not in entry.categories:
            continue
        n_in += 1
        checked = item if isinstance(item, Checked) else check_file(item, root, s.max_image_pixels, s.max_file_bytes)
        if not checked.ok:
            reject(checked, checked.reason, checked.detail)
            continue
        assert checked.data is not None
        sha = sha256_bytes(checked.data)
        if sha in seen:
            reject(checked, "duplicate", f"{entry.ref}: same bytes as {seen[sha]}; kept that one.", sha)
            continue
        sha, rel = stage.images.put_bytes(checked.data, FORMAT_SUFFIX.get(checked.format, ".img"))
        seen[sha] = entry.ref
        accepted.append({
            **stage.base_row(category.slug), "image_sha256": sha, "image_path": rel, "width": checked.width,
            "height": checked.height, "format": checked.format, "n_bytes": len(checked.data), "origin": "folder",
            "origin_ref": entry.ref, "manifest_rating": entry.rating, "manifest_category": entry.category,
            "manifest_rationale": entry.rationale, "policy_sha256": stage.policy.sha256,
            "source_config_sha256": source_sha,
        })
    return accepted, rejected, n_in


@asset(**asset_kwargs(
    "Source images per category, stored content-addressed. Unusable files are quarantined in "
    "source_rejections with a reason; in = accepted + rejected.", CHECKS))
def source_pool(context: AssetExecutionContext, settings: PipelineSettings, duckdb: DuckDBResource):
    stage = Stage(ASSET, context, settings, duckdb)
    if settings.source not in ("demo", "folder"):
        raise ValueError(f"settings.source is {settings.source!r}; use 'demo' or 'folder'.")
    reasons: dict[str, int] = {}
    for category in stage.categories():
        with stage.timed(category.slug):
            build = _demo_rows if settings.source == "demo" else _folder_rows
            accepted, rejected, n_in = build(stage, category)
            stage.store.replace_slice("source_images", {"category": category.slug}, accepted)
            stage.store.replace_slice("source_rejections", {"category": category.slug}, rejected)
        for r in rejected:
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
        stage.record(category.slug, n_in, len(accepted), len(rejected), {"source": settings.source}, accepted)
    checks = [counts_add_up(stage, "files"), no_duplicate_keys(stage, ["category", "image_sha256"])]
    return stage.result({"source": settings.source, "rejection_reasons": MetadataValue.json(reasons)}, checks)
