"""devenv.smtp_sink: the notifier's stand-in inbox must keep and show Chinese mail correctly."""
from __future__ import annotations

from email.message import EmailMessage

import aiohttp
import aiosmtplib
import pytest

from devenv.smtp_sink import SmtpSink
from shared.testing.asyncio_helpers import free_port


async def test_sink_stores_and_shows_chinese_mail(tmp_path):
    smtp_port, web_port = free_port(), free_port()
    mail = EmailMessage()
    mail["From"] = "客服 <support@ticketmesh.test>"
    mail["To"] = "张伟 <zhang.wei@example.com>"
    mail["Subject"] = "[#TM-10001] 我们已收到您的请求"
    mail["Auto-Submitted"] = "auto-replied"
    mail.set_content("张伟，您好：\n工单号为 TM-10001。")
    async with SmtpSink(tmp_path / "outbox", smtp_port=smtp_port, web_port=web_port) as sink:
        await aiosmtplib.send(mail, hostname="127.0.0.1", port=smtp_port,
                              recipients=["zhang.wei@example.com", "audit@example.com"])
        async with aiohttp.ClientSession(f"http://127.0.0.1:{web_port}") as http:
            listing = await (await http.get("/")).text()
            api = await (await http.get("/api/messages")).json()
            page = await (await http.get(f"/messages/{api[0]['id']}")).text()
            escape_attempt = await http.get("/messages/..%2F..%2Fetc%2Fpasswd")

    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1
    (stored,) = sink.messages()
    assert stored.envelope_to == ["zhang.wei@example.com", "audit@example.com"]
    assert "[#TM-10001] 我们已收到您的请求" in listing and "张伟 &lt;zhang.wei@example.com&gt;" in listing
    assert api[0]["subject"] == "[#TM-10001] 我们已收到您的请求"
    assert api[0]["text"] == "张伟，您好：\n工单号为 TM-10001。\n"
    assert api[0]["headers"]["Auto-Submitted"] == "auto-replied"
    assert "工单号为 TM-10001。" in page
    assert escape_attempt.status == 404


def test_port_zero_is_refused_up_front(tmp_path):
    with pytest.raises(ValueError, match="explicit SMTP port"):
        SmtpSink(tmp_path, smtp_port=0)
