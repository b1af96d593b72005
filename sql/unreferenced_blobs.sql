-- unreferenced_blobs: the blobs no Image references (not in keep_set), found by digest_hash
-- (exact for absence, see macros.sql): the candidates plan_blobs judges by age. Written once
-- as a table: plan_blobs and plan_namespaces read them and their links.
-- One row per blob no Image references (digest).
-- Columns: digest VARCHAR, size BIGINT, modified TIMESTAMPTZ
-- Variables: none
SELECT blobs.*
FROM blobs
ANTI JOIN keep_set ON digest_hash(blobs.digest) = digest_hash(keep_set.digest)
