-- plan_manifest_links: manifest revision links a hard prune removes, in repositories that
-- are not removed whole. A link is kept only if its digest is in the keep set AND the
-- repository's ImageStream has it (stream_history, which counts manifest-list children).
-- reason 'image-missing': no Image has this digest;
-- reason 'not-in-imagestream': an Image exists but the stream's tag history lacks it (the
-- children of a list the stream has count, also when they are known only from the list's
-- stored manifest, read because its Image names none: young_manifest_references).
-- action 'keep' (kept_because 'young') for links younger than the grace period.
-- One row per manifest link the plan judges (repository, digest).
-- Columns: repository VARCHAR, namespace VARCHAR, name VARCHAR, digest VARCHAR, reason VARCHAR,
--   modified TIMESTAMPTZ, action VARCHAR, kept_because VARCHAR
-- Variables: young_after
WITH links AS (
    SELECT manifest_links.*, repositories.namespace, repositories.name
    FROM manifest_links
    JOIN repositories USING (repository)
    ANTI JOIN plan_repositories USING (repository)
),

read_children AS (
    SELECT DISTINCT history.namespace, history.name, refs.reference AS digest
    FROM stream_history AS history
    JOIN young_manifest_references AS refs
        ON refs.digest = history.digest AND refs.kind = 'manifest'
),

known AS (
    SELECT DISTINCT digest
    FROM links
    SEMI JOIN keep_set USING (digest)
),

judged AS (
    SELECT
        links.*,
        CASE
            WHEN known.digest IS NULL THEN 'image-missing'
            WHEN history.digest IS NULL AND read.digest IS NULL THEN 'not-in-imagestream'
        END AS reason
    FROM links
    LEFT JOIN known USING (digest)
    LEFT JOIN stream_history AS history
        ON history.namespace = links.namespace
        AND history.name = links.name
        AND history.digest = links.digest
    LEFT JOIN read_children AS read
        ON read.namespace = links.namespace
        AND read.name = links.name
        AND read.digest = links.digest
)

SELECT
    repository, namespace, name, digest, reason, modified, unnest(decide(young(modified)))
FROM judged
WHERE reason IS NOT NULL
ORDER BY repository, digest
