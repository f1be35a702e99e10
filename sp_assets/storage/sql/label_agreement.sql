-- Human labels against each model judge, per category: the confusion counts (human unsafe / safe x
-- judge unsafe / safe / invalid), agreement, Cohen's kappa and the category match. The same figures
-- as the policy_labels materialization (sp_assets/core/agreement.py says how they are defined):
-- 'invalid' is a judge class no human uses, so it never agrees; kappa is NULL when chance agreement is 1.
-- Only slices with human labels to compare appear (the manifest judge's own rows carry none).
CREATE OR REPLACE VIEW label_agreement AS
WITH counts AS (
    SELECT category, judge_profile, any_value(judge_config_sha256) AS judge_config_sha256,
           any_value(model_id) AS judge_model,
           count(*) FILTER (WHERE human_rating = 'unsafe' AND rating = 'unsafe') AS human_unsafe_judge_unsafe,
           count(*) FILTER (WHERE human_rating = 'unsafe' AND rating = 'safe') AS human_unsafe_judge_safe,
           count(*) FILTER (WHERE human_rating = 'unsafe' AND rating = 'invalid') AS human_unsafe_judge_invalid,
           count(*) FILTER (WHERE human_rating = 'safe' AND rating = 'unsafe') AS human_safe_judge_unsafe,
           count(*) FILTER (WHERE human_rating = 'safe' AND rating = 'safe') AS human_safe_judge_safe,
           count(*) FILTER (WHERE human_rating = 'safe' AND rating = 'invalid') AS human_safe_judge_invalid,
           count(*) FILTER (WHERE human_rating IS NULL) AS unrated,
           count(*) FILTER (WHERE human_rating = 'unsafe' AND rating = 'unsafe' AND human_category IS NOT NULL)
               AS category_compared,
           count(*) FILTER (WHERE human_rating = 'unsafe' AND rating = 'unsafe' AND judged_category = human_category)
               AS category_matched
    FROM policy_labels
    GROUP BY category, judge_profile
    HAVING count(human_rating) > 0
), margins AS (
    SELECT *,
           human_unsafe_judge_unsafe + human_unsafe_judge_safe + human_unsafe_judge_invalid
               + human_safe_judge_unsafe + human_safe_judge_safe + human_safe_judge_invalid AS rated,
           human_unsafe_judge_unsafe + human_safe_judge_safe AS agreed,
           -- chance agreement x rated^2: human unsafe x judge unsafe + human safe x judge safe
           (human_unsafe_judge_unsafe + human_unsafe_judge_safe + human_unsafe_judge_invalid)
               * (human_unsafe_judge_unsafe + human_safe_judge_unsafe)
           + (human_safe_judge_unsafe + human_safe_judge_safe + human_safe_judge_invalid)
               * (human_unsafe_judge_safe + human_safe_judge_safe) AS chance
    FROM counts
)
SELECT category, judge_profile, judge_config_sha256, judge_model, rated, unrated,
       human_unsafe_judge_unsafe, human_unsafe_judge_safe, human_unsafe_judge_invalid,
       human_safe_judge_unsafe, human_safe_judge_safe, human_safe_judge_invalid,
       agreed / rated AS agreement,
       CASE WHEN rated * rated <> chance THEN (rated * agreed - chance) / (rated * rated - chance) END AS kappa,
       category_compared, category_matched,
       CASE WHEN category_compared > 0 THEN category_matched / category_compared END AS category_match
FROM margins
