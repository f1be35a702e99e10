-- Every guard over all categories: accuracies pooled over pairs (the per-category rows weighted by
-- their pair counts), the look-alike false-positive rate pooled over look-alikes. ROC-AUC does not pool
-- this way; the run's ROC figure pools the scores instead. selected_pairs: the guard's config chose the
-- pairs in some category (optimistic by construction).
CREATE OR REPLACE VIEW guard_metrics_overall AS
SELECT guard, split, pair_type, count(DISTINCT category) AS categories, sum(n_pairs) AS n_pairs,
       sum(acc_unsafe * n_pairs) / nullif(sum(n_pairs), 0) AS acc_unsafe,
       sum(acc_safe * n_pairs) / nullif(sum(n_pairs), 0) AS acc_safe,
       sum(pair_accuracy * n_pairs) / nullif(sum(n_pairs), 0) AS pair_accuracy,
       sum(n_invalid) AS n_invalid,
       coalesce(sum(n_lookalikes), 0) AS n_lookalikes,
       sum(lookalike_fpr * n_lookalikes) / nullif(sum(n_lookalikes), 0) AS lookalike_fpr,
       coalesce(sum(lookalike_invalid), 0) AS lookalike_invalid,
       coalesce(bool_or(selected_pairs), false) AS selected_pairs
FROM guard_metrics WHERE n_pairs > 0 OR n_lookalikes > 0
GROUP BY guard, split, pair_type
