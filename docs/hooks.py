"""MkDocs hooks: the repository's own Markdown files outside docs/ (ARCHITECTURE.md, the
prune-images rules beside their SQL, the bench's README and results) become pages under
``repo/``, and a page's relative link to one of them (``../sql/prune-images-rules.md``, the link
that works when reading the repository) is pointed at that page. A link to anything else outside
docs/ is left as it is, so ``mkdocs build --strict`` fails on it."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

REPO = Path(__file__).resolve().parents[1]
INCLUDED = (
    "ARCHITECTURE.md",
    "sql/prune-images-rules.md",
    "bench/README.md",
    "bench/RESULTS.md",
)
_LINK = re.compile(r"(\]\()([^)\s#]+\.md)(#[^)\s]*)?(\))")


def on_files(files: Files, config: Any) -> Files:
    for path in INCLUDED:
        files.append(File.generated(config, f"repo/{path}", abs_src_path=str(REPO / path)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    docs = Path(config["docs_dir"]).resolve()
    source = Path(page.file.src_uri)
    # where the page lives in the repository (an included page: its real folder)
    if source.parts[0] == "repo":
        here = REPO / Path(*source.parts[1:]).parent
    else:
        here = docs / source.parent
    site_here = docs / source.parent

    def point(match: re.Match[str]) -> str:
        target = (here / match.group(2)).resolve()
        try:
            inside = target.relative_to(REPO).as_posix()
        except ValueError:
            return match.group(0)
        if inside not in INCLUDED:
            return match.group(0)
        link = os.path.relpath(docs / "repo" / inside, site_here)
        return f"{match.group(1)}{link}{match.group(3) or ''}{match.group(4)}"

    return _LINK.sub(point, markdown)
