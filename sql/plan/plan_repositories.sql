-- plan_repositories: repositories a hard prune removes whole.
-- reason 'imagestream-missing': no ImageStream <namespace>/<name> exists;
-- reason 'invalid-name': the name cannot belong to an ImageStream (not exactly
-- <namespace>/<name> with valid OpenShift names: the reference's "old bug" repositories).
-- action 'keep' (kept_because 'young') when anything inside is younger than the grace period.
-- One row per repository the plan judges (repository).
-- Columns: repository VARCHAR, namespace VARCHAR, name VARCHAR, reason VARCHAR,
--   modified TIMESTAMPTZ, action VARCHAR, kept_because VARCHAR
-- Variables: young_after
WITH candidates AS (
    SELECT
        repositories.repository,
        repositories.namespace,
        repositories.name,
        CASE
            WHEN NOT repositories.valid_name THEN 'invalid-name'
            ELSE 'imagestream-missing'
        END AS reason
    FROM repositories
    LEFT JOIN imagestreams
        ON imagestreams.namespace = repositories.namespace
        AND imagestreams.name = repositories.name
    WHERE NOT repositories.valid_name OR imagestreams.name IS NULL
),

aged AS (
    SELECT candidates.*, activity.modified, young(activity.modified) AS is_young
    FROM candidates
    JOIN repository_activity AS activity USING (repository)
)

SELECT repository, namespace, name, reason, modified, unnest(decide(is_young))
FROM aged
ORDER BY repository
