-- macros: definitions every query shares.
-- young(ts): modified after the grace-period cutoff (snapshot start minus
-- --keep-younger-than). An unknown time counts as young: what cannot be proven old is kept.
CREATE OR REPLACE TEMP MACRO young(ts) AS ts IS NULL OR ts > getvariable('young_after');

-- newest(ts): an aggregate's newest time, unknown (NULL, so young) when any time is unknown:
-- max() alone would skip an unreadable time and let an older one decide.
CREATE OR REPLACE TEMP MACRO newest(ts) AS
    CASE WHEN bool_or(ts IS NULL) THEN NULL ELSE max(ts) END;

-- in_scope(ns): the --namespace limit of a check (all namespaces when none is set).
CREATE OR REPLACE TEMP MACRO in_scope(ns) AS
    getvariable('namespace') IS NULL OR ns = getvariable('namespace');
