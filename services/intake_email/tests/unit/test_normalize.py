"""normalize(): real-world encodings in, ticket fields out; bad mail is a rejection, never a crash."""
import base64
import hashlib
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

from services.intake_email import automatic
from services.intake_email.normalize import (
    MAX_THREAD_IDS,
    MailPart,
    MailRejected,
    NormalizedMail,
    check_shape,
    codec_for,
    decode_bytes,
    decode_header_value,
    guess_language,
    message_id_of,
    message_ids_in,
    normalize,
    parse_message,
)

CORPUS = Path(__file__).resolve().parent.parent / "corpus"

AT = datetime(2026, 11, 22, 8, 30, tzinfo=timezone.utc)


def b64(text: str, charset: str) -> str:
    return base64.b64encode(text.encode(charset)).decode()


def test_utf8_plain_mail_with_threading_headers():
    raw = (
        "From: =?UTF-8?B?" + b64("张伟", "utf-8") + "?= <Zhang.Wei@Example.COM>\r\n"
        "To: support@example.com\r\n"
        "Subject: =?utf-8?Q?=E8=AE=A2=E5=8D=95?= 12345 still not shipped\r\n"
        "Message-ID: <abc.123@mail.example.com>\r\n"
        "In-Reply-To: <ack-1@ticketmesh>\r\n"
        "References: <orig-1@mail.example.com>\r\n <ack-1@ticketmesh>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
        "你好，我的订单12345还没有发货，请帮我查一下。\r\n\r\n\r\n\r\n谢谢\r\n"
    ).encode()
    mail = normalize(raw, received_at=AT)
    assert (mail.from_name, mail.from_email) == ("张伟", "zhang.wei@example.com")
    assert mail.subject == "订单 12345 still not shipped"
    assert mail.text == "你好，我的订单12345还没有发货，请帮我查一下。\n\n谢谢"
    assert mail.message_id == "abc.123@mail.example.com"
    assert mail.in_reply_to == ("ack-1@ticketmesh",)
    assert mail.references == ("orig-1@mail.example.com", "ack-1@ticketmesh")
    assert mail.thread_candidates == ("ack-1@ticketmesh", "orig-1@mail.example.com")
    assert mail.received_at == AT
    assert mail.language == "zh"


def test_gbk_subject_labelled_gb2312_decodes_as_gb18030():
    # 镕 is in GBK but not in GB2312: a strict gb2312 decoder would fail on real Chinese mail.
    raw = (
        "From: li@example.cn\r\n"
        f"Subject: =?gb2312?B?{b64('关于朱镕基的发票', 'gbk')}?=\r\n"
        "Message-ID: <gbk-1@example.cn>\r\n"
        "Content-Type: text/plain; charset=gb2312\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
        f"{b64('请开具发票，抬头：朱镕基', 'gbk')}\r\n"
    ).encode()
    mail = normalize(raw, received_at=AT)
    assert mail.subject == "关于朱镕基的发票"
    assert mail.text == "请开具发票，抬头：朱镕基"
    assert mail.language == "zh"


def test_multibyte_character_split_across_encoded_words_is_joined_before_decoding():
    data = "退款申请".encode("utf-8")
    first, second = data[:4], data[4:]  # splits 款 between two words
    value = (f"=?UTF-8?B?{base64.b64encode(first).decode()}?=\r\n"
             f" =?UTF-8?B?{base64.b64encode(second).decode()}?=")
    assert decode_header_value(value) == "退款申请"


def test_big5_body_and_raw_8bit_subject():
    body = "您好，請問訂單何時出貨？".encode("big5")
    raw = (
        b"From: \"Chen\" <chen@example.tw>\r\n"
        b"Subject: " + "出貨查詢".encode("utf-8") + b"\r\n"
        b"Message-ID: <big5-1@example.tw>\r\n"
        b"Content-Type: text/plain; charset=big5\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n" + body + b"\r\n"
    )
    mail = normalize(raw, received_at=AT)
    assert mail.text == "您好，請問訂單何時出貨？"
    assert mail.subject == "出貨查詢"
    assert mail.from_name == "Chen"


