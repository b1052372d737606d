"""Tests for lmlab.data.wikimarkup: one snippet per markup rule, garbage
input, and the real pages-articles dumps under the data directory."""

from __future__ import annotations

import bz2
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmlab.data.wikimarkup import is_redirect_text, wikitext_to_paragraphs

DATA = Path(os.environ.get("LMLAB_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
DUMP = DATA / "wikipedia-xml" / "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
TABLE_DUMP = DATA / "wikipedia-xml" / "enwiki-table-markup.xml.bz2"
NS = "{http://www.mediawiki.org/xml/export-0.10/}"
LEFTOVERS = ("{{", "}}", "[[", "]]", "<ref", "{|", "|}")


def clean(text: str, title: str | None = None) -> list[str]:
    return wikitext_to_paragraphs(text, title)


def joined(text: str) -> str:
    return " ".join(clean(text))


# --- templates, references, comments ---------------------------------------


def test_nested_templates_are_removed():
    assert clean("{{Infobox|name={{lang|de|X}}|a={{b|{{c}}}}}}\nThe text.") == ["The text."]


def test_template_nested_in_link_label():
    assert joined("See [[Berlin|the {{lang|de|Hauptstadt}} city]] now.") == "See the city now."


def test_ref_with_template_inside_and_self_closing_ref():
    text = 'Fact.<ref name="a">{{cite web|url=http://x.org|title=[[T]]}}</ref> More<ref name="a"/>.<references/>'
    assert clean(text) == ["Fact. More."]


def test_comment_is_removed():
    assert clean("Hello <!-- hidden [[x]] {{y}} --> world") == ["Hello world"]


def test_pagename_uses_title():
    assert clean("{{PAGENAME}} is a town.", title="Ulm") == ["Ulm is a town."]


# --- tables ----------------------------------------------------------------


def test_table_with_nested_table_is_removed():
    text = (
        "Intro.\n{| class=wikitable\n|-\n! H1 !! H2\n|-\n| a || b\n|-\n|\n"
        "{| class=inner\n| nested cell\n|}\n| after nested\n|}\nAfter table."
    )
    assert clean(text) == ["Intro.", "After table."]


def test_table_the_parser_cannot_read_is_removed():
    # A table opened mid-cell is not a table to mwparserfromhell: its lines
    # come back as text and must be stripped line by line.
    assert clean("Intro.\n{|\n| a || {|\n| inner\n|}\n|}\nAfter.") == ["Intro.", "After."]
    assert clean("Intro.\n{|\n| unclosed cell\n! header\n\nAfter.") == ["Intro.", "After."]


def test_html_table_is_removed():
    assert clean("Before\n<table><tr><td>cell</td></tr></table>\nAfter") == ["Before", "After"]


def test_prose_starting_with_bang_survives():
    assert clean("!Kung people live in the Kalahari.") == ["!Kung people live in the Kalahari."]


# --- links -----------------------------------------------------------------


def test_file_link_with_link_in_caption_is_removed():
    text = "Before [[File:Map.png|thumb|200px|A [[caption]] with {{x}} and [[Foo|bar]]]] after."
    assert clean(text) == ["Before after."]


def test_media_and_category_links_any_case_and_leading_colon():
    text = (
        "A [[image:y.jpg]] B [[ file : x.png|a]] C [[Media:z.ogg]] D [[:Category:Foo|Foo cats]] "
        "E [[Category:Bar|sort]] F [[Datei:x.jpg|mini|Bild]] G"
    )
    assert joined(text) == "A B C D E F G"


def test_category_links_at_page_end():
    assert clean("Body text.\n\n[[Category:Towns]]\n[[Category:Germany| ]]") == ["Body text."]


def test_interlanguage_links_are_removed():
    assert clean("Body.\n[[de:Körper]]\n[[zh-yue:身體]]\n[[simple:Body]]") == ["Body."]


def test_link_text_is_kept():
    assert joined("[[Target|text]], [[Target]], [[Foo (bar)|]] and [[wikt:foo|foo]].") == (
        "text, Target, Foo and foo."
    )


def test_external_links():
    text = "[http://example.com Example site] and [http://bare.com] and http://plain.org here."
    assert clean(text) == ["Example site and and http://plain.org here."]


# --- formatting, lists, tags -------------------------------------------------


def test_bold_italic_and_inline_tags_keep_text():
    text = "'''Bold''' and ''italic'' <b>b</b> H<sub>2</sub>O <span style='x'>span</span> a<br/>b"
    assert clean(text) == ["Bold and italic b H2O span a b"]


def test_block_content_tags_are_removed():
    text = (
        "__NOTOC__\nText <math>x^2</math> here.\n<gallery>\nA.jpg|cap\n</gallery>\n"
        "<pre>code [[x]]</pre><syntaxhighlight lang=python>x=1</syntaxhighlight>"
        "<source>y</source><timeline>t</timeline><imagemap>i</imagemap><score>s</score> end"
    )
    assert joined(text) == "Text here. end"


def test_list_markers_are_removed():
    assert clean("* one\n* two [[Foo|bar]]\n# three\n: four\n; term : def") == [
        "one", "two bar", "three", "four", "term", "def",
    ]


# --- sections and paragraphs -------------------------------------------------


def test_heading_is_kept_as_paragraph():
    assert clean("Lead.\n\n== History ==\nOld times.\n=== Early ===\nEarlier.") == [
        "Lead.", "History", "Old times.", "Early", "Earlier.",
    ]


def test_boilerplate_sections_are_dropped_with_subsections():
    text = (
        "Lead.\n==References==\n{{reflist}}\n* A book.\n===Sub===\nsub body\n"
        "== Life ==\nkept\n==See Also==\n* [[X]]\n== notes and references ==\nfoo\n"
        "==EXTERNAL LINKS==\n* [http://x.org Site]"
    )
    assert clean(text) == ["Lead.", "Life", "kept"]


def test_heading_swallowed_by_stray_italics_still_drops_section():
    # mwparserfromhell nests what follows an unclosed '' inside the italic tag.
    text = "Lead ''a\n\n==References==\n{{reflist}}\nRef text.\n\n==Later==\nbody"
    assert clean(text) == ["Lead a", "Later", "body"]


def test_paragraphs_collapse_whitespace_and_drop_punctuation_only():
    text = "Line one\nline  two.\n\n\n  \nNext\tpara.\n\n...\n\n—\n\n(1)"
    assert clean(text) == ["Line one line two.", "Next para.", "(1)"]


def test_empty_parentheses_left_by_templates_are_tidied():
    assert clean("Aristotle ({{lang-grc|X}}; 384 BC) and Plato ({{IPA|y}}) met.") == [
        "Aristotle (384 BC) and Plato met."
    ]


# --- robustness ----------------------------------------------------------------

MARKUP = [
    "{{", "}}", "[[", "]]", "|", "{|", "|}", "|-", "\n", "\n\n", "'''", "''", "<ref>", "</ref>",
    "<ref name=x/>", "<!--", "-->", "==", "=", "*", "#", ":", ";", "!", "word", "File:x",
    "[http://a b]", "[//x", "&nbsp;", "<div>", "</div>", "<b>", "<math>", "{{{", "}}}", "[", "]",
    "<", ">", "/>", "__NOTOC__", "Category:", "de:", "<table>", "<pre>", "é", "中",
]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.lists(st.sampled_from(MARKUP), max_size=60).map("".join), st.text(max_size=200)))
def test_garbage_never_raises_and_output_is_clean(text):
    paragraphs = clean(text)
    assert isinstance(paragraphs, list)
    for p in paragraphs:
        assert p and p == p.strip() and "  " not in p and "\n" not in p
        assert any(ch.isalnum() for ch in p)
        assert not any(tok in p.lower() for tok in LEFTOVERS), p


