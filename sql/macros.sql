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

-- Media types, spelled here for SQL and in regprune/mediatypes.py for Python only
-- (tests/test_mediatypes.py holds the two alike and finds any spelled elsewhere).
-- is_list_media_type(mt): a Docker manifest list or an OCI index (children; no config, no
-- layers). NULL for an unknown media type, as IN gives.
CREATE OR REPLACE TEMP MACRO is_list_media_type(mt) AS mt IN (
    'application/vnd.docker.distribution.manifest.list.v2+json',
    'application/vnd.oci.image.index.v1+json'
);

-- is_schema1_media_type(mt): a schema 1 manifest, signed or not (layers; no config blob).
CREATE OR REPLACE TEMP MACRO is_schema1_media_type(mt) AS mt IN (
    'application/vnd.docker.distribution.manifest.v1+json',
    'application/vnd.docker.distribution.manifest.v1+prettyjws'
);

-- schema1_layer_media_type(): what the registry says a schema 1 layer is (schema 1 manifests
-- name no layer media type).
CREATE OR REPLACE TEMP MACRO schema1_layer_media_type() AS
    'application/vnd.docker.container.image.rootfs.diff+x-gtar';
