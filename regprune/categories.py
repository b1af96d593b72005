"""What a plan deletes and what a check finds, by category: the one list the reports read.

A category names its model (``sql/<model>.sql``), the action that executes it (the
``action`` of ``prune_actions`` and the audit trail), the columns a report lists of each
object (a subset of the model's header columns), their order on the page and a label for
people. ``sql/plan/plan_summary.sql`` lists the plan's categories in SQL; a test holds it to this
list, and the listed columns to each model's header.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PlanCategory:
    """One kind of object a hard prune deletes."""

    name: str
    """Key in plan_summary, the JSON report and the summary (``blobs``, ...)."""
    model: str
    action: str
    """The action that deletes one object of the category (prune_actions, the audit trail)."""
    label: str
    columns: tuple[str, ...]
    """What the reports list of each deleted object."""
    order: str
    """The order of the page's list (SQL over the model's columns) and in words."""
    order_words: str
    frees_bytes: bool
    """Whether deleting frees bytes (plan_summary's size): blobs and uploads do."""

    @property
    def words(self) -> str:
        """The name as the summary prints it: ``manifest links``."""
        return self.name.replace("_", " ")


PLAN_CATEGORIES = (
    PlanCategory(
        "repositories",
        "plan_repositories",
        "delete_repository",
        "Repositories",
        ("repository", "reason"),
        "repository",
        "by name",
        frees_bytes=False,
    ),
    PlanCategory(
        "manifest_links",
        "plan_manifest_links",
        "delete_manifest_link",
        "Manifest links",
        ("repository", "digest", "reason"),
        "repository, digest",
        "by repository",
        frees_bytes=False,
    ),
    PlanCategory(
        "blobs",
        "plan_blobs",
        "delete_blob",
        "Blobs",
        ("digest", "size"),
        "size DESC, digest",
        "largest first",
        frees_bytes=True,
    ),
    PlanCategory(
        "layer_links",
        "plan_layer_links",
        "delete_layer_link",
        "Layer links",
        ("repository", "digest", "reason"),
        "repository, digest",
        "by repository",
        frees_bytes=False,
    ),
    PlanCategory(
        "uploads",
        "plan_uploads",
        "delete_upload",
        "Uploads",
        ("repository", "upload_id", "size"),
        "size DESC, repository, upload_id",
        "largest first",
        frees_bytes=True,
    ),
)
"""In the order the summary prints them (the reference's order of deletion)."""

PLAN_CATEGORY = {category.name: category for category in PLAN_CATEGORIES}
ACTION_CATEGORY = {category.action: category for category in PLAN_CATEGORIES}


@dataclass(frozen=True)
class CheckFinding:
    """One kind of inconsistency a check reports."""

    key: str
    """Key in the check's JSON report (``broken_images``, ...)."""
    model: str
    label: str
    columns: tuple[str, ...]
    """What the JSON report lists of each finding."""
    order: str


CHECK_FINDINGS = (
    CheckFinding(
        "broken_imagestream_tags",
        "check_broken_imagestream_tags",
        "broken imagestream tags",
        ("namespace", "name", "tag", "position", "image", "missing", "kind"),
        "namespace, name, tag, position, missing",
    ),
    CheckFinding(
        "broken_images",
        "check_broken_images",
        "broken images",
        ("image", "missing", "kind"),
        "image, missing",
    ),
    CheckFinding(
        "lost_found",
        "check_lost_found",
        "lost-found candidates",
        ("namespace", "name", "digest", "tag"),
        "namespace, name, digest",
    ),
    CheckFinding(
        "invalid_manifests",
        "check_invalid_manifests",
        "invalid manifests",
        ("repository", "digest", "reason"),
        "repository, digest, reason",
    ),
)
"""In the order the check's report and page list them."""
