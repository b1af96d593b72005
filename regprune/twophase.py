"""The two-phase delete's defaults, shared by the command line and the flows (the command
line does not import the flows: they import Prefect). docs/safety.md argues them.

``REGPRUNE_SETTLE`` and ``REGPRUNE_QUARANTINE_RETENTION`` in the environment replace them
(a deployment's choice; the test suite sets the settle time to 0s: its races are driven by
regprune/hooks.py, not by waiting)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SETTLE = "5m"
"""How long a confirmed run waits after its last move before the re-check: a push that
checked a blob just before it moved writes its layer link at once and its manifest after
its other layers; a later one is caught by the next run's re-check, before any purge."""
RETENTION = "12h"
"""How long a quarantine is kept before a confirmed run purges it (after its re-check): a
nightly run purges the night before's."""


def default_settle() -> str:
    return os.environ.get("REGPRUNE_SETTLE") or SETTLE


def default_retention() -> str:
    return os.environ.get("REGPRUNE_QUARANTINE_RETENTION") or RETENTION


QUARANTINE_FILE = "quarantine.json"
"""In a run folder: the run's quarantine id and storage, written before anything moves."""
_RECORD_FIELDS = {"id": str, "storage": str, "started_at": str, "dry_run": bool}


class QuarantineError(RuntimeError):
    """A quarantine cannot be undone or purged as asked; the message says why."""


def read_quarantine_record(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``quarantine.json`` of ``run_dir`` as regprune wrote it, or None when there is none.
    Anything else (damaged, edited) is refused before it names a quarantine to move or
    purge: an id that is not one (``../..``) or a storage URL with credentials in it (it
    would become a flow parameter) stops the run with one line."""
    from regprune.layout import is_quarantine_id
    from regprune.storage.config import url_holds_credentials

    path = Path(run_dir) / QUARANTINE_FILE
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # a folder, unreadable, not UTF-8, not JSON
        raise QuarantineError(f"cannot read {path}: {exc}") from exc
    problem = None
    if not isinstance(record, dict):
        problem = f"a JSON {type(record).__name__}, not an object"
    elif missing := [name for name in ("id", "storage", "started_at") if name not in record]:
        problem = f"no {', '.join(missing)}"
    elif unknown := sorted(set(record) - set(_RECORD_FIELDS)):
        problem = f"unknown fields {', '.join(map(repr, unknown))}"
    elif wrong := [n for n, v in record.items() if not isinstance(v, _RECORD_FIELDS[n])]:
        problem = f"{', '.join(wrong)} of the wrong type"
    elif not is_quarantine_id(record["id"]):
        problem = "its id is not a quarantine id"
    elif url_holds_credentials(record["storage"]):
        problem = "its storage URL holds a user or password"
    if problem:
        raise QuarantineError(
            f"{path} is not the record regprune wrote ({problem}); nothing was moved"
        )
    return record