def test_text_pass_alone_when_the_parser_fails(monkeypatch):
    def broken(text):
        raise RuntimeError("parser bug")

    monkeypatch.setattr("lmlab.data.wikimarkup.mwparserfromhell.parse", broken)
    text = (
        "{{Infobox|a={{b}}}}\n'''Ulm''' is a [[city|town]].<ref>{{cite}}</ref>\n"
        "* item one\n== History ==\nOld [[File:x.png|thumb|cap]] times.\n{|\n| cell\n|}\n[[Category:X]]"
    )
    assert clean(text) == ["Ulm is a town.", "item one", "History", "Old times."]


def test_lone_surrogate_entity_is_dropped():
    assert clean("a &#xD800; b &amp; c") == ["a b & c"]


def test_rejects_non_string():
    with pytest.raises(TypeError):
        wikitext_to_paragraphs(None)  # type: ignore[arg-type]


def test_is_redirect_text():
    assert is_redirect_text("#REDIRECT [[Computer accessibility]]")
    assert is_redirect_text("  \n#redirect[[X]]")
    assert is_redirect_text("#Redirect: [[X]]")
    assert not is_redirect_text("Text #REDIRECT [[X]]")
    assert not is_redirect_text("# item")
    assert not is_redirect_text("")


# --- the real dumps -------------------------------------------------------------


