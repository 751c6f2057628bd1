"""A strict check of generated HTML: every element closed, in order, as a browser would expect."""

from __future__ import annotations

import html.parser


class _Nesting(html.parser.HTMLParser):
    """Records the tags seen and fails on an end tag that does not close the innermost open element."""

    VOID = {"meta", "img", "br", "hr", "link", "input", "source"}

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.seen: list[str] = []
        self.images: list[dict] = []

    def handle_starttag(self, tag, attrs):
        self.seen.append(tag)
        if tag == "img":
            self.images.append(dict(attrs))
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag, attrs):  # <img ... />: opened and closed at once
        self.seen.append(tag)
        if tag == "img":
            self.images.append(dict(attrs))
        assert tag in self.VOID, f"<{tag} /> is not a void element"

    def handle_endtag(self, tag):
        assert tag not in self.VOID, f"</{tag}> closes a void element"
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
        self.open.pop()


def well_formed(page: str) -> _Nesting:
    """Parse ``page``, assert that every element was closed, and return what the parser saw."""
    parser = _Nesting()
    parser.feed(page)
    parser.close()
    assert parser.open == [], f"never closed: {parser.open}"
    return parser