def test_html_only_mail_becomes_readable_text():
    raw = (
        b"From: Jane Doe <jane@example.com>\r\n"
        b"Subject: Printer &amp; scanner\r\n"
        b"Message-ID: <html-1@example.com>\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n"
        b"<html><head><style>p {color:red}</style><title>x</title></head><body>"
        b"<p>Hello&nbsp;team,</p><p>The printer says <b>PC LOAD LETTER</b>.<br>Steps:</p>"
        b"<ul><li>turned it off</li><li>turned it on</li></ul>"
        b"<script>alert(1)</script><p>See <a href=\"https://example.com/t/1\">my ticket</a> &lt;3</p>"
        b"</body></html>\r\n"
    )
    mail = normalize(raw, received_at=AT)
    assert mail.text == ("Hello team,\n\nThe printer says PC LOAD LETTER.\nSteps:\n\n- turned it off\n"
                         "- turned it on\n\nSee my ticket (https://example.com/t/1) <3")
    assert mail.subject == "Printer &amp; scanner"  # headers are not HTML
    assert mail.language == "en"


def test_alternative_prefers_plain_and_attachments_are_listed_not_read():
    raw = (
        b"From: ops@example.com\r\nSubject: logs\r\nMessage-ID: <alt-1@example.com>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"OUTER\"\r\n\r\n"
        b"--OUTER\r\nContent-Type: multipart/alternative; boundary=\"INNER\"\r\n\r\n"
        b"--INNER\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nplain wins\r\n"
        b"--INNER\r\nContent-Type: text/html\r\n\r\n<p>html loses</p>\r\n--INNER--\r\n"
        b"--OUTER\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; "
        b"filename=\"=?utf-8?B?" + base64.b64encode("日志.txt".encode()) + b"?=\"\r\n\r\nsecret log lines\r\n"
        b"--OUTER\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment\r\n\r\n"
        b"From: other@example.com\r\nSubject: inner\r\n\r\nforwarded body\r\n"
        b"--OUTER--\r\n"
    )
    mail = normalize(raw, received_at=AT)
    assert mail.text == "plain wins"
    assert [(a.filename, a.content_type) for a in mail.attachments] == [("日志.txt", "text/plain"),
                                                                        ("", "message/rfc822")]
    assert mail.attachments[0].data == b"secret log lines"
    assert b"forwarded body" in mail.attachments[1].data


def test_mail_without_message_id_has_none_and_a_stable_fingerprint():
    raw = b"From: a@example.com\r\nSubject: hi\r\nDate: Sun, 22 Nov 2026 08:00:00 +0000\r\n\r\nhello\r\n"
    first = normalize(raw, received_at=AT)
    again = normalize(raw, received_at=AT)
    other = normalize(raw.replace(b"Subject: hi", b"Subject: hello"), received_at=AT)
    assert first.message_id is None
    assert first.fingerprint == again.fingerprint != other.fingerprint


@pytest.mark.parametrize("raw, reason", [
    (b"", "empty message"),
    (b"   \r\n", "empty message"),
    (b"Subject: no sender\r\n\r\nbody\r\n", "no sender address"),
    (b"From: a@example.com\r\nContent-Type: multipart/mixed\r\n\r\n--x\r\nbody\r\n", "without a boundary"),
    (b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\nno parts here\r\n",
     "boundary never appears"),
    (b"From: not-an-address\r\nSubject: x\r\n\r\nbody\r\n", "no sender address"),
    ("From: a@example.com\r\n\r\nstr, not bytes", "not bytes"),
])
def test_broken_mail_is_rejected_with_a_reason(raw, reason):
    with pytest.raises(MailRejected) as caught:
        normalize(raw, received_at=AT)
    assert reason in caught.value.reason


def test_oversized_mail_is_rejected():
    raw = b"From: a@example.com\r\nSubject: big\r\n\r\n" + b"x" * 2000
    with pytest.raises(MailRejected, match="the limit is 1000"):
        normalize(raw, received_at=AT, max_bytes=1000)


