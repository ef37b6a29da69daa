"""HTML mail bodies: readable plain text, and sanitized HTML safe to show an agent.

:func:`html_to_text` (stdlib only; never raises on bad markup) is good enough for an agent to
read what the customer wrote: block elements become line breaks, list items get a dash,
scripts/styles/head are dropped, entities are decoded, runs of blank lines are collapsed, link
targets are kept after their text when they differ from it, and ``<blockquote>`` lines are
prefixed with ``> `` so quoted history stays recognisable as such (see ``quoting.py``).

:func:`sanitize_html` runs the markup through nh3 (the ammonia sanitizer): no script or style
elements, no event handlers, only plain URL schemes (no ``javascript:``), links opened with
``rel="noopener noreferrer"``, and no remote images unless asked for: a remote image is a read
receipt and a tracking pixel, so only ``cid:`` images (parts of the mail itself) are kept. The
image rule is an allow-list (``cid:``, plus ``http://``/``https://`` when remote images are
allowed), never a block-list of remote forms: browsers read ``/\t/host``, ``\\host`` and
``&#47;&#47;host`` as protocol-relative URLs too.
"""
from __future__ import annotations

import re
from html.parser import HTMLParser

import nh3

_BLOCK = {
    "address", "article", "aside", "blockquote", "div", "dl", "dt", "dd", "fieldset", "figure", "footer",
    "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "main", "nav", "ol", "p", "pre", "section",
    "table", "tr", "ul",
}
_SKIP = {"script", "style", "head", "title", "template", "noscript"}
_SPACES = re.compile(r"[ \t\f\v\u00a0\u200b]+")
_BLANK_RUNS = re.compile(r"\n{3,}")


class _TextCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip_depth = 0
        self._pre_depth = 0
        self._href: str | None = None
        self._link_text: list[str] = []
        self._quote_depth = 0

    def _newline(self) -> None:
        self.parts.append("\n" + "> " * self._quote_depth if self._quote_depth else "\n")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip_depth += 1
        elif tag == "br":
            self._newline()
        elif tag == "li":
            self._newline()
            self.parts.append("- ")
        elif tag in ("td", "th"):
            self.parts.append("\t")
        elif tag in _BLOCK:
            if tag == "blockquote":
                self._quote_depth += 1
            self._newline()
            if tag == "pre":
                self._pre_depth += 1
        elif tag == "a":
            self._href = dict(attrs).get("href")
            self._link_text = []

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("br", "hr"):
            self._newline()

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in _BLOCK:
            if tag == "blockquote":
                self._quote_depth = max(0, self._quote_depth - 1)
            self._newline()
            if tag == "pre":
                self._pre_depth = max(0, self._pre_depth - 1)
        elif tag == "a" and self._href is not None:
            text = "".join(self._link_text).strip()
            href = self._href.strip()
            if href.startswith(("http://", "https://")) and href != text:
                self.parts.append(f" ({href})")
            self._href = None

    def handle_data(self, data: str) -> None:
        if self._skip_depth:
            return
        if not self._pre_depth:
            data = _SPACES.sub(" ", data.replace("\r", " ").replace("\n", " "))
        elif self._quote_depth:
            data = data.replace("\n", "\n" + "> " * self._quote_depth)
        if self._href is not None:
            self._link_text.append(data)
        self.parts.append(data)


def html_to_text(markup: str) -> str:
    collector = _TextCollector()
    try:
        collector.feed(markup)
        collector.close()
    except Exception:  # noqa: BLE001 - html.parser is lenient, but a mail body must never crash intake
        pass
    lines = [_tidy_line(line) for line in "".join(collector.parts).split("\n")]
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()


def _tidy_line(line: str) -> str:
    line = line.strip()
    if not line.startswith(">"):
        return line
    # "> >  text" → ">> text"; bare markers come from block tags opening and closing: blank.
    marks = _QUOTE_MARKS.match(line)
    rest = line[marks.end():]
    return ">" * marks.group(0).count(">") + " " + rest if rest else ""


_QUOTE_MARKS = re.compile(r"(?:>\s*)+")

# Attributes mail HTML needs to stay readable, on top of nh3's defaults. ``style`` is kept but
# filtered to presentational properties: no url(), so no background-image beacons.
_EXTRA_ATTRIBUTES = {
    "*": {"style", "dir", "lang", "title", "align"},
    "font": {"color", "face", "size"},
    "td": {"width", "height", "valign", "bgcolor"},
    "th": {"width", "height", "valign", "bgcolor"},
    "table": {"width", "border", "cellpadding", "cellspacing", "bgcolor"},
    "img": {"title"},
}
_STYLE_PROPERTIES = {
    "color", "background-color", "font", "font-family", "font-size", "font-style", "font-weight",
    "text-align", "text-decoration", "text-indent", "line-height", "white-space", "vertical-align",
    "margin", "margin-top", "margin-bottom", "margin-left", "margin-right",
    "padding", "padding-top", "padding-bottom", "padding-left", "padding-right",
    "border", "border-top", "border-bottom", "border-left", "border-right", "border-collapse",
    "border-color", "border-style", "border-width", "width", "height", "max-width", "display",
}
_CLEAN_CONTENT = {"script", "style", "title", "noscript", "template", "iframe", "object", "embed", "svg", "math"}
_LOCAL_IMAGE = ("cid:",)
_REMOTE_IMAGE = ("http://", "https://")
# What a browser ignores in a URL: leading/trailing C0 controls and spaces (WHATWG URL parsing).
_URL_EDGE = "".join(chr(c) for c in range(0x21))


def _attributes() -> dict[str, set[str]]:
    merged = {tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()}
    for tag, attrs in _EXTRA_ATTRIBUTES.items():
        merged.setdefault(tag, set()).update(attrs)
    return merged


def _image_filter(allowed: tuple[str, ...]):
    def keep_allowed_images(tag: str, attribute: str, value: str) -> str | None:
        # nh3 hands over the value with entities already decoded (&#47; is "/").
        if tag == "img" and attribute == "src" and not value.strip(_URL_EDGE).lower().startswith(allowed):
            return None
        return value
    return keep_allowed_images


def _cleaner(allow_remote_images: bool) -> nh3.Cleaner:
    return nh3.Cleaner(
        tags=nh3.ALLOWED_TAGS | {"font"},
        clean_content_tags=_CLEAN_CONTENT,
        attributes=_attributes(),
        attribute_filter=_image_filter(_LOCAL_IMAGE + (_REMOTE_IMAGE if allow_remote_images else ())),
        url_schemes={"http", "https", "mailto", "tel", "cid"},
        filter_style_properties=_STYLE_PROPERTIES,
        link_rel="noopener noreferrer",
    )


_CLEANERS = {False: _cleaner(False), True: _cleaner(True)}


def sanitize_html(markup: str, *, allow_remote_images: bool = False) -> str:
    """Markup safe to render for an agent (see the module docstring); never raises."""
    try:
        return _CLEANERS[bool(allow_remote_images)].clean(markup).strip()
    except Exception:  # noqa: BLE001 - a mail body must never crash intake; plain text survives
        return ""
