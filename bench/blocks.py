"""Generated blocks of the markdown files: what stands between `<!-- NAME:start -->` and
`<!-- NAME:end -->` in the README or bench/PERFORMANCE.md is written by one bench script."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def replace_block(path: Path, name: str, body: str, indent: str = "") -> None:
    """Puts `body` between `path`'s `name` markers (its lines indented by `indent`, for a block
    inside a list item); refuses when the markers are not there."""
    start, end = markers(name)
    pattern = re.compile(f"{re.escape(start)}.*?{re.escape(end)}", flags=re.S)
    block = f"{start}\n{textwrap.indent(body, indent)}\n{indent}{end}"
    text, count = pattern.subn(lambda _: block, path.read_text(), count=1)
    if count != 1:
        raise SystemExit(f"{path} has no {start} ... {end} block for this script to fill")
    path.write_text(text)
