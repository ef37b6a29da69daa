"""normalize(): real-world encodings in, ticket fields out; bad mail is a rejection, never a crash."""
import base64
from datetime import datetime, timezone

import pytest

from services.intake_email.normalize import MailRejected, decode_header_value, guess_language, normalize

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
    assert mail.attachments == ("日志.txt", "message/rfc822")


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
    assert (mail.text, mail.attachments) == ("", ("invoice.pdf",))
