-- execution_files: the files an executed plan removed from the registry's tree, or a dry run
-- would: those of each action whose latest outcome (latest_actions) is quarantined or purged
-- (would-quarantine, would-purge in a dry run).
-- One row per file.
-- Columns: file VARCHAR, action VARCHAR, status VARCHAR
-- Variables: none
SELECT unnest(files) AS file, action, status
FROM latest_actions
WHERE status IN ('quarantined', 'purged', 'would-quarantine', 'would-purge')
ORDER BY file
