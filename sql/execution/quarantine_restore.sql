-- quarantine_restore: the quarantined keys that gained a reference, to move back: the plan's
-- own models, run again over the storage and metadata as they are now with the quarantine
-- laid back in (recheck_plan_actions; quarantined objects count as old), no longer delete
-- the action that removes the key. A push that reused an orphan blob (only a new link to
-- it), an Image or a stream that names it again, a manifest pushed since that references it:
-- each keeps the action, so its keys come back. A blob that comes back brings its layer
-- links along (they no longer dangle), a manifest link its tag index links (one action).
-- quarantined_keys: every key judged (of this run's quarantine and of older ones), with the
-- layout's reading of it; a key that fits no layout is moved back (nothing proves it garbage).
-- The action that removes a key: its blob's delete_blob; for a file in a repository its
-- repository's delete_repository, else its own link's, manifest's or upload's action.
-- One row per quarantined key to move back (quarantine, key).
-- Columns: quarantine VARCHAR, key VARCHAR, kind VARCHAR, repository VARCHAR, digest VARCHAR,
--   size BIGINT, reason VARCHAR
-- Variables: none
WITH deleting AS (
    SELECT action, repository, digest, upload_id
    FROM recheck_plan_actions
    WHERE verdict = 'delete'
),

judged AS (
    SELECT
        keys.*,
        CASE keys.kind
            WHEN 'blob' THEN 'delete_blob'
            WHEN 'layer_link' THEN 'delete_layer_link'
            WHEN 'manifest_link' THEN 'delete_manifest_link'
            WHEN 'tag_index' THEN 'delete_manifest_link'
            WHEN 'upload_startedat' THEN 'delete_upload'
            WHEN 'upload_file' THEN 'delete_upload'
        END AS own_action
    FROM quarantined_keys AS keys
),

still_garbage AS (
    SELECT judged.quarantine, judged.key
    FROM judged
    SEMI JOIN deleting
        ON deleting.action = judged.own_action
        AND deleting.repository IS NOT DISTINCT FROM judged.repository
        AND deleting.digest IS NOT DISTINCT FROM (
            CASE WHEN judged.own_action = 'delete_upload' THEN NULL ELSE judged.digest END
        )
        AND deleting.upload_id IS NOT DISTINCT FROM judged.upload_id
    UNION
    SELECT judged.quarantine, judged.key
    FROM judged
    SEMI JOIN deleting
        ON deleting.action = 'delete_repository'
        AND deleting.repository = judged.repository
),

kept AS (
    SELECT action, repository, digest, upload_id, kept_because
    FROM recheck_plan_actions
    WHERE verdict <> 'delete'
)

SELECT
    judged.quarantine,
    judged.key,
    judged.kind,
    judged.repository,
    judged.digest,
    judged.size,
    CASE
        WHEN judged.kind IS NULL THEN 'not a file the plan judges'
        WHEN kept.kept_because IS NOT NULL THEN 'kept when re-checked: ' || kept.kept_because
        ELSE 'no longer planned when re-checked: something refers to it again'
    END AS reason
FROM judged
ANTI JOIN still_garbage USING (quarantine, key)
LEFT JOIN kept
    ON kept.action = judged.own_action
    AND kept.repository IS NOT DISTINCT FROM judged.repository
    AND kept.digest IS NOT DISTINCT FROM (
        CASE WHEN judged.own_action = 'delete_upload' THEN NULL ELSE judged.digest END
    )
    AND kept.upload_id IS NOT DISTINCT FROM judged.upload_id
ORDER BY judged.quarantine, judged.key
