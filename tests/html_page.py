"""Read a grid_report.html as a browser would: its sections, images, tables and links."""

from html.parser import HTMLParser
from pathlib import Path


class Page(HTMLParser):
    """Parse a page with the standard library's parser; fails on what a page must not hold.

    Attributes: ``sections`` (id -> {"images": [src], "tables": [[row cells]], "text"}; a
    figure written as inline SVG counts as an image whose src is ``"svg"``, the viewports nested
    in it do not),
    ``urls`` (every src/href), ``tags`` (every start tag), ``open_tags`` (left unclosed).
    """

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.sections, self.urls, self.tags, self.stack = {}, [], [], []
        self.section = None
        self.table = self.row = None
        self.feed(text)
        self.close()
        self.open_tags = [t for t in self.stack if t not in self.VOID]

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag not in self.VOID:
            self.stack.append(tag)
        for key in ("src", "href"):
            if key in attrs:
                self.urls.append(attrs[key])
        if tag == "section":
            self.section = self.sections.setdefault(attrs["id"], {"images": [], "tables": [],
                                                                  "text": ""})
        elif tag == "img" and self.section is not None:
            self.section["images"].append(attrs["src"])
        elif tag == "svg" and self.section is not None and self.stack.count("svg") == 1:
            self.section["images"].append("svg")  # a figure (not a panel's viewport in it)
        elif tag == "table" and self.section is not None and self.table is None:
            self.table = []
            self.section["tables"].append(self.table)
        elif tag == "tr" and self.table is not None:
            self.row = []
            self.table.append(self.row)
        elif tag in ("td", "th") and self.row is not None:
            self.row.append("")

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()
        if tag == "table" and "table" not in self.stack:
            self.table = self.row = None
        elif tag == "section":
            self.section = None

    def handle_data(self, data):
        if self.section is not None:
            self.section["text"] += data
        if self.row:
            self.row[-1] += data


def read_page(path):
    """Parse ``path`` and check that it is one self-contained page; returns the Page."""
    text = Path(path).read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    page = Page(text)
    assert page.open_tags == [], page.open_tags
    assert not {"script", "link", "iframe", "object"} & set(page.tags)
    # every image embedded, every link inside the page: nothing is fetched from anywhere
    assert all(u.startswith("data:image/png;base64,") or u.startswith("#")
               for u in page.urls), [u[:40] for u in page.urls if not u.startswith("data:")]
    assert "http://" not in text and "https://" not in text
    return page


def edge_table(section):
    """The per-edge table of a graph section: header and rows."""
    tables = [t for t in section["tables"] if t and "offset_before" in t[0]]
    assert len(tables) == 1, [t[0] for t in section["tables"] if t]
    return tables[0][0], tables[0][1:]
