"""Print regprune's requirements (with extras) from pyproject.toml, one a line, for pip -r.

Why: the image installs its dependencies in a layer of their own, built from pyproject.toml
alone, so a change to the source rebuilds only the small layer above it. Extras that name
regprune itself (``all = ["regprune[gcs,azure,swift,dask]"]``) are expanded.

    python3 deployments/requirements.py pyproject.toml all > requirements.txt
"""

from __future__ import annotations

import re
import sys
import tomllib


def requirements(project: dict, extras: list[str]) -> list[str]:
    """The project's dependencies plus those of ``extras``, self-references expanded."""
    name = project["name"]
    optional = project.get("optional-dependencies", {})
    found = list(project.get("dependencies", []))
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        if extra not in optional:
            raise SystemExit(f"{name} has no extra {extra!r}")
        seen.add(extra)
        for requirement in optional[extra]:
            itself = re.fullmatch(rf"{re.escape(name)}\[([^\]]+)\]", requirement.strip())
            if itself:
                pending.extend(part.strip() for part in itself.group(1).split(","))
            else:
                found.append(requirement)
    return list(dict.fromkeys(found))


if __name__ == "__main__":
    path, *wanted = sys.argv[1:] or ["pyproject.toml"]
    with open(path, "rb") as file:
        print("\n".join(requirements(tomllib.load(file)["project"], wanted)))
