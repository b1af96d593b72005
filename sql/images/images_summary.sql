-- images_summary: the plan of prune-images in numbers, one row (oc's summary counts plus
-- what is kept and why).
-- One row per plan: exactly one row; the *_kept_by_reason maps count kept items per reason.
-- Columns: revisions BIGINT, revisions_removed BIGINT, streams_updated BIGINT, images BIGINT,
--   images_deleted BIGINT, revisions_kept_by_reason MAP(VARCHAR, BIGINT),
--   images_kept_by_reason MAP(VARCHAR, BIGINT)
-- Variables: none
WITH revision_reasons AS (
    SELECT reason, count(*) AS n FROM images_tag_revisions WHERE action = 'keep' GROUP BY reason
),

image_reasons AS (
    SELECT reason, count(*) AS n FROM images_plan WHERE action = 'keep' GROUP BY reason
)

SELECT
    (SELECT count(*) FROM images_tag_revisions) AS revisions,
    (SELECT count(*) FROM images_tag_revisions WHERE action = 'remove') AS revisions_removed,
    (
        SELECT count(*) FROM (
            SELECT DISTINCT namespace, name FROM images_tag_revisions
            WHERE action = 'remove'
        ) AS updated
    ) AS streams_updated,
    (SELECT count(*) FROM images_plan) AS images,
    (SELECT count(*) FROM images_plan WHERE action = 'delete') AS images_deleted,
    (SELECT map_from_entries(list((reason, n))) FROM revision_reasons) AS revisions_kept_by_reason,
    (SELECT map_from_entries(list((reason, n))) FROM image_reasons) AS images_kept_by_reason