def test_binary_garbage_never_raises_anything_but_rejection():
    for raw in (bytes(range(256)) * 4, b"\xff\xfe\x00\x00" * 100, b"=?utf-8?B?!!!?=\r\n\r\n"):
        with pytest.raises(MailRejected):
            normalize(raw, received_at=AT)


def test_unknown_charset_and_bad_base64_still_give_text():
    raw = (b"From: a@example.com\r\nSubject: =?x-klingon?Q?caf=C3=A9?=\r\n"
           b"Content-Type: text/plain; charset=x-unknown\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + base64.b64encode("naïve café".encode()) + b"!!\r\n")
    mail = normalize(raw, received_at=AT)
    assert mail.subject == "café"
    assert mail.text.startswith("naïve café")


@pytest.mark.parametrize("text, language", [
    ("你好，我的iPhone 15无法连接WiFi", "zh"),
    ("Hello, my order has not arrived yet. Regards, 张伟", "en"),
    ("", "en"),
    ("12345 !!!", "en"),
])
def test_language_guess(text, language):
    assert guess_language(text) == language


def test_rfc2231_charset_parameter_and_attachment_only_mail():
    raw = (b"From: a@example.com\r\nSubject: scan\r\n"
           b"Content-Type: text/plain; charset*=gbk''\r\n\r\n" + "扫描件".encode("gbk") + b"\r\n")
    assert normalize(raw, received_at=AT).text == "扫描件"
    pdf_only = (b"From: a@example.com\r\nSubject: invoice\r\nContent-Type: application/pdf\r\n"
                b"Content-Disposition: attachment; filename=invoice.pdf\r\n\r\n%PDF-1.4\r\n")
    mail = normalize(pdf_only, received_at=AT)
    assert mail.text == ""
    assert [(a.filename, a.content_type, a.data) for a in mail.attachments] == [
        ("invoice.pdf", "application/pdf", b"%PDF-1.4\r\n")]


# --- charsets: one case per charset, in an encoded-word Subject and in the body ------------------

def single_part(subject: bytes, body: bytes, content_type: bytes, cte: bytes = b"8bit") -> bytes:
    return (b"From: a@example.com\r\nTo: support@example.com\r\nSubject: " + subject + b"\r\n"
            b"Content-Type: " + content_type + b"\r\nContent-Transfer-Encoding: " + cte + b"\r\n\r\n" + body)


@pytest.mark.parametrize("charset, sample", [
    ("utf-8", "订单未发货"),
    ("gbk", "关于朱镕基的发票"),
    ("gb2312", "发票抬头"),
    ("gb18030", "退款申请"),
    ("big5", "請問訂單何時出貨"),
    ("iso-2022-jp", "注文の確認"),
    ("shift_jis", "注文番号について"),
    ("euc-jp", "配送状況"),
    ("euc-kr", "주문 확인"),
    ("iso-8859-1", "café crème"),
    ("iso-8859-2", "Łódź zamówienie"),
    ("iso-8859-5", "Заказ не пришёл"),
    ("iso-8859-7", "Παραγγελία"),
    ("iso-8859-15", "prix 10€"),
    ("windows-1250", "Příliš žluťoučký"),
    ("windows-1251", "Счёт на оплату"),
    ("windows-1252", "naïve “quotes” – dash"),
    ("koi8-r", "Привет"),
])
def test_every_charset_decodes_in_headers_and_bodies_without_flags(charset, sample):
    encoded = sample.encode(charset)
    for kind, word in (("B", base64.b64encode(encoded).decode()),
                       ("Q", "".join(f"={b:02X}" for b in encoded))):
        raw = single_part(f"=?{charset}?{kind}?{word}?=".encode(), encoded, f"text/plain; charset={charset}".encode())
        mail = normalize(raw, received_at=AT)
        assert (mail.subject, mail.text, mail.charset_flags) == (sample, sample, ())
    base64_body = single_part(b"x", base64.b64encode(encoded), f"text/plain; charset=\"{charset}\"".encode(), b"base64")
    assert normalize(base64_body, received_at=AT).text == sample


@pytest.mark.parametrize("subject, body, content_type, want_subject, want_text, flags", [
    # A part labelled gb2312 that is really UTF-8: decoding as gb18030 would "succeed" into mojibake.
    (b"x", "你好，世界".encode("utf-8"), b"text/plain; charset=gb2312", "x", "你好，世界",
     ("body-mislabelled:gb2312->utf-8",)),
    (b"x", "café".encode("utf-8"), b"text/plain; charset=iso-8859-1", "x", "café",
     ("body-mislabelled:iso-8859-1->utf-8",)),
    # Labelled UTF-8 but GBK / Latin-1 bytes.
    (b"x", "退款".encode("gbk"), b"text/plain; charset=utf-8", "x", "退款", ("body-mislabelled:utf-8->gb18030",)),
    (b"x", "caf\xe9 \x80".encode("latin-1"), b"text/plain; charset=utf-8", "x", "café €",
     ("body-mislabelled:utf-8->cp1252",)),
    (b"x", "naïve".encode("cp1252"), b"text/plain; charset=us-ascii", "x", "naïve",
     ("body-mislabelled:us-ascii->cp1252",)),
    # No label at all: raw 8-bit header and body guessed, UTF-8 first.
    ("退款申请".encode("gbk"), "请退款".encode("gbk"), b"text/plain", "退款申请", "请退款",
     ("header-8bit-guessed:gb18030", "body-8bit-guessed:gb18030")),
    ("退款申请".encode("utf-8"), "请退款".encode("utf-8"), b"text/plain", "退款申请", "请退款",
     ("header-8bit-guessed:utf-8", "body-8bit-guessed:utf-8")),
    # An unknown label: recorded, then guessed.
    (b"=?x-klingon?Q?caf=C3=A9?=", "你好".encode("gbk"), b"text/plain; charset=x-foo", "café", "你好",
     ("charset-unknown:x-klingon", "header-8bit-guessed:utf-8", "charset-unknown:x-foo",
      "body-8bit-guessed:gb18030")),
    # Pure ASCII under any label is just ASCII: nothing to flag.
    (b"=?gb2312?B?aGVsbG8=?=", b"hello", b"text/plain; charset=big5", "hello", "hello", ()),
])
def test_wrong_or_missing_labels_are_decoded_and_flagged(subject, body, content_type, want_subject, want_text, flags):
    mail = normalize(single_part(subject, body, content_type), received_at=AT)
    assert (mail.subject, mail.text, mail.charset_flags) == (want_subject, want_text, flags)


def test_undecodable_bytes_are_replaced_and_flagged():
    mail = normalize(single_part(b"x", b"ok \x81\x20 done", b"text/plain; charset=utf-8"), received_at=AT)
    assert mail.text.startswith("ok ") and mail.text.endswith(" done")
    assert mail.charset_flags == ("body-undecodable:utf-8",)


@pytest.mark.parametrize("disposition, filename", [
    (b"attachment; filename*=gbk''%D6%D0%CE%C4.pdf", "中文.pdf"),
    (b"attachment; filename*=UTF-8'zh-cn'%E5%8F%91%E7%A5%A8.pdf", "发票.pdf"),
    (b"attachment;\r\n filename*0*=utf-8''%E5%8F%91%E7%A5%A8; filename*1=.zip", "发票.zip"),
    (b"attachment; filename=\"=?utf-8?B?" + base64.b64encode("报价单.xlsx".encode()) + b"?=\"", "报价单.xlsx"),
    (b"attachment; filename=\"=?gb2312?B?" + base64.b64encode("报价单.xlsx".encode("gbk")) + b"?=\"", "报价单.xlsx"),
    (b"attachment; filename=\"" + "报价单.xlsx".encode("gbk") + b"\"", "报价单.xlsx"),
    (b"attachment; filename=\"" + "見積書.pdf".encode("utf-8") + b"\"", "見積書.pdf"),
    (b"attachment; filename=\"C:\\Users\\li\\scan.pdf\"", "scan.pdf"),
    (b"attachment", ""),
])
def test_attachment_filenames_are_decoded(disposition, filename):
    raw = (b"From: a@example.com\r\nSubject: f\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
           b"--B\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
           b"--B\r\nContent-Type: application/octet-stream\r\nContent-Disposition: " + disposition + b"\r\n\r\n"
           b"DATA\r\n--B--\r\n")
    mail = normalize(raw, received_at=AT)
    assert [a.filename for a in mail.attachments] == [filename]
    assert mail.text == "see attached"


RELATED_HTML = (
    b"From: Web Form <noreply@shop.example>\r\n"
    b"Reply-To: =?utf-8?B?" + base64.b64encode("李雷".encode()) + b"?= <Li.Lei@Example.cn>\r\n"
    b"To: Support <Support@Example.com>, \"Ops, Team\" <ops@example.com>\r\n"
    b"Cc: support@example.com, undisclosed-recipients:;\r\n"
    b"Delivered-To: support+TM-5.abcdefghijkl@example.com\r\n"
    b"X-Original-To: help@example.com\r\n"
    b"Subject: logo\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
    b"--B\r\nContent-Type: multipart/related; boundary=R\r\n\r\n"
    b"--R\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    b"<p onclick=\"steal()\">Our logo: <img src=\"cid:logo@shop\"> <img src=\"https://track.example/o.gif\"></p>"
    b"<script>alert(1)</script><a href=\"javascript:alert(2)\">click</a>\r\n"
    b"--R\r\nContent-Type: image/png\r\nContent-ID: <logo@shop>\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"iVBORw0KGgo=\r\n--R--\r\n"
    b"--B\r\nContent-Type: application/ms-tnef; name=winmail.dat\r\nContent-Disposition: attachment; "
    b"filename=winmail.dat\r\nContent-Transfer-Encoding: base64\r\n\r\neJ8+IgEG\r\n"
    b"--B--\r\n"
)


def test_parts_carry_metadata_and_content_and_inline_images_keep_their_content_id():
    mail = normalize(RELATED_HTML, received_at=AT)
    logo = base64.b64decode("iVBORw0KGgo=")
    assert mail.attachments == (
        MailPart("", "image/png", len(logo), "logo@shop", True),
        MailPart("winmail.dat", "application/ms-tnef", 6, None, False),
    )
    assert mail.attachments[0].data == logo
    assert mail.attachments[0].sha256 == hashlib.sha256(logo).hexdigest()
    assert "data" not in repr(mail.attachments[0])


def test_html_body_is_sanitized_and_kept_text_is_readable():
    mail = normalize(RELATED_HTML, received_at=AT)
    assert mail.text == "Our logo:\nclick"
    assert mail.html_sanitized == ('<p>Our logo: <img src="cid:logo@shop"> <img></p>'
                                   '<a rel="noopener noreferrer">click</a>')
    remote = normalize(RELATED_HTML, received_at=AT, allow_remote_images=True).html_sanitized
    assert '<img src="https://track.example/o.gif">' in remote and "script" not in remote
    assert normalize(single_part(b"x", b"plain only", b"text/plain"), received_at=AT).html_sanitized is None


def test_recipients_and_reply_to_are_lowercased_deduped_and_ordered():
    mail = normalize(RELATED_HTML, received_at=AT)
    assert mail.to_addresses == ("support@example.com", "ops@example.com",
                                 "support+tm-5.abcdefghijkl@example.com", "help@example.com")
    assert mail.reply_to == ("li.lei@example.cn",)
    assert (mail.from_email, mail.from_name) == ("noreply@shop.example", "Web Form")


def test_sender_from_reply_to_only_when_asked_and_only_for_one_valid_address():
    mail = normalize(RELATED_HTML, received_at=AT, sender_from_reply_to=True)
    assert (mail.from_email, mail.from_name) == ("li.lei@example.cn", "李雷")
    two = RELATED_HTML.replace(b"<Li.Lei@Example.cn>", b"<li@example.cn>, han@example.cn")
    assert normalize(two, received_at=AT, sender_from_reply_to=True).from_email == "noreply@shop.example"
    invalid = RELATED_HTML.replace(b"<Li.Lei@Example.cn>", b"<not-an-address>")
    mail = normalize(invalid, received_at=AT, sender_from_reply_to=True)
    assert (mail.from_email, mail.reply_to) == ("noreply@shop.example", ())


def test_reply_to_is_the_sender_only_when_configured_and_never_the_sender_itself_or_us():
    form = (b"From: Web form <forms@shop.example>\r\nReply-To: buyer@example.com\r\nSubject: hi\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n\r\nhi\r\n")
    assert (normalize(form, received_at=AT).from_email) == "forms@shop.example"
    assert (normalize(form, received_at=AT, sender_from_reply_to=True).from_email,
            normalize(form, received_at=AT, sender_from_reply_to=True).from_name) == ("buyer@example.com", "")
    ours = form.replace(b"buyer@example.com", b"Support@TicketMesh.test")
    assert normalize(ours, received_at=AT, sender_from_reply_to=True,
                     our_address="support@ticketmesh.test").from_email == "forms@shop.example"
    both = form.replace(b"buyer@example.com", b"forms@shop.example, support@ticketmesh.test")
    assert normalize(both, received_at=AT, sender_from_reply_to=True,
                     our_address="support@ticketmesh.test").from_email == "forms@shop.example"


def test_reply_text_is_the_new_part_and_text_keeps_everything():
    body = ("The fix worked, thanks!\r\n\r\nOn Tue, Jan 2, 2024 at 10:00 AM Support <support@example.com> wrote:\r\n"
            "> Please restart the router.\r\n").encode()
    mail = normalize(single_part(b"Re: router", body, b"text/plain; charset=utf-8"), received_at=AT)
    assert mail.reply_text == "The fix worked, thanks!"
    assert mail.text.endswith("> Please restart the router.")
    plain = normalize(single_part(b"x", b"just this", b"text/plain"), received_at=AT)
    assert plain.reply_text == plain.text == "just this"


def test_delivery_reports_are_parts_not_body():
    raw = (b"From: MAILER-DAEMON@mx.example.com\r\nSubject: Undelivered\r\n"
           b"Content-Type: multipart/report; report-type=delivery-status; boundary=D\r\n\r\n"
           b"--D\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
           b"--D\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.com\r\n\r\n"
           b"Final-Recipient: rfc822; gone@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
           b"--D--\r\n")
    mail = normalize(raw, received_at=AT)
    assert mail.text == "Your message could not be delivered."
    assert [a.content_type for a in mail.attachments] == ["message/delivery-status"]
    assert b"Status: 5.1.1" in mail.attachments[0].data


def test_broken_mime_never_raises_anything_but_rejection():
    # Every truncation and a few corruptions of a realistic multipart mail: a result or a rejection.
    seen_results = 0
    variants = [RELATED_HTML[:cut] for cut in range(0, len(RELATED_HTML), 7)]
    variants += [RELATED_HTML.replace(b"boundary=R", b"boundary=\"R"), RELATED_HTML.replace(b"base64", b"x-uuencode"),
                 RELATED_HTML.replace(b"--R--", b""), RELATED_HTML.replace(b"charset=utf-8", b"charset=\xff\xfe"),
                 RELATED_HTML.replace(b"filename=winmail.dat", b"filename*=bogus'%ZZ%"),
                 RELATED_HTML.replace(b"<logo@shop>", b"<" + b"x" * 5000 + b">"),
                 b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=A\r\n\r\n" +
                 b"--A\r\nContent-Type: multipart/mixed; boundary=A\r\n\r\n" * 60 + b"--A--\r\n"]
    for raw in variants:
        try:
            result = normalize(raw, received_at=AT)
        except MailRejected:
            continue
        assert isinstance(result, NormalizedMail)
        seen_results += 1
    assert seen_results > len(variants) // 2


def test_no_charset_label_makes_decoding_raise():
    # Labels are attacker-chosen: Python codec names that are not charsets (base64, zlib, idna,
    # unicode_escape, rot13, ...) must behave like unknown labels, not crash the caller.
    import encodings.aliases
    labels = set(encodings.aliases.aliases) | set(encodings.aliases.aliases.values())
    labels |= {"idna", "punycode", "rot13", "undefined", "unicode_escape", "utf-16", "utf-7", "x-foo", "*", "'"}
    for label in sorted(labels):
        for data in (b"\xff\xfeabc", b"plain", b"\x1b$B", b"+AGE-", b"\xe4\xbd", b"\\u12"):
            assert isinstance(decode_bytes(data, label), str)
        assert isinstance(decode_header_value(f"=?{label}?B?/w==?= =?{label}?Q?=FF?="), str)
    assert codec_for("base64") is None and codec_for("idna") is None and codec_for("GB2312") == "gb18030"


def test_raw_8bit_display_names_in_address_headers():
    raw = (b"From: " + "客服部".encode("gbk") + b" <kf@example.cn>\r\n"
           b"To: " + "技术支持".encode("utf-8") + b" <Support@Example.com>\r\nSubject: x\r\n\r\nbody\r\n")
    mail = normalize(raw, received_at=AT)
    assert (mail.from_name, mail.from_email, mail.to_addresses) == ("客服部", "kf@example.cn", ("support@example.com",))
    assert mail.charset_flags == ("header-8bit-guessed:gb18030", "header-8bit-guessed:utf-8")


# --- hostile shapes are refused before the stdlib parser runs ---------------------------------

def _nested_multiparts(depth: int, filler_lines: int) -> bytes:
    return (b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n"
            + b"".join(f"--b{i}\r\nContent-Type: multipart/mixed; boundary=b{i + 1}\r\n\r\n".encode()
                       for i in range(depth))
            + b"a line of text\r\n" * filler_lines)


def _parts(count: int) -> bytes:
    return (b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n"
            + b"--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n" * count + b"--x--\r\n")


def _header(name: str, size: int) -> bytes:
    value = b", ".join(f"u{i}@example.com".encode() for i in range(size // 16))
    return b"From: a@example.com\r\n" + name.encode() + b": " + value + b"\r\nSubject: hi\r\n\r\nbody\r\n"


HOSTILE_SHAPES = {
    "900 nested multiparts": (_nested_multiparts(900, 1000), "901 boundary declarations"),
    "40 nested multiparts over 200k lines": (_nested_multiparts(40, 200_000), "41 boundary declarations over"),
    "200 000 parts": (_parts(200_000), "200001 part delimiters"),
    "3 MB To header": (_header("To", 3_000_000), "header section over 524288 bytes"),
    "200 kB References header": (_header("References", 200_000), "header field References over"),
    "header folded over many lines": (
        b"From: a@example.com\r\nTo: x@example.com,\r\n" + b" y@example.com,\r\n" * 10_000 + b"\r\nbody",
        "header field (folded) over"),
    "a header section that never ends": (b"From: a@example.com\r\n" + b"X-Junk: y\r\n" * 60_000,
                                         "header section over"),
}


@pytest.mark.parametrize("raw, reason", HOSTILE_SHAPES.values(), ids=HOSTILE_SHAPES.keys())
def test_hostile_shapes_are_refused_before_parsing(raw, reason):
    with pytest.raises(MailRejected) as refused:
        check_shape(raw)
    assert reason in refused.value.reason
    with pytest.raises(MailRejected) as rejected:
        normalize(raw, received_at=AT)
    assert rejected.value.reason == refused.value.reason
    assert automatic.parse(raw) is None  # classify never sees it; normalize gives the reason


ORDINARY_SHAPES = {
    "a few nested multiparts with a large attachment": _nested_multiparts(6, 300_000),
    "an SQL dump full of -- comments": (
        b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n"
        b"Content-Type: text/plain\r\n\r\nsee attached\r\n--x\r\nContent-Type: text/x-sql\r\n"
        b"Content-Disposition: attachment; filename=dump.sql\r\n\r\n"
        + b"-- table row\r\nINSERT INTO t VALUES (1);\r\n" * 8000 + b"--x--\r\n"),
    "300 attachments": _parts(300),
    "a 40 kB References header": _header("References", 40_000),
}


@pytest.mark.parametrize("raw", ORDINARY_SHAPES.values(), ids=ORDINARY_SHAPES.keys())
def test_big_but_ordinary_shapes_pass_the_check(raw):
    check_shape(raw)
    assert normalize(raw, received_at=AT, parsed=automatic.parse(raw)).from_email == "a@example.com"


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.eml")), ids=lambda p: p.name)
def test_an_already_parsed_message_gives_the_same_result(path):
    raw = path.read_bytes()
    try:
        alone = normalize(raw, received_at=AT)
    except MailRejected as exc:
        with pytest.raises(MailRejected, match=re.escape(exc.reason)):
            normalize(raw, received_at=AT, parsed=automatic.parse(raw))
        return
    assert normalize(raw, received_at=AT, parsed=automatic.parse(raw)) == alone


def test_the_parsed_message_is_used_not_parsed_again():
    other = parse_message(b"From: b@example.com\r\nSubject: the parsed one\r\n\r\nbody\r\n")
    mail = normalize(b"From: a@example.com\r\nSubject: raw\r\n\r\nbody\r\n", received_at=AT, parsed=other)
    assert (mail.from_email, mail.subject) == ("b@example.com", "the parsed one")


# --- charset labels that are not labels -----------------------------------------------------

@pytest.mark.parametrize("label", ["\x00", "utf\x00-8", "a" * 500, "utf 8", "../../etc", "utf-8;x"])
def test_charset_labels_that_are_not_labels_are_unknown_not_a_crash(label):
    assert codec_for(label) is None
    if not any(ch.isspace() for ch in label):  # an encoded word's charset has no spaces
        assert decode_header_value(f"=?{label}?B?{b64('订单', 'utf-8')}?= ok") == "订单 ok"
    assert decode_bytes("订单".encode("gb18030"), label) == "订单"


def test_nul_charset_subject_with_references_is_classified_and_normalized():
    raw = (b"From: a@example.com\r\nSubject: =?\x00?B?" + base64.b64encode("自动回复".encode()) + b"?=\r\n"
           b"References: <x@y>\r\nContent-Type: text/plain; charset=\"\x00\"\r\n\r\n\xe8\xae\xa2\xe5\x8d\x95\r\n")
    parsed = automatic.parse(raw)
    assert automatic.classify(parsed, our_address="support@example.com").reason == "out-of-office-subject"
    mail = normalize(raw, received_at=AT, parsed=parsed)
    assert mail.text == "订单"
    assert all(flag.isprintable() for flag in mail.charset_flags), mail.charset_flags


# --- Message-IDs -----------------------------------------------------------------------------

@pytest.mark.parametrize("value, want", [
    ("<abc@example.com>", "abc@example.com"),
    ("  <abc@example.com> (comment)", "abc@example.com"),
    ("\r\n <abc@example.com>", "abc@example.com"),
    ("abc@example.com", "abc@example.com"),
    ("two words", None),
    ("", None),
    (None, None),
    ("<" + "a" * 999 + ">", None),
    ("<a\x00b@example.com>", None),
])
def test_message_id_of(value, want):
    assert message_id_of(value) == want


def test_message_ids_in_keeps_order_and_drops_over_long_ids():
    value = "<a@x>\r\n <b@x> junk <" + "c" * 999 + "> <d@x>"
    assert message_ids_in(value) == ("a@x", "b@x", "d@x")


def test_thread_candidates_stop_at_the_cap():
    references = "".join(f" <r{i}@example.com>" for i in range(MAX_THREAD_IDS + 300))
    raw = f"From: a@example.com\r\nReferences:{references}\r\nIn-Reply-To: <irt@x>\r\n\r\nhi\r\n".encode()
    mail = normalize(raw, received_at=AT)
    assert len(mail.references) == MAX_THREAD_IDS + 300
    assert len(mail.thread_candidates) == MAX_THREAD_IDS
    assert mail.thread_candidates[:2] == ("irt@x", f"r{MAX_THREAD_IDS + 299}@example.com")