def iter_pages(path: Path):
    """(title, ns, is_redirect, text) for each page, streamed."""
    with bz2.open(path) as stream:
        for _, elem in ET.iterparse(stream):
            if elem.tag == NS + "page":
                yield (
                    elem.findtext(NS + "title"),
                    elem.findtext(NS + "ns"),
                    elem.find(NS + "redirect") is not None,
                    elem.findtext(f"{NS}revision/{NS}text") or "",
                )
                elem.clear()


@pytest.fixture(scope="module")
def dump_articles():
    """Cleaned articles: every second one of the big dump (parsing all of it
    takes ~6 s), every page of the table dump; plus redirect texts."""
    if not DUMP.exists() or not TABLE_DUMP.exists():
        pytest.skip(f"wikipedia dumps not found under {DATA}")
    articles, redirects, non_redirects = {}, [], []
    for path, step in ((DUMP, 2), (TABLE_DUMP, 1)):
        index = 0
        for title, ns, redirect, text in iter_pages(path):
            if redirect:
                redirects.append(text)
                continue
            non_redirects.append(text)
            if ns != "0":
                continue
            if index % step == 0 or title == "Anarchism":
                articles[(path.name, title)] = wikitext_to_paragraphs(text, title)
            index += 1
    return articles, redirects, non_redirects


def test_dump_has_no_markup_left(dump_articles):
    articles, _, _ = dump_articles
    assert len(articles) > 50
    for key, paragraphs in articles.items():
        text = "\n".join(paragraphs)
        for token in LEFTOVERS + ("style=", "class=", "rowspan", "thumb|", "__NOTOC__"):
            assert token not in text, (key, token)
        for p in paragraphs:
            assert p and p == p.strip() and "  " not in p, (key, p)
            assert not p.startswith(("|", "! ", "=")), (key, p)


def test_dump_yields_real_prose(dump_articles):
    articles, _, _ = dump_articles
    anarchism = articles[(DUMP.name, "Anarchism")]
    assert sum(map(len, anarchism)) > 5000
    assert anarchism[0].startswith("Anarchism is a political philosophy")
    assert "self-governed societies" in anarchism[0]
    assert "History" in anarchism  # a heading kept as a paragraph
    assert not {"References", "External links", "Further reading"} & set(anarchism)
    total = sum(len(p) for ps in articles.values() for p in ps)
    assert total > 1_000_000


def test_dump_table_page_keeps_prose_only(dump_articles):
    articles, _, _ = dump_articles
    vote = articles[(TABLE_DUMP.name, "Constructive vote of no confidence")]
    assert vote[0].startswith("The constructive vote of no confidence (in German: konstruktives")
    assert "Germany" in vote


def test_dump_redirects_are_recognised(dump_articles):
    _, redirects, non_redirects = dump_articles
    assert len(redirects) > 20
    assert all(is_redirect_text(text) for text in redirects)
    assert not any(is_redirect_text(text) for text in non_redirects)
