-- execution_files: the files an executed plan removed, or a dry run would remove: those of
-- each action whose latest outcome (latest_actions) is 'done' or 'would-delete'.
-- One row per file.
-- Columns: file VARCHAR, action VARCHAR, status VARCHAR
-- Variables: none
SELECT unnest(files) AS file, action, status
FROM latest_actions
WHERE status IN ('done', 'would-delete')
ORDER BY file
