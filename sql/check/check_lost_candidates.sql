-- check_lost_candidates: manifest revisions in storage that the repository's ImageStream
-- does not have (or whose ImageStream is missing): what `check --recover` may restore as
-- tag lost-found-<hex>. Only repositories whose names can belong to an ImageStream, limited
-- to --namespace when given. The manifests themselves are read and verified afterwards.
-- One row per manifest link its ImageStream lacks (repository, digest).
-- Columns: repository VARCHAR, namespace VARCHAR, name VARCHAR, digest VARCHAR,
--   modified TIMESTAMPTZ
-- Variables: namespace
SELECT
    manifest_links.repository,
    repositories.namespace,
    repositories.name,
    manifest_links.digest,
    manifest_links.modified
FROM manifest_links
JOIN repositories USING (repository)
LEFT JOIN stream_history AS history
    ON history.namespace = repositories.namespace
    AND history.name = repositories.name
    AND history.digest = manifest_links.digest
WHERE repositories.valid_name
    AND in_scope(repositories.namespace)
    AND history.digest IS NULL
ORDER BY manifest_links.repository, manifest_links.digest
