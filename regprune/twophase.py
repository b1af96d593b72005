"""The two-phase delete's defaults, shared by the command line and the flows (the command
line does not import the flows: they import Prefect). docs/safety.md argues them.

``REGPRUNE_SETTLE`` and ``REGPRUNE_QUARANTINE_RETENTION`` in the environment replace them
(a deployment's choice; the test suite sets the settle time to 0s: its races are driven by
regprune/hooks.py, not by waiting)."""

from __future__ import annotations

import os

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
