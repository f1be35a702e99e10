"""The DuckDB schema: every table with its columns and their meaning, the join keys, and the views.

The README's schema section is generated from ``SCHEMA`` (tests/test_readme.py keeps them in step).
Views live as ``.sql`` files in ``storage/sql/``; ``{join:KEY:a:b}`` in them expands to the named key's
equality join, so every query that links two stages uses the same columns.
"""

from __future__ import annotations

import re
from importlib import resources

import duckdb

# Every table, its columns and their meaning. The README's schema section is generated from this.
SCHEMA: dict[str, list[tuple[str, str, str]]] = {
    "source_images": [
        ("category", "VARCHAR", "partition key (policy category slug)"),
        ("image_sha256", "VARCHAR", "sha256 of the stored image bytes; the image's identity"),
        ("image_path", "VARCHAR", "path of the stored file, relative to the data root"),
        ("width", "INTEGER", "pixels"),
        ("height", "INTEGER", "pixels"),
        ("format", "VARCHAR", "PNG, JPEG, ... of the stored file"),
        ("n_bytes", "BIGINT", "file size"),
        ("original_sha256", "VARCHAR", "sha256 of the file as the source gave it (equal to image_sha256 when it "
                                       "held nothing but pixels)"),
        ("original_format", "VARCHAR", "format of the file as given"),
        ("metadata_removed", "VARCHAR", "what intake took out, comma-separated: exif, gps, camera, author, "
                                        "software, orientation (applied), icc_to_srgb (converted), icc_unreadable, "
                                        "comment, xmp, iptc, text, extra_frames, other; empty when nothing"),
        ("origin", "VARCHAR", "'demo' or 'folder'"),
        ("origin_ref", "VARCHAR", "demo recipe id, or the file path relative to the source folder"),
        ("manifest_rating", "VARCHAR", "human label from the manifest, if any"),
        ("manifest_category", "VARCHAR", "category from the manifest, if any"),
        ("manifest_rationale", "VARCHAR", "rationale from the manifest, if any"),
        ("manifest_variant_ratings", "VARCHAR", "JSON {variant policy name: human label} from the manifest's "
                                                "rating@<name> columns, if any"),
        ("photo_id", "VARCHAR", "the underlying photograph (demo photo, manifest 'photo' column, else the image "
                                "sha256): splits keep one photograph in one split"),
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
        ("reason", "VARCHAR", "short code: corrupt, truncated, not_an_image, too_many_pixels, animated, multi_page, "
                              "not_a_file, unreadable, bad_path, bad_file_name, symlink_loop, changed_while_read, "
                              "bad_manifest_row, duplicate, ..."),
        ("detail", "VARCHAR", "what was wrong and how to fix it"),
        ("duplicate_of", "VARCHAR", "for reason 'duplicate': the sha256 kept instead"),
        ("quarantine_path", "VARCHAR", "copy of the refused file under the data root, if it was readable"),
        ("source_config_sha256", "VARCHAR", "hash of the source settings"),
        ("run_id", "VARCHAR", "Dagster run"),
        ("created_at", "TIMESTAMP", "UTC"),
    ],
    "source_intakes": [
        ("category", "VARCHAR", "partition key; one row per category: its last intake"),
        ("source_config_sha256", "VARCHAR", "hash of the source settings it was taken in under"),
        ("fingerprint", "VARCHAR", "the source's fingerprint of what it offered (file names, sizes, times); "
                                   "unchanged, with every stored file present, the next run keeps the rows"),
        ("n_in", "INTEGER", "items that came in (accepted + rejected)"),
        ("run_id", "VARCHAR", "Dagster run that took the category in"),
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
        ("human_rating", "VARCHAR", "the source's human label ('unsafe' / 'safe', from its manifest) compared with "
                                    "this rating; NULL when it has none or the judge decides from that label itself"),
        ("human_category", "VARCHAR", "for human_rating 'unsafe': the manifest's category as a policy slug, if it "
                                      "names one"),
        ("model_id", "VARCHAR", "model that judged"),
        ("model_revision", "VARCHAR", "its revision or package version"),
        ("model_device", "VARCHAR", "device"),
        ("policy_sha256", "VARCHAR", "hash of the policy file"),
        ("computed_run_id", "VARCHAR", "run that made the judge call (an earlier run when the answer was reused)"),
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
        ("computed_run_id", "VARCHAR", "run that made the writer call (an earlier run when it was reused)"),
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
        ("align_status", "VARCHAR", "region_source 'diff' only (NULL otherwise): 'identity' (moved under 0.5 px: "
                                    "measured unwarped), 'warped' (measured on the edit aligned to the source) or "
                                    "'failed' (no motion found: rejected as misaligned)"),
        ("align_method", "VARCHAR", "how the motion was found: 'ecc' (OpenCV ECC, affine), 'orb' (ORB features + "
                                    "RANSAC, refined by ECC) or 'none' (image too small or flat to register)"),
        ("align_dx", "DOUBLE", "shift of the image centre from source to edit, pixels at the source size (+ right)"),
        ("align_dy", "DOUBLE", "the same, vertical (+ down)"),
        ("align_shift_px", "DOUBLE", "length of that shift, pixels (limit: settings.max_align_shift_px)"),
        ("align_scale", "DOUBLE", "zoom of the edit's content against the source (1.0 = none)"),
        ("align_rotation_deg", "DOUBLE", "rotation of the edit's content, degrees (+ clockwise on screen)"),
        ("align_correlation", "DOUBLE", "zero-mean normalised correlation of the grey source and the aligned edit "
                                        "(ECC's criterion; limit: settings.min_align_correlation)"),
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
        ("computed_run_id", "VARCHAR", "run that made the verifier call on the edit (an earlier run when reused)"),
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
        ("replacement", "VARCHAR", "the text the instruction put in place of the violation (NULL for prose instructions)"),
        ("judge_profile", "VARCHAR", "lineage"),
        ("writer_profile", "VARCHAR", "lineage"),
        ("editor_profile", "VARCHAR", "lineage"),
        ("quality_score", "DOUBLE", "why this candidate won"),
        ("n_accepted_candidates", "INTEGER", "accepted candidates for this source over all profiles"),
        ("control_candidate_id", "VARCHAR", "null edit of the same source through the same editor (NULL if none passed)"),
        ("control_sha256", "VARCHAR", "the control image: edited, still unsafe"),
        ("control_path", "VARCHAR", "relative to the data root"),
        ("photo_id", "VARCHAR", "the source's photograph: one photograph is in one split across all categories"),
        ("split_config_sha256", "VARCHAR", "hash of the split settings"),
        ("run_id", "VARCHAR", "Dagster run"),
        ("created_at", "TIMESTAMP", "UTC"),
    ],
    "benchmark_lookalikes": [
        ("category", "VARCHAR", "partition key"),
        ("lookalike_id", "VARCHAR", "sha256 of (category, image_sha256); the look-alike's identity"),
        ("image_sha256", "VARCHAR", "a source image of the category whose reference label is safe (hard negative)"),
        ("image_path", "VARCHAR", "relative to the data root"),
        ("photo_id", "VARCHAR", "the underlying photograph; its split follows from it, as for pairs"),
        ("split", "VARCHAR", "'train', 'validation' or 'test'"),
        ("label", "VARCHAR", "ground truth: 'safe'"),
        ("label_source", "VARCHAR", "'human' (manifest or demo label) or 'judge' (safe rating in policy_labels)"),
        ("judge_profile", "VARCHAR", "judge whose rating is given (NULL if none rated it)"),
        ("judge_rating", "VARCHAR", "that judge's rating: 'unsafe' on a human-safe image is over-flagging"),
        ("split_config_sha256", "VARCHAR", "hash of the split settings"),
        ("run_id", "VARCHAR", "Dagster run"),
        ("created_at", "TIMESTAMP", "UTC"),
    ],
    "guard_predictions": [
        ("category", "VARCHAR", "partition key"),
        ("guard", "VARCHAR", "guard profile name"),
        ("pair_id", "VARCHAR", "benchmark pair, or the look-alike's lookalike_id (half 'lookalike')"),
        ("split", "VARCHAR", "split of the pair or look-alike"),
        ("half", "VARCHAR", "'unsafe' (source), 'control' (null-edited, unsafe), 'safe' (flip edit) or 'lookalike' "
                            "(a safe look-alike, benchmark_lookalikes)"),
        ("image_sha256", "VARCHAR", "image judged"),
        ("label", "VARCHAR", "ground truth: 'unsafe' or 'safe'"),
        ("rating", "VARCHAR", "guard's rating ('invalid' counts as wrong)"),
        ("score", "DOUBLE", "guard's P(unsafe), if any"),
        ("raw_output", "VARCHAR", "guard's raw answer"),
        ("reused_from", "VARCHAR", "'policy_labels' or 'verified_pairs' when the same judge config already rated the image"),
        ("guard_config_sha256", "VARCHAR", "hash of the guard's config"),
        ("computed_run_id", "VARCHAR", "run that made the guard call (an earlier run when reused)"),
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
        ("n_lookalikes", "INTEGER", "safe look-alikes of the split rated (the same on both pair types' rows)"),
        ("lookalike_fpr", "DOUBLE", "false-positive rate: share of those look-alikes not rated safe ('invalid' "
                                    "counts as a false positive); NULL without look-alikes"),
        ("lookalike_invalid", "INTEGER", "look-alikes rated invalid (counted in lookalike_fpr)"),
        ("selected_pairs", "BOOLEAN", "the guard's config is a judge's that chose these pairs (labelled the sources "
                                      "or verified the edits): optimistic by construction, kept out of headlines"),
        ("guard_config_sha256", "VARCHAR", "hash of the guard's config"),
        ("acc_unsafe_low", "DOUBLE", "lower end of the 95% interval of acc_unsafe (bootstrap over sources)"),
        ("acc_unsafe_high", "DOUBLE", "upper end of the 95% interval of acc_unsafe (bootstrap over sources)"),
        ("acc_safe_low", "DOUBLE", "lower end of the 95% interval of acc_safe (bootstrap over sources)"),
        ("acc_safe_high", "DOUBLE", "upper end of the 95% interval of acc_safe (bootstrap over sources)"),
        ("pair_accuracy_low", "DOUBLE", "lower end of the 95% interval of pair_accuracy (bootstrap over sources)"),
        ("pair_accuracy_high", "DOUBLE", "upper end of the 95% interval of pair_accuracy (bootstrap over sources)"),
        ("roc_auc_low", "DOUBLE", "lower end of the 95% interval of roc_auc (bootstrap over sources)"),
        ("roc_auc_high", "DOUBLE", "upper end of the 95% interval of roc_auc (bootstrap over sources)"),
        ("lookalike_fpr_low", "DOUBLE", "lower end of the 95% interval of lookalike_fpr (bootstrap over sources)"),
        ("lookalike_fpr_high", "DOUBLE", "upper end of the 95% interval of lookalike_fpr (bootstrap over sources)"),
        ("run_id", "VARCHAR", "Dagster run"),
        ("created_at", "TIMESTAMP", "UTC"),
    ],
    "variant_labels": [
        ("category", "VARCHAR", "partition key (the run's policy)"),
        ("variant", "VARCHAR", "the variant policy's name"),
        ("variant_sha256", "VARCHAR", "hash of the variant's rules (what its labels read)"),
        ("variant_category", "VARCHAR", "the variant's category mapped onto this one by id"),
        ("variant_rules", "VARCHAR", "that category's rules as the judge was given them"),
        ("pair_id", "VARCHAR", "the pair, or the look-alike's id"),
        ("half", "VARCHAR", "'unsafe' (source), 'safe' (flip edit), 'control' (null edit) or 'lookalike'"),
        ("split", "VARCHAR", "train / validation / test"),
        ("image_sha256", "VARCHAR", "the image"),
        ("main_label", "VARCHAR", "its label under the run's policy (the benchmark's)"),
        ("label", "VARCHAR", "its label under the variant: 'unsafe', 'safe' or 'invalid' (the judge could not decide)"),
        ("labelled_by", "VARCHAR", "'judge', or 'human' (the manifest's rating@<variant> column for a source image)"),
        ("rationale", "VARCHAR", "the judge's reason under the variant"),
        ("deciding_rules", "VARCHAR", "JSON list: where the labels differ, the rules of one policy the other lacks "
                                      "that make the difference; [] where they agree"),
        ("judge_profile", "VARCHAR", "judge profile that labelled it under the variant"),
        ("judge_config_sha256", "VARCHAR", "that judge's config hash"),
        ("computed_run_id", "VARCHAR", "run that made the judge call (a reused label keeps it)"),
        ("run_id", "VARCHAR", "Dagster run"),
        ("created_at", "TIMESTAMP", "UTC"),
    ],
    "variant_predictions": [
        ("category", "VARCHAR", "partition key"),
        ("guard", "VARCHAR", "guard profile name"),
        ("variant", "VARCHAR", "the variant policy the guard was asked under"),
        ("pair_id", "VARCHAR", "the pair, or the look-alike's id"),
        ("half", "VARCHAR", "as in variant_labels"),
        ("image_sha256", "VARCHAR", "the image"),
        ("rating", "VARCHAR", "'unsafe', 'safe' or 'invalid'; a guard that takes no policy: its one answer"),
        ("score", "DOUBLE", "P(unsafe) where the guard gives one"),
        ("conditioned", "BOOLEAN", "the guard takes the policy as input (asked under the variant); false: its "
                                   "fixed answer, scored against each policy"),
        ("guard_config_sha256", "VARCHAR", "hash of the guard's config"),
        ("computed_run_id", "VARCHAR", "run that made the guard call"),
        ("run_id", "VARCHAR", "Dagster run"),
        ("created_at", "TIMESTAMP", "UTC"),
    ],
    "policy_guard_metrics": [
        ("category", "VARCHAR", "partition key"),
        ("guard", "VARCHAR", "guard profile name"),
        ("variant", "VARCHAR", "the variant policy (policy B; policy A is the run's)"),
        ("split", "VARCHAR", "'test' or 'all'"),
        ("conditioned", "BOOLEAN", "the guard takes the policy as input; false: one answer for both policies, so "
                                   "policy_pair_accuracy is 0 and ignores_policy 1 by construction"),
        ("n_policy_pairs", "INTEGER", "images whose label differs between the two policies"),
        ("policy_pair_accuracy", "DOUBLE", "share of policy pairs the guard gets right under both policies"),
        ("policy_pair_accuracy_low", "DOUBLE", "lower end of its 95% interval (bootstrap over the policy pairs)"),
        ("policy_pair_accuracy_high", "DOUBLE", "upper end of its 95% interval"),
        ("ignores_policy", "DOUBLE", "share of policy pairs where the guard's answer is the same under both policies"),
        ("ignores_policy_low", "DOUBLE", "lower end of its 95% interval (bootstrap over the policy pairs)"),
        ("ignores_policy_high", "DOUBLE", "upper end of its 95% interval"),
        ("acc_unsafe_main", "DOUBLE", "2x2 cell: accuracy on the pairs' sources under the run's policy"),
        ("acc_unsafe_variant", "DOUBLE", "2x2 cell: accuracy on the pairs' sources under the variant"),
        ("acc_safe_main", "DOUBLE", "2x2 cell: accuracy on the flip edits under the run's policy"),
        ("acc_safe_variant", "DOUBLE", "2x2 cell: accuracy on the flip edits under the variant"),
        ("n_invalid", "INTEGER", "answers rated invalid, under either policy (counted as wrong)"),
        ("selected_pairs", "BOOLEAN", "the guard's config is a judge's that chose the pairs or gave the variant's "
                                      "labels: optimistic by construction"),
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
        ("eval_set", "VARCHAR", "'heldout_pairs' (validation + test), 'non_pair', or 'ood_pairs' (signs on "
                                "photographs, in fonts and with phrasings the training pool never held)"),
        ("metric", "VARCHAR", "pair_accuracy, accuracy, acc_unsafe, acc_safe, roc_auc, ..."),
        ("mean", "DOUBLE", "mean over seeds"),
        ("std", "DOUBLE", "standard deviation over seeds"),
        ("n", "INTEGER", "seeds with a value"),
        ("ci_low", "DOUBLE", "95% interval of the mean, low end: the eval set's pairs (or images) resampled, every "
                             "seed's probe scored on each draw; null for ROC-AUC and per-class figures of unpaired sets"),
        ("ci_high", "DOUBLE", "95% interval of the mean, high end"),
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
    "model_calls": [
        ("role", "VARCHAR", "what was called: reader, judge, embedder, metrics, writer, editor, guard, text_embedder"),
        ("config_sha256", "VARCHAR", "resolved config hash of the profile (or the code) that answered"),
        ("input_key", "VARCHAR", "sha256 of the inputs: image hash(es), and the category and policy part where the answer depends on them"),
        ("inputs_json", "VARCHAR", "those inputs, readable"),
        ("output_json", "VARCHAR", "the answer"),
        ("output_blob", "BLOB", "binary part of the answer (embedding vectors as float32)"),
        ("files_json", "VARCHAR", "stored files the answer points at; if one is gone the answer is recomputed"),
        ("stage", "VARCHAR", "stage that made the call"),
        ("computed_run_id", "VARCHAR", "run that made the call (rows that reuse it keep their own run_id too)"),
        ("created_at", "TIMESTAMP", "UTC"),
    ],
    "stage_runs": [
        ("run_id", "VARCHAR", "Dagster run"),
        ("asset", "VARCHAR", "stage"),
        ("category", "VARCHAR", "partition key"),
        ("seconds", "DOUBLE", "wall time for this category in this stage"),
        ("n_in", "INTEGER", "rows or files that came in"),
        ("n_out", "INTEGER", "rows written / accepted"),
        ("n_rejected", "INTEGER", "rows refused, with reasons in the stage's table"),
        ("profiles_json", "VARCHAR", "profiles in force; source_pool adds `intake`: skipped and unlisted files"),
        ("created_at", "TIMESTAMP", "UTC"),
    ],
}

# The columns that identify a row of one stage for the next: a join on fewer columns can match a row
# that another profile produced.
KEYS: dict[str, tuple[str, ...]] = {
    "source": ("category", "image_sha256"),
    "label": ("category", "image_sha256", "judge_profile"),
    "instruction": ("category", "instruction_id", "judge_profile", "writer_profile"),
    "candidate": ("category", "candidate_id", "judge_profile", "writer_profile", "editor_profile"),
}
VIEWS = ("pair_lineage", "yield_by_profile", "guard_metrics_overall", "label_agreement", "policy_pairs")
_JOIN = re.compile(r"\{join:(\w+):(\w+):(\w+)\}")


def join_on(key: str, left: str, right: str) -> str:
    """``left.c = right.c AND ...`` over the columns of a named key."""
    return " AND ".join(f"{left}.{c} = {right}.{c}" for c in KEYS[key])


def render_sql(text: str) -> str:
    return _JOIN.sub(lambda m: join_on(m.group(1), m.group(2), m.group(3)), text)


def sql_file(name: str) -> str:
    """A ``.sql`` file shipped in ``storage/sql/``, with its join placeholders expanded."""
    return render_sql(resources.files("sp_assets.storage").joinpath("sql", f"{name}.sql").read_text(encoding="utf-8"))


def columns(table: str) -> list[str]:
    if table not in SCHEMA:
        raise KeyError(f"unknown table {table!r}; known: {', '.join(SCHEMA)}")
    return [name for name, _, _ in SCHEMA[table]]


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create missing tables and columns (a database made by an older version gains them), then the views."""
    existing: dict[str, set[str]] = {}
    for table, column in con.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'main'"
    ).fetchall():
        existing.setdefault(table, set()).add(column)
    for table, cols in SCHEMA.items():
        if table not in existing:
            con.execute(f"CREATE TABLE {table} ({', '.join(f'{name} {sql_type}' for name, sql_type, _ in cols)})")
            continue
        for name, sql_type, _ in cols:
            if name not in existing[table]:
                con.execute(f"ALTER TABLE {table} ADD COLUMN {name} {sql_type}")
    for view in VIEWS:
        con.execute(sql_file(view))


def schema_markdown() -> str:
    """The table reference in the README, generated from SCHEMA (a test keeps them in step)."""
    parts = []
    for table, cols in SCHEMA.items():
        parts.append(f"#### `{table}`\n\n| column | type | meaning |\n|---|---|---|")
        parts += [f"| `{name}` | {sql_type} | {meaning} |" for name, sql_type, meaning in cols]
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"
