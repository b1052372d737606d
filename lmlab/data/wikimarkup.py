"""MediaWiki markup to plain paragraphs.

Holds :func:`wikitext_to_paragraphs`, which turns the ``<text>`` of one page
from a Wikipedia pages-articles dump into clean prose paragraphs, and
:func:`is_redirect_text`.

It follows the MediaWiki markup reference (https://www.mediawiki.org/wiki/
Help:Formatting, Help:Links, Help:Tables, Help:Images, Help:Magic_words) as
far as the visible text of a rendered page goes: templates, references,
tables, media, categories and interlanguage links vanish; link labels, inline
HTML content and headings stay. Parsing is done once with mwparserfromhell;
the tree is then rendered by our own walk (a stricter ``strip_code``), and a
last textual pass removes what the parser left unparsed (broken tables,
unbalanced brackets, stray tags).
"""

from __future__ import annotations

import logging
import re

import mwparserfromhell
from mwparserfromhell.nodes import (
    ExternalLink,
    Heading,
    HTMLEntity,
    Tag,
    Template,
    Text,
    Wikilink,
)

__all__ = ["wikitext_to_paragraphs", "is_redirect_text"]

log = logging.getLogger(__name__)

# Sections whose whole body is apparatus, not prose.
BOILERPLATE_SECTIONS = frozenset(
    {
        "references",
        "external links",
        "see also",
        "further reading",
        "notes",
        "bibliography",
        "sources",
        "citations",
        "footnotes",
    }
)

# Tags whose content is never prose (or is not text at all).
DROPPED_TAGS = frozenset(
    {
        "ref", "references", "gallery", "math", "chem", "ce", "timeline",
        "imagemap", "score", "syntaxhighlight", "source", "pre", "hiero",
        "graph", "mapframe", "maplink", "templatedata", "templatestyles",
        "inputbox", "categorytree", "includeonly", "table", "tr", "td", "th",
        "caption", "style", "script", "indicator", "charinsert",
    }
)

# Tags that start a block: their content becomes its own paragraph.
BLOCK_TAGS = frozenset(
    {"p", "div", "blockquote", "center", "poem", "dl", "ul", "ol", "li", "dt", "dd"}
)

# Wiki markup tags that start a list item or rule: a paragraph break.
BREAK_MARKUP = frozenset({"*", "#", ":", ";", "----"})

# Namespaces whose links are not text. English names plus the common local
# names, so a dump of another language wiki is handled the same way.
MEDIA_NAMESPACES = frozenset(
    {
        "file", "image", "media", "category",
        "datei", "bild", "kategorie",  # de
        "fichier", "catégorie",  # fr
        "archivo", "imagen", "categoría",  # es
        "ficheiro", "categoria", "immagine",  # pt / it
        "файл", "изображение", "категория",  # ru
        "ファイル", "画像", "カテゴリ",  # ja
        "文件", "档案", "檔案", "图像", "分类", "分類",  # zh
    }
)

# Language prefixes of interlanguage links: "de", "zh-yue", "be-tarask".
INTERLANGUAGE_RE = re.compile(r"[a-z]{2,3}(?:-[a-z]{2,8}){0,2}|simple")

# Templates whose value we know: the page name.
PAGENAME_TEMPLATES = frozenset({"pagename", "fullpagename", "basepagename", "subpagename"})

