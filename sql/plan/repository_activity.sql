-- repository_activity: the newest modification time of anything inside each repository
-- (links, tags, tag index entries, unfinished uploads), the age a whole-repository
-- deletion is judged by.
-- One row per repository (repository).
-- Columns: repository VARCHAR, modified TIMESTAMPTZ
-- Variables: none
WITH repository_objects AS (
    SELECT repository, modified FROM layer_links
    UNION ALL
    SELECT repository, modified FROM manifest_links
    UNION ALL
    SELECT repository, modified FROM tags
    UNION ALL
    SELECT repository, modified FROM tag_index
    UNION ALL
    SELECT repository, modified FROM uploads
)

SELECT repositories.repository, newest(repository_objects.modified) AS modified
FROM repositories
LEFT JOIN repository_objects USING (repository)
GROUP BY repositories.repository
