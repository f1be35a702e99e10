-- A walk from every benchmark pair back to its source file and every decision on the way.
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
JOIN source_images s ON {join:source:s:b}
JOIN edited_images e ON {join:candidate:e:b}
JOIN edit_instructions i ON {join:instruction:i:e}
JOIN policy_labels l ON {join:label:l:b}
JOIN verified_pairs v ON {join:candidate:v:b}
