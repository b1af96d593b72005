-- keep_set: every digest that some Image references, one row per reference (a digest
-- several Images share repeats: read it with SEMI or ANTI JOIN, which need no DISTINCT over
-- millions of rows).
-- An Image keeps its own manifest, its config (schema 2 / OCI), every layer and, for a
-- manifest list, every child manifest; a child that is an Image of its own keeps its config
-- and layers through its own rows. All Images count, managed or not (as the reference).
-- One row per reference of an Image to a digest (a digest repeats).
-- Columns: digest VARCHAR
-- Variables: none
SELECT digest
FROM image_blobs