MAGIC_WORD_RE = re.compile(r"__[A-Z]++(?:_[A-Z]++)*+__")
QUOTE_MARKUP_RE = re.compile(r"'{2,}")
# Unparsed leftovers, matched without nesting; runs are bounded and
# possessive (Python 3.11) so no pattern can backtrack on garbage input.
LEFTOVER_TEMPLATE_RE = re.compile(r"\{\{[^{}]{0,20000}+\}\}")
LEFTOVER_LINK_RE = re.compile(r"\[\[([^\[\]|]{0,500}+)(?:\|([^\[\]]{0,2000}+))?\]\]")
LEFTOVER_EXTLINK_RE = re.compile(
    r"\[(?:[a-z][a-z0-9+.-]{0,20}+:)?//[^\s\[\]]{0,2000}+[ \t]*+([^\[\]\n]{0,500}+)\]", re.I
)
LEFTOVER_REF_RE = re.compile(
    r"<ref\b[^<>]{0,1000}+(?:(?<=/)>|>.*?(?:</ref\s*>|$))", re.I | re.M
)
LEFTOVER_COMMENT_RE = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
LEFTOVER_TAG_RE = re.compile(
    r"</?(?:ref|references|div|span|small|big|center|sup|sub|b|i|u|s|del|ins|"
    r"br|hr|p|font|abbr|code|tt|blockquote|poem|nowiki|table|tr|td|th|"
    r"caption|gallery|math|cite|q|var|kbd|mark|onlyinclude|noinclude|"
    r"includeonly|section|li|ul|ol|dl|dt|dd|em|strong)\b[^<>]{0,1000}+>",
    re.I,
)
STRAY_MARKUP_RE = re.compile(r"\{\{|\}\}|\[\[|\]\]|\{\||\|\}|<ref", re.I)
PARAGRAPH_BREAK_RE = re.compile(r"\n[ \t\r\f\v\xa0]*\n")
WHITESPACE_RE = re.compile(r"\s+")
# What a removed template leaves in parentheses: "(; born 1900)", "( )".
EMPTY_PARENS_RE = re.compile(r"\s?\([\s,;:]*+\)")
PAREN_LEAD_RE = re.compile(r"\([\s,;:]++")
REDIRECT_RE = re.compile(r"\s*#redirect", re.I)
# List bullets, for the text-only pass (the parser reads them otherwise).
LIST_MARKER_RE = re.compile(r"^[*#:;]++[ \t]*+", re.M)


def is_redirect_text(wikitext: str) -> bool:
    """True when the page text is a redirect (``#REDIRECT [[Target]]``)."""
    return REDIRECT_RE.match(wikitext) is not None


# mwparserfromhell rescans the rest of the page for every unclosed tag, comment or bracket, so its
# time grows as their number times the page's length (6,000 unclosed <ref> in 40 kB: 8 s; 24,000:
# minutes). Real pages have a handful (at most 9 in the shared enwiki sample); past this many a
# page gets the textual pass alone, as when the parser fails.
MAX_UNCLOSED = 256
_OPEN_TAG_RE = re.compile(r"<([a-zA-Z][a-zA-Z0-9]*)\b[^<>]*?(/?)>")
_CLOSE_TAG_RE = re.compile(r"</([a-zA-Z][a-zA-Z0-9]*)\s*>")
_VOID_TAGS = frozenset({"br", "hr", "wbr", "img", "references", "nowiki"})


def _unclosed(wikitext: str) -> int:
    """How many tags, comments and square brackets a page leaves open (a linear scan)."""
    depth: dict[str, int] = {}
    for name, self_closing in _OPEN_TAG_RE.findall(wikitext):
        if not self_closing and name.lower() not in _VOID_TAGS:
            depth[name.lower()] = depth.get(name.lower(), 0) + 1
    for name in _CLOSE_TAG_RE.findall(wikitext):
        depth[name.lower()] = depth.get(name.lower(), 0) - 1
    comments = wikitext.count("<!--") - wikitext.count("-->")
    return sum(max(d, 0) for d in depth.values()) + max(comments, 0) + abs(wikitext.count("[") - wikitext.count("]"))


def wikitext_to_paragraphs(wikitext: str, title: str | None = None) -> list[str]:
    """Reduce one page's wikitext to plain, non-empty paragraphs.

    ``title`` is the page title: it fills ``{{PAGENAME}}`` and names the
    page in the log when the parser gives up. Never raises on a ``str``;
    when parsing fails the text is cleaned by the textual pass alone.
    """
    if not isinstance(wikitext, str):
        raise TypeError(f"wikitext must be str, not {type(wikitext).__name__}")
    try:
        if _unclosed(wikitext) > MAX_UNCLOSED:
            raise ValueError(f"more than {MAX_UNCLOSED} unclosed tags, comments or brackets")
        text = _render_page(mwparserfromhell.parse(wikitext), title)
    except Exception as exc:  # a parser bug must not stop a whole dump
        log.debug("mwparserfromhell failed on %r (%s); using text pass only", title, exc)
        text = LIST_MARKER_RE.sub("\n\n", wikitext)
    return _paragraphs(_clean_leftovers(text))


