-- prune_actions: the plan's deletions (plan_actions with verdict 'delete') in execution
-- order, minus what an earlier attempt of this run already did (completed_actions, for
-- --resume: an action whose latest outcome is quarantined, purged or gone; one restored
-- after its re-check, or only intended, is planned again).
-- tags: for a manifest link, the tags whose index lists the digest (their index entries go
-- with it, as distribution's vacuum does).
-- One row per action still to do (action, repository, digest, upload_id).
-- Columns: phase INTEGER, action VARCHAR, repository VARCHAR, digest VARCHAR, upload_id VARCHAR,
--   size BIGINT, shard VARCHAR, tags VARCHAR[]
-- Variables: none
WITH manifest_tags AS (
    SELECT repository, digest, list(DISTINCT tag ORDER BY tag) AS tags
    FROM tag_index
    GROUP BY repository, digest
),

planned AS (
    SELECT
        planned.phase, planned.action, planned.repository, planned.digest,
        planned.upload_id, planned.size, planned.shard, manifest_tags.tags
    FROM plan_actions AS planned
    LEFT JOIN manifest_tags
        ON planned.action = 'delete_manifest_link'
        AND manifest_tags.repository = planned.repository
        AND manifest_tags.digest = planned.digest
    WHERE planned.verdict = 'delete'
)

SELECT planned.*
FROM planned
ANTI JOIN (
    SELECT * FROM completed_actions
    QUALIFY row_number() OVER (
        PARTITION BY action, repository, digest, upload_id
        ORDER BY time DESC, status IN ('quarantining', 'restoring', 'purging')
    ) = 1
) AS done
    ON done.action = planned.action
    AND done.repository IS NOT DISTINCT FROM planned.repository
    AND done.digest IS NOT DISTINCT FROM planned.digest
    AND done.upload_id IS NOT DISTINCT FROM planned.upload_id
    AND done.status IN ('quarantined', 'purged', 'gone')
ORDER BY phase, shard, action, repository, digest, upload_id
