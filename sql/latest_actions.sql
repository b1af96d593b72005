-- latest_actions: the audit trail (actions) reduced to each action's latest outcome: a run
-- resumed, or a dry run before it, records an action more than once.
-- Columns: run_id, phase, action, repository, digest, upload_id, size, status, reason, time,
--          files
SELECT * FROM actions
QUALIFY row_number() OVER (
    PARTITION BY action, repository, digest, upload_id ORDER BY time DESC
) = 1
