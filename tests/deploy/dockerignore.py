"""A .dockerignore matcher with Docker's rules, and the build context a COPY line sees.

Docker (moby/patternmatcher): patterns are cleaned paths relative to the context root; `*`
and `?` stay within one path segment, `**` spans any number of them; a pattern excludes a
path when it matches the path or any of its parent directories; `!` re-includes; the last
matching pattern wins.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Rule:
    """One .dockerignore line: its regex and whether it re-includes (`!`)."""

    pattern: str
    regex: re.Pattern[str]
    include: bool


def parse(text: str) -> list[Rule]:
    """The rules of a .dockerignore file, in order."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = posixpath.normpath(line.removeprefix("!").strip()).lstrip("/")
        rules.append(Rule(pattern, _regex(pattern), include))
    return rules


def _regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def excluded(rules: list[Rule], path: str) -> bool:
    """True when the context leaves out `path` (relative, `/`-separated)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for rule in rules:
        if any(rule.regex.match(prefix) for prefix in prefixes):
            result = not rule.include
    return result


def context_files(root: Path, source: str, rules: list[Rule]) -> list[str]:
    """Paths (relative to `root`) under `source` that the build context would carry."""
    start = root / source
    if start.is_symlink() or start.is_file():
        candidates = [source]
    else:
        candidates = []
        for directory, dirs, files in os.walk(start):
            rel = Path(directory).relative_to(root).as_posix()
            # Symlinks to directories are entries, copied as links (as COPY does).
            links = [d for d in dirs if (Path(directory) / d).is_symlink()]
            candidates += [f"{rel}/{name}" for name in files + links]
    return sorted(p for p in candidates if not excluded(rules, p))


def copy_into(root: Path, source: str, dest: Path, rules: list[Rule]) -> list[str]:
    """Do `COPY <source> <dest>` from the context at `root`; return what was copied."""
    copied = context_files(root, source, rules)
    base = root / source
    for rel in copied:
        src = root / rel
        target = dest / src.name if base.is_file() else dest / src.relative_to(base)
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            target.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, target)
    return copied
