-- Policy pairs: benchmark images whose label under a variant policy differs from their label under the
-- run's policy (both labels valid). With the image pairs this is the 2x2 of (source, flip edit) x
-- (run's policy, variant); sp_assets/core/policy_variants.py defines it.
CREATE OR REPLACE VIEW policy_pairs AS
SELECT category, variant, variant_sha256, variant_category, variant_rules, pair_id, half, split, image_sha256,
       main_label, label AS variant_label, deciding_rules, rationale, judge_profile, judge_config_sha256, run_id
FROM variant_labels
WHERE label IN ('unsafe', 'safe') AND main_label IN ('unsafe', 'safe') AND label <> main_label;
