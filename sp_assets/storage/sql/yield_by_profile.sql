-- Attempts, acceptances and rejection reasons per category and profile set: the yield report.
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