# --- tree rendering -------------------------------------------------------


def _render_page(code, title: str | None) -> str:
    return _Renderer(title).render(code)


def _is_boilerplate(heading: str) -> bool:
    """'References', and joins of such names like 'Notes and references'."""
    parts = re.split(r"\s*(?:,|&|\band\b)\s*", WHITESPACE_RE.sub(" ", heading.lower()).strip())
    parts = [p for p in parts if p]
    return bool(parts) and all(p in BOILERPLATE_SECTIONS for p in parts)


class _Renderer:
    """Walks a parsed page and returns its visible text.

    Section state lives here, not in a top-level loop, because the parser
    can nest a heading inside a stray inline tag (an unclosed ``''`` before
    "==References==" swallows the rest of the page): every heading, at any
    depth, switches dropping on or off, and while dropping no leaf text is
    emitted.
    """

    def __init__(self, title: str | None):
        self.title = title
        self.skip_level = 0  # level of the boilerplate heading being dropped

    def render(self, code) -> str:
        if code is None:
            return ""
        return "".join(self.node(node) for node in code.nodes)

    def emit(self, text: str) -> str:
        return "" if self.skip_level else text

    def node(self, node) -> str:
        if isinstance(node, Text):
            return self.emit(node.value)
        if isinstance(node, Heading):
            return self.heading(node)
        if isinstance(node, Wikilink):
            return self.wikilink(node)
        if isinstance(node, ExternalLink):
            # A bracketed link shows its label (or a number, which is noise);
            # a bare URL in prose shows itself.
            return self.render(node.title) if node.brackets else self.emit(str(node.url))
        if isinstance(node, Tag):
            return self.tag(node)
        if isinstance(node, HTMLEntity):
            return self.emit(_entity(node))
        if isinstance(node, Template):
            name = str(node.name).strip().lower()
            return self.emit(self.title or "") if name in PAGENAME_TEMPLATES else ""
        return ""  # comments, {{{arguments}}}, and node types we do not know

    def heading(self, heading) -> str:
        if self.skip_level and heading.level > self.skip_level:
            return ""  # a subsection of a dropped section
        self.skip_level = 0
        text = self.render(heading.title).strip()
        if _is_boilerplate(text):
            self.skip_level = heading.level
            return ""
        return f"\n\n{text}\n\n"

    def wikilink(self, link) -> str:
        target = str(link.title).strip()
        kind = _link_kind(target)
        if kind == "media":
            return ""
        if kind == "interlanguage":
            # [[de:Foo]] is page metadata; [[:de:Foo|label]] is an inline link.
            inline = target.startswith(":") and link.text is not None
            return self.render(link.text) if inline else ""
        if link.text is not None:
            if str(link.text).strip():
                return self.render(link.text)
            return _pipe_trick(self.render(link.title))
        return self.render(link.title).lstrip(":")

    def tag(self, tag) -> str:
        if tag.wiki_markup in BREAK_MARKUP:
            return "\n\n"
        name = str(tag.tag).strip().lower()
        if name in DROPPED_TAGS:
            return ""
        if name == "br":
            return " "
        if name == "hr":
            return "\n\n"
        body = self.render(tag.contents)
        if name in BLOCK_TAGS:
            return f"\n\n{body}\n\n"
        return body  # inline formatting (<b>, ''…'', <span>, <sub>…)


def _entity(node) -> str:
    """The character of ``&amp;``, ``&#x2013;``…; nothing for a lone
    surrogate (``&#xD800;``), which no UTF-8 writer downstream accepts."""
    try:
        value = node.normalize()
    except ValueError:
        return ""
    return "" if any("\ud800" <= ch <= "\udfff" for ch in value) else value


def _link_kind(target: str) -> str:
    """'media' (File:, Category:…), 'interlanguage' (de:…) or '' for a page."""
    prefix, sep, _ = target.strip().lstrip(":").partition(":")
    if not sep:
        return ""
    if prefix.strip().replace("_", " ").lower() in MEDIA_NAMESPACES:
        return "media"
    if INTERLANGUAGE_RE.fullmatch(prefix.strip()):
        return "interlanguage"
    return ""


