-- unreferenced_links: the layer and manifest links of unreferenced_blobs, a fraction of all
-- links: what those blobs' age (plan_blobs) and namespaces (plan_namespaces) are judged by.
-- Written once as a table.
-- Columns: repository, digest, modified
SELECT links.repository, links.digest, links.modified
FROM (
    SELECT repository, digest, modified FROM layer_links
    UNION ALL
    SELECT repository, digest, modified FROM manifest_links
) AS links
SEMI JOIN unreferenced_blobs USING (digest)
