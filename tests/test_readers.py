"""Readers: every format, streamed, and the errors for bad input."""

from __future__ import annotations

import bz2
import json

import pytest

from lmlab.data.documents import WIKITEXT, ReadStats
from lmlab.data.readers import ReadOptions, read_source, sniff_format
from lmlab.core.errors import ConfigError, DataError
from tests.conftest import data_path


def read(path, **options):
    stats = ReadStats()
    return list(read_source(str(path), ReadOptions(**options), stats)), stats


def test_text_document_separators(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("First line\nsecond line\n\n\nThird block\n", encoding="utf-8")
    docs, _ = read(path)
    assert [d.body for d in docs] == [("First line\nsecond line",), ("Third block",)]
    docs, _ = read(path, doc_sep="line")
    assert [d.body for d in docs] == [("First line",), ("second line",), ("Third block",)]
    docs, _ = read(path, doc_sep="file")
    assert [d.body for d in docs] == [("First line\nsecond line", "Third block")]


def test_folders_and_globs_are_sorted_and_compressed_files_read(tmp_path):
    (tmp_path / "b.txt").write_text("bee\n", encoding="utf-8")
    with bz2.open(tmp_path / "a.txt.bz2", "wt", encoding="utf-8") as handle:
        handle.write("ay\n")
    (tmp_path / ".hidden").write_text("no\n", encoding="utf-8")
    docs, _ = read(tmp_path)
    assert [d.body for d in docs] == [("ay",), ("bee",)]
    docs, _ = read(tmp_path / "*.txt")
    assert [d.body for d in docs] == [("bee",)]


def test_missing_paths_give_clear_errors(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        read(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="no files match"):
        read(tmp_path / "*.nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="folder holds no files"):
        read(tmp_path / "empty")


def test_invalid_utf8_strict_names_file_line_and_byte(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"good line\nbad \xff byte\nlast\n")
    with pytest.raises(DataError) as error:
        read(path)
    assert str(error.value) == (f"{path}:2: invalid UTF-8 at byte 14; use --errors replace or --errors skip to go on")
    docs, stats = read(path, errors="replace", doc_sep="line")
    assert [d.body[0] for d in docs] == ["good line", "bad \ufffd byte", "last"]
    docs, stats = read(path, errors="skip", doc_sep="line")
    assert [d.body[0] for d in docs] == ["good line", "last"]
    assert stats.counts == {"lines with invalid UTF-8 skipped": 1}


def test_bad_options_are_rejected():
    with pytest.raises(ConfigError, match="unknown format 'xml'"):
        ReadOptions(format="xml")
    with pytest.raises(ConfigError, match="--errors"):
        ReadOptions(errors="ignore")


def test_wikitext_articles_and_paragraphs():
    path = data_path("wikitext-2", "valid.txt")
    docs, _ = read(path)
    assert sniff_format(path) == "wikitext"
    assert docs[0].title == "Homarus gammarus"
    assert docs[0].body[0] == "= Homarus gammarus ="
    assert docs[0].body[1].startswith("Homarus gammarus , known as the European lobster")
    assert "= = Description = =" in docs[0].body
    assert len(docs) == 60  # the articles of WikiText-2's validation set
    assert sum(len(d.body) for d in docs) == sum(1 for line in open(path, encoding="utf-8") if line.strip())


def test_jsonl_fields_and_malformed_lines(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "one", "title": "T"}\n\n{"text": ["two", "three"]}\n', encoding="utf-8")
    docs, _ = read(path)
    assert [d.body for d in docs] == [("one",), ("two", "three")]
    with pytest.raises(DataError, match=r"c.jsonl:3: no field 'title' \(fields: text\)"):
        read(path, fields=("title",))
    path.write_text('{"text": "fine"}\n{"text": broken}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"c.jsonl:2: malformed JSONL line: Expecting value"):
        read(path)
    docs, stats = read(path, errors="skip")
    assert [d.body for d in docs] == [("fine",)] and stats.counts == {"malformed records skipped": 1}


def test_json_array_of_tang_poems():
    path = data_path("chinese-poetry", "tangshi_300.json")
    docs, _ = read(path, fields=("paragraphs",))
    assert len(docs) > 300
    assert all(isinstance(p, str) for d in docs for p in d.body)
    assert docs[1].body == ("前不見古人，後不見來者。", "念天地之悠悠，獨愴然而涕下。")
    assert docs[1].title == "登幽州臺歌"


def test_csv_with_header_and_headerless(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text('label,text\n1,"hello, world"\n0,bye\n', encoding="utf-8")
    docs, _ = read(path, fields=("text",))
    assert [d.body for d in docs] == [("hello, world",), ("bye",)]
    news = data_path("news-agnews", "test.csv")
    docs, _ = read(news, fields=("1", "2"))
    assert len(docs) == 7600
    assert docs[0].body[0] == "Fears for T N pension after talks"
    with pytest.raises(DataError, match="no column '9'"):
        read(news, fields=("9",))


GIGAWORD = """<DOC id="AFP_ENG_19940512.0001" type="story" >
<HEADLINE>
Sweden AT&AMP;T deal
</HEADLINE>
<DATELINE>
STOCKHOLM, May 12 (AFP)
</DATELINE>
<TEXT>
<P>
The first paragraph is wrapped
over two lines.
</P>
<P>
Second paragraph.
</P>
</TEXT>
</DOC>
<DOC id="AFP_ENG_19940512.0002" type="multi" >
<HEADLINE>
Results
</HEADLINE>
<TEXT>
<P>
Scores and tables.
</P>
</TEXT>
</DOC>
<DOC id="NYT_ENG_19940701.0003" type="story" >
<TEXT>
A story without P tags.

Its second paragraph.
</TEXT>
</DOC>
"""


def test_gigaword_stories(tmp_path):
    path = tmp_path / "afp_eng_199405"
    path.write_text(GIGAWORD, encoding="utf-8")
    assert sniff_format(path) == "gigaword"
    docs, stats = read(path)
    assert [d.key for d in docs] == ["AFP_ENG_19940512.0001", "NYT_ENG_19940701.0003"]
    assert docs[0].body == ("Sweden AT&T deal", "The first paragraph is wrapped over two lines.", "Second paragraph.")
    assert docs[1].body == ("A story without P tags.", "Its second paragraph.")
    assert stats.counts == {"gigaword documents of type 'multi' skipped": 1}
    docs, _ = read(path, doc_types=("all",))
    assert len(docs) == 3


def test_gigaword_malformed(tmp_path):
    path = tmp_path / "bad.sgml"
    path.write_text(GIGAWORD.replace("</DOC>\n<DOC id=\"AFP_ENG_19940512.0002\"", "<DOC id=\"X\"", 1), encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.sgml:17: <DOC> opened inside DOC 'AFP_ENG_19940512.0001'"):
        read(path, format="gigaword")
    path.write_text(GIGAWORD[:200], encoding="utf-8")
    with pytest.raises(DataError, match="file ends inside DOC 'AFP_ENG_19940512.0001' that started at line 1"):
        read(path, format="gigaword")


MEDIAWIKI = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">
<siteinfo><sitename>Test</sitename></siteinfo>
<page><title>Alpha</title><ns>0</ns><id>1</id><revision><text>'''Alpha''' is [[Greek alphabet|a letter]].</text></revision></page>
<page><title>Talk:Alpha</title><ns>1</ns><id>2</id><revision><text>chat</text></revision></page>
<page><title>Alfa</title><ns>0</ns><id>3</id><redirect title="Alpha" /><revision><text>#REDIRECT [[Alpha]]</text></revision></page>
<page><title>Beta</title><ns>0</ns><id>4</id><revision><text>Beta text.</text></revision></page>
</mediawiki>
"""


def test_mediawiki_articles_only(tmp_path):
    path = tmp_path / "dump.xml"
    path.write_text(MEDIAWIKI, encoding="utf-8")
    assert sniff_format(path) == "mediawiki"
    docs, stats = read(path)
    assert [(d.title, d.markup) for d in docs] == [("Alpha", WIKITEXT), ("Beta", WIKITEXT)]
    assert docs[0].body == "'''Alpha''' is [[Greek alphabet|a letter]]."
    assert stats.counts == {"wiki pages outside the article namespace": 1, "wiki redirect pages": 1}


def test_mediawiki_malformed_xml_names_line(tmp_path):
    path = tmp_path / "dump.xml"
    path.write_text(MEDIAWIKI.replace("<id>4</id>", "<id>4</idx>"), encoding="utf-8")
    with pytest.raises(DataError, match=r"dump.xml:6: malformed XML at column \d+ after 3 pages"):
        read(path)


def test_truncated_bz2_dump_names_file_and_progress(tmp_path):
    source = data_path("wikipedia-xml", "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
    truncated = tmp_path / "cut.xml.bz2"
    truncated.write_bytes(source.read_bytes()[:400_000])
    with pytest.raises(DataError) as error:
        read(truncated)
    message = str(error.value)
    assert message.startswith(f"{truncated}: truncated or corrupt compressed stream after ")
    assert "pages (compressed byte 400,000 of 400,000)" in message
    corrupt = tmp_path / "corrupt.xml.bz2"
    data = bytearray(source.read_bytes()[:200_000])
    data[100_000:100_010] = b"0123456789"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(DataError, match="truncated or corrupt compressed stream"):
        read(corrupt)


def test_real_wikipedia_dump_skips_redirects():
    path = data_path("wikipedia-xml", "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
    docs, stats = read(path)
    assert len(docs) == 106
    assert stats.counts["wiki redirect pages"] == 99
    assert not any(d.body.lstrip().upper().startswith("#REDIRECT") for d in docs)
    assert docs[0].title == "Anarchism"


def test_hf_local_files_and_saved_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    table = datasets.Dataset.from_dict({"text": ["first doc", "second doc", ""], "label": [0, 1, 0]})
    table.to_parquet(str(tmp_path / "part.parquet"))
    docs, _ = read(f"hf:{tmp_path}/*.parquet")
    assert [d.body for d in docs] == [("first doc",), ("second doc",)]
    table.save_to_disk(str(tmp_path / "saved"))
    docs, _ = read(f"hf:{tmp_path / 'saved'}")
    assert [d.body for d in docs] == [("first doc",), ("second doc",)]
    docs, _ = read(f"hf:{tmp_path / 'saved'}/*.arrow")  # the Arrow files save_to_disk wrote, read as files
    assert [d.body for d in docs] == [("first doc",), ("second doc",)]
    table.to_csv(str(tmp_path / "rows.csv"), index=False)
    docs, _ = read(f"hf:{tmp_path / 'rows.csv'}")
    assert [d.body for d in docs] == [("first doc",), ("second doc",)]
    (tmp_path / "rows.jsonl").write_text(json.dumps({"body": "json doc"}) + "\n", encoding="utf-8")
    docs, _ = read(f"hf:{tmp_path / 'rows.jsonl'}", fields=("body",))
    assert [d.body for d in docs] == [("json doc",)]
