-- view_coverage: whether the metadata is a view of the whole cluster or of a part of it,
-- judged by what storage holds. A hard prune deletes a repository whole when no ImageStream
-- has its name, and blobs no Image references: a view that lacks streams or Images that
-- exist deletes what is in use.
-- How a cluster deletes: an ImageStream goes alone (oc delete is) or with its project, and
-- its Images (cluster-scoped) stay until image pruning removes them. So a whole view has
-- some repositories that hold Images' manifests but have no stream, in a few namespaces.
-- A dump of some namespaces (oc get images,imagestreams -n NS) has every Image but the
-- streams of those namespaces only: every other namespace that holds Images has no stream.
-- A dump that lacks Images lacks the Images that the streams' tag histories name.
-- image_namespaces: namespaces with a repository (an OpenShift name) that links a manifest
--   that is an Image of the view;
-- stream_namespaces: namespaces with at least one ImageStream in the view;
-- unseen_namespaces: the image_namespaces without any ImageStream in the view (sorted);
-- unseen_repositories: their repositories that link an Image's manifest (what a partial view
--   would delete whole);
-- tagged_manifests: stored manifests (manifest links) that a stream's tag history names;
-- tagged_without_image: those that no Image of the view has.
-- problems: the reasons to take this view for a part of the cluster, empty when none:
--   'streams-missing': namespaces hold Images but have no ImageStream, and they are at least
--   as many as the namespaces that have streams (deleted projects whose Images are not
--   pruned yet are few next to the live ones; a dump of some namespaces lacks all others);
--   'images-missing': at least 2 and at least 5% of tagged_manifests have no Image (a whole
--   view lacks only Images deleted by hand while a tag still names them: a few).
-- One row per snapshot: exactly one row.
-- Columns: image_namespaces BIGINT, stream_namespaces BIGINT, unseen_namespaces VARCHAR[],
--   unseen_repositories BIGINT, tagged_manifests BIGINT, tagged_without_image BIGINT,
--   problems VARCHAR[]
-- Variables: none
WITH image_repositories AS (
    SELECT DISTINCT repositories.repository, repositories.namespace
    FROM manifest_links
    JOIN repositories USING (repository)
    SEMI JOIN images ON images.image = manifest_links.digest
    WHERE repositories.valid_name
),

stream_namespaces AS (
    SELECT DISTINCT namespace FROM imagestreams
),

unseen AS (
    SELECT image_repositories.*
    FROM image_repositories
    ANTI JOIN stream_namespaces USING (namespace)
),

tagged AS (
    SELECT DISTINCT tags.image AS digest
    FROM imagestream_tags AS tags
    SEMI JOIN manifest_links ON manifest_links.digest = tags.image
),

counts AS (
    SELECT
        (SELECT count(DISTINCT namespace) FROM image_repositories) AS image_namespaces,
        (SELECT count(*) FROM stream_namespaces) AS stream_namespaces,
        coalesce(
            (SELECT list(DISTINCT namespace ORDER BY namespace) FROM unseen), []
        ) AS unseen_namespaces,
        (SELECT count(*) FROM unseen) AS unseen_repositories,
        (SELECT count(*) FROM tagged) AS tagged_manifests,
        (
            SELECT count(*) FROM tagged
            ANTI JOIN images ON images.image = tagged.digest
        ) AS tagged_without_image
)

SELECT
    image_namespaces,
    stream_namespaces,
    unseen_namespaces::VARCHAR[] AS unseen_namespaces,
    unseen_repositories,
    tagged_manifests,
    tagged_without_image,
    list_filter(
        [
            CASE
                WHEN len(unseen_namespaces) > 0 AND len(unseen_namespaces) >= stream_namespaces
                    THEN 'streams-missing'
            END,
            CASE
                WHEN tagged_without_image >= 2 AND tagged_without_image * 20 >= tagged_manifests
                    THEN 'images-missing'
            END
        ],
        lambda problem: problem IS NOT NULL  -- noqa: CP01
    ) AS problems
FROM counts
