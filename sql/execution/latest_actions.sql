-- latest_actions: the audit trail (actions) reduced to each action's latest outcome: a run
-- records an intent before it moves (quarantining, restoring, purging), then the outcome, and
-- a resumed run, or a dry run before it, records an action more than once. On a tie in time
-- the outcome wins over the intent.
-- One row per action (action, repository, digest, upload_id): its latest outcome.
-- Columns: run_id VARCHAR, phase INTEGER, action VARCHAR, repository VARCHAR, digest VARCHAR,
--   upload_id VARCHAR, size BIGINT, status VARCHAR, reason VARCHAR, time TIMESTAMPTZ,
--   files VARCHAR[]
-- Variables: none
SELECT * FROM actions
QUALIFY row_number() OVER (
    PARTITION BY action, repository, digest, upload_id
    ORDER BY time DESC, status IN ('quarantining', 'restoring', 'purging')
) = 1
