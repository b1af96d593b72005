-- macros: definitions every query shares.
-- young(ts): modified after the grace-period cutoff (snapshot start minus
-- --keep-younger-than). An unknown time counts as young: what cannot be proven old is kept.
CREATE OR REPLACE TEMP MACRO young(ts) AS ts IS NULL OR ts > getvariable('young_after');

-- in_scope(ns): the --namespace limit of a check (all namespaces when none is set).
CREATE OR REPLACE TEMP MACRO in_scope(ns) AS
    getvariable('namespace') IS NULL OR ns = getvariable('namespace');
