-- warehouse_trend: stored and reclaimable blob bytes of every prune run in the warehouse,
-- oldest snapshot first, for the run report's trend chart. Reads the warehouse views
-- (every table over all runs, with snapshot_date and run), not a snapshot folder.
-- One row per published run with a plan (snapshot_date, run).
-- Columns: snapshot_date DATE, run VARCHAR, snapshot_started_at TIMESTAMPTZ, stored BIGINT,
--   reclaimable BIGINT
-- Variables: none
WITH reclaimable AS (
    SELECT snapshot_date, run, size AS reclaimable
    FROM plan_summary
    WHERE category = 'blobs' AND action = 'delete'
),

stored AS (
    SELECT snapshot_date, run, sum(size)::BIGINT AS stored
    FROM blobs
    SEMI JOIN reclaimable USING (snapshot_date, run)
    GROUP BY snapshot_date, run
)

SELECT
    runs.snapshot_date,
    runs.run,
    runs.metadata_started_at AS snapshot_started_at,
    coalesce(stored.stored, 0) AS stored,
    reclaimable.reclaimable
FROM reclaimable
JOIN runs USING (snapshot_date, run)
LEFT JOIN stored USING (snapshot_date, run)
ORDER BY snapshot_started_at, run
