-- macros: definitions every query shares.
-- young(ts): modified after the grace-period cutoff (snapshot start minus
-- --keep-younger-than). An unknown time counts as young: what cannot be proven old is kept.
CREATE OR REPLACE TEMP MACRO young(ts) AS ts IS NULL OR ts > getvariable('young_after');

-- newest(ts): an aggregate's newest time, unknown (NULL, so young) when any time is unknown:
-- max() alone would skip an unreadable time and let an older one decide.
CREATE OR REPLACE TEMP MACRO newest(ts) AS
    CASE WHEN bool_or(ts IS NULL) THEN NULL ELSE max(ts) END;

-- decide(is_young): a plan's verdict on one candidate, the columns action and kept_because
-- (SELECT unnest(decide(...)) adds both): 'keep' because 'young' when it is young, else
-- 'delete'. Unknown (NULL) keeps: what cannot be proven old is kept. Every plan_* model
-- decides through it, so the rule and its words are one.
CREATE OR REPLACE TEMP MACRO decide(is_young) AS {
    'action': CASE WHEN is_young IS NOT false THEN 'keep' ELSE 'delete' END,
    'kept_because': CASE WHEN is_young IS NOT false THEN 'young' END
};

-- in_scope(ns): the --namespace limit of a check (all namespaces when none is set).
CREATE OR REPLACE TEMP MACRO in_scope(ns) AS
    getvariable('namespace') IS NULL OR ns = getvariable('namespace');

-- digest_hash(digest): a 64-bit hash of a digest, for anti joins of millions of digests: a
-- hash join on 8 bytes instead of a 71-character string takes a fraction of the time and
-- memory. Different hashes prove different digests, so a row an anti join on it returns is
-- truly absent from the other side; a collision can only make an absent digest look present,
-- which keeps an object. Never decide a deletion by a match on it.
CREATE OR REPLACE TEMP MACRO digest_hash(digest) AS hash(digest);
