-- unreferenced_links: the layer and manifest links of unreferenced_blobs, a fraction of all
-- links: what those blobs' age (plan_blobs) and namespaces (plan_namespaces) are judged by.
-- Written once as a table.
-- One row per link to an unreferenced blob (a layer link and a manifest link of one
--   repository and digest are two rows).
-- Columns: repository VARCHAR, digest VARCHAR, modified TIMESTAMPTZ
-- Variables: none
SELECT links.repository, links.digest, links.modified
FROM (
    SELECT repository, digest, modified FROM layer_links
    UNION ALL
    SELECT repository, digest, modified FROM manifest_links
) AS links
SEMI JOIN unreferenced_blobs USING (digest)