def _pipe_trick(target: str) -> str:
    """[[Foo (bar)|]] shows "Foo": no namespace, no trailing parenthesis."""
    text = target.split(":")[-1].strip()
    if text.endswith(")") and "(" in text:
        text = text[: text.rindex("(")].strip()
    return text


# --- textual pass ---------------------------------------------------------


def _clean_leftovers(text: str) -> str:
    """Remove the markup that the parser left as plain text."""
    text = LEFTOVER_COMMENT_RE.sub("", text)
    text = LEFTOVER_REF_RE.sub("", text)
    text = _drop_table_lines(text)
    text = _drop_nested(LEFTOVER_TEMPLATE_RE, text, "")
    text = _drop_nested(LEFTOVER_LINK_RE, text, _leftover_link)
    text = LEFTOVER_EXTLINK_RE.sub(r"\1", text)
    text = LEFTOVER_TAG_RE.sub("", text)
    text = MAGIC_WORD_RE.sub("", text)
    text = QUOTE_MARKUP_RE.sub("", text)
    text = "\n".join(_heading_line(line) for line in text.split("\n"))
    return STRAY_MARKUP_RE.sub(" ", text)


def _drop_nested(pattern: re.Pattern, text: str, repl, rounds: int = 8) -> str:
    """Apply an innermost-first pattern until it stops matching (bounded)."""
    for _ in range(rounds):
        text, count = pattern.subn(repl, text)
        if not count:
            break
    return text


def _leftover_link(match: re.Match) -> str:
    """An unparsed [[target|label]]: same rules as a parsed one."""
    target, label = match.group(1), match.group(2)
    if _link_kind(target):
        return ""
    if label is None:
        return target.lstrip(":")
    return label if label.strip() else _pipe_trick(target)


def _heading_line(line: str) -> str:
    """A heading the parser did not see: keep its text as a paragraph."""
    text = line.strip()
    level = min(len(text) - len(text.lstrip("=")), len(text) - len(text.rstrip("=")))
    title = text[level : len(text) - level].strip()
    if not level or not title:
        return line
    return f"\n{title}\n"


def _drop_table_lines(text: str) -> str:
    """Drop tables the parser could not read, nested ones included.

    A ``{|`` line opens a table that runs to its matching ``|}``; every line
    in between goes. An unclosed table loses only its marker lines, so one
    stray ``{|`` cannot swallow the rest of the article.
    """
    lines = text.split("\n")
    closing = _matching_table_ends(lines)
    keep: list[str] = []
    i = 0
    while i < len(lines):
        stripped = lines[i].lstrip(" \t:")
        if stripped.startswith("{|") and i in closing:
            i = closing[i] + 1
            continue
        if not _is_table_line(stripped):
            keep.append(lines[i])
        i += 1
    return "\n".join(keep)


def _matching_table_ends(lines: list[str]) -> dict[int, int]:
    """Map each ``{|`` line index to the index of its closing ``|}`` line."""
    opened: list[int] = []
    ends: dict[int, int] = {}
    for i, line in enumerate(lines):
        stripped = line.lstrip(" \t:")
        if stripped.startswith("{|"):
            opened.append(i)
        elif stripped.startswith("|}") and opened:
            ends[opened.pop()] = i
    return ends


def _is_table_line(stripped: str) -> bool:
    """Table syntax outside a matched table: ``{|``, ``|…``, ``! header``.

    A ``!`` line counts only when it looks like a header cell (``! x`` or
    ``!x !! y``), so prose such as "!Kung" survives.
    """
    if stripped.startswith(("{|", "|")):
        return True
    return stripped.startswith("!") and (stripped[1:2].isspace() or "!!" in stripped)


def _paragraphs(text: str) -> list[str]:
    """Split at blank lines, collapse whitespace, drop text-free paragraphs."""
    out = []
    for block in PARAGRAPH_BREAK_RE.split(text):
        paragraph = PAREN_LEAD_RE.sub("(", EMPTY_PARENS_RE.sub("", block))
        paragraph = WHITESPACE_RE.sub(" ", paragraph).strip()
        if any(ch.isalnum() for ch in paragraph):
            out.append(paragraph)
    return out
