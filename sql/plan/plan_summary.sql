-- plan_summary: what the plan deletes and keeps, per category: the reference's "Would delete
-- N blobs / Would free up X", plus what the grace period kept.
-- One row per (category, action), zero counts included.
-- Columns: category VARCHAR, action VARCHAR, count BIGINT, size BIGINT
-- Variables: none
WITH planned AS (
    SELECT 'blobs' AS category, action, size FROM plan_blobs
    UNION ALL
    SELECT 'manifest_links', action, 0 FROM plan_manifest_links
    UNION ALL
    SELECT 'repositories', action, 0 FROM plan_repositories
    UNION ALL
    SELECT 'layer_links', action, 0 FROM plan_layer_links
    UNION ALL
    SELECT 'uploads', action, size FROM plan_uploads
),

categories AS (
    SELECT * FROM (
        VALUES ('blobs'), ('manifest_links'), ('repositories'), ('layer_links'), ('uploads')
    ) AS c (category)
),

actions AS (
    SELECT * FROM (VALUES ('delete'), ('keep')) AS a (action)
)

SELECT
    categories.category,
    actions.action,
    count(planned.category) AS count,
    coalesce(sum(planned.size), 0)::BIGINT AS size
FROM categories
CROSS JOIN actions
LEFT JOIN planned USING (category, action)
GROUP BY ALL
ORDER BY categories.category, actions.action
