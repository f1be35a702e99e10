-- Every guard over all categories: accuracies pooled over pairs (the per-category rows weighted by
-- their pair counts). ROC-AUC does not pool this way; the run's ROC figure pools the scores instead.
CREATE OR REPLACE VIEW guard_metrics_overall AS
SELECT guard, split, pair_type, count(DISTINCT category) AS categories, sum(n_pairs) AS n_pairs,
       sum(acc_unsafe * n_pairs) / nullif(sum(n_pairs), 0) AS acc_unsafe,
       sum(acc_safe * n_pairs) / nullif(sum(n_pairs), 0) AS acc_safe,
       sum(pair_accuracy * n_pairs) / nullif(sum(n_pairs), 0) AS pair_accuracy,
       sum(n_invalid) AS n_invalid
FROM guard_metrics WHERE n_pairs > 0
GROUP BY guard, split, pair_type
