"""Every relative link in the README, docs/ and bench/RESULTS.md resolves, anchors included.

Links are ``[text](target)`` (and images ``![alt](target)``) outside code; http(s) and mailto
links are skipped. A target must exist relative to the markdown file that holds it, and a
``#anchor`` must equal the GitHub-style slug of a heading in the target markdown file (the
file itself when the target is only ``#anchor``). Standard library only: this runs in a
fraction of a second.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README_MAX_LINES = 200

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
_LINK = re.compile(r"!?\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]*)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(?P<text>.*?)\s*#*\s*$")
_SKIP = ("http://", "https://", "mailto:")


def markdown_files() -> list[Path]:
    files = [REPO / "README.md", REPO / "bench" / "RESULTS.md"]
    files += sorted((REPO / "docs").rglob("*.md"))
    return [f for f in files if f.is_file()]


def prose_lines(text: str):
    """(line number, line) of every line outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def slugify(heading: str) -> str:
    """GitHub's anchor for a heading's text (before de-duplication)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link reads as its text
    text = re.sub(r"<[^>]+>", "", text)                          # inline HTML tags
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)                         # keep letters, digits, _, -, space
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading anchor of a markdown text; repeated slugs get -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    result: set[str] = set()
    for _, line in prose_lines(text):
        match = _HEADING.match(line)
        if not match:
            continue
        slug = slugify(match.group("text"))
        if slug in seen:
            seen[slug] += 1
            while f"{slug}-{seen[slug]}" in result:
                seen[slug] += 1
            result.add(f"{slug}-{seen[slug]}")
        else:
            seen[slug] = 0
            result.add(slug)
    return result


def links(text: str):
    """(line number, target) of every markdown link outside code."""
    for number, line in prose_lines(text):
        for match in _LINK.finditer(_INLINE_CODE.sub("code", line)):
            yield number, match.group("target")


def broken_links(path: Path) -> list[str]:
    """A line per link of the markdown file PATH that does not resolve."""
    problems = []
    text = path.read_text(encoding="utf-8")
    for number, target in links(text):
        if not target or target.lower().startswith(_SKIP):
            continue
        where = f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}:{number}: {target}"
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            problems.append(f"{where}: no such file {resolved}")
            continue
        if anchor:
            if resolved.is_dir() or resolved.suffix.lower() != ".md":
                problems.append(f"{where}: an anchor into a file that is not markdown")
            elif anchor not in anchors(resolved.read_text(encoding="utf-8")):
                problems.append(f"{where}: no heading with the anchor #{anchor} in {resolved.name}")
    return problems


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_links_resolve(path):
    assert broken_links(path) == []


def test_readme_is_an_overview():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("Known limits", "known-limits"),
        ("`lmlab prepare`: corpora to token shards", "lmlab-prepare-corpora-to-token-shards"),
        ("The families (`--model`)", "the-families---model"),
        ("Hugging Face import and export (issue 6)", "hugging-face-import-and-export-issue-6"),
        ("Speed: 9.6–11× / 1.7–2.5×", "speed-9611--1725"),
        ("A [linked](x.md) heading_with_underscore", "a-linked-heading_with_underscore"),
        ("Chinese 中文 heading", "chinese-中文-heading"),
    ],
)
def test_slugify(heading, slug):
    assert slugify(heading) == slug


def test_duplicate_headings_get_suffixes():
    text = "# Notes\n\n## Notes\n\n```bash\n# Notes\n```\n\n## Notes\n\n## Other\n"
    assert anchors(text) == {"notes", "notes-1", "notes-2", "other"}


@pytest.mark.parametrize(
    ("link", "broken"),
    [
        ("[ok](other.md)", False),
        ("[ok](other.md#a-heading)", False),
        ("[ok](#local-heading)", False),
        ("[ok](sub/)", False),
        ("![image](sub/picture.png)", False),
        ("[web](https://example.com/missing.md)", False),
        ("[mail](mailto:someone@example.com)", False),
        ("`[in code](missing.md)`", False),
        ("[missing file](missing.md)", True),
        ("[missing anchor](other.md#no-such-heading)", True),
        ("[missing local anchor](#no-such-heading)", True),
        ("[anchor into a folder](sub/#x)", True),
        ("[a](other.md) and [b](gone.md)", True),
    ],
)
def test_a_broken_link_is_caught(tmp_path, link, broken):
    (tmp_path / "other.md").write_text("# Title\n\n## A heading\n\ntext\n", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "picture.png").write_bytes(b"")
    page = tmp_path / "page.md"
    page.write_text(f"# Local heading\n\nSee {link}.\n\n```\n[fenced](missing.md)\n```\n", encoding="utf-8")
    problems = broken_links(page)
    assert bool(problems) == broken, problems
