"""The original sender of forwarded mail, as real clients write it, and who the customer is."""
import pytest

from services.intake_email.forwarding import Customer, OriginalSender, customer_of, original_sender

GMAIL = """FYI, customer below.

---------- Forwarded message ---------
From: Zhang Wei <zhang.wei@example.com>
Date: Mon, 2 Mar 2026 at 10:00
Subject: Invoice title wrong
To: <li.na@agents.ticketmesh.test>

Hello, my invoice title is wrong.
"""

APPLE = """Please handle.

Begin forwarded message:

From: Sam Customer <Sam@Example.org>
Subject: Cannot log in
Date: 2 March 2026 at 10:00:00 GMT+8
To: sam.taylor@agents.ticketmesh.test

I cannot log in.
"""

OUTLOOK = """Forwarding this one.

-----Original Message-----
From: Wang, Lei [mailto:wang.lei@corp.example.com]
Sent: Monday, March 2, 2026 10:00 AM
To: Li Na <li.na@agents.ticketmesh.test>
Subject: Order 12345

Where is my order?
"""

OUTLOOK_NO_SEPARATOR = """see below

From: Jane Roe <jane.roe@example.net>
Sent: Monday, March 2, 2026 10:00 AM
To: Li Na <li.na@agents.ticketmesh.test>
Subject: Refund
"""

FOXMAIL = """请处理一下这个客户的问题。

-------- 转发邮件信息 --------
发件人："张三" <zhangsan@b.cn>
发送日期：2026-03-02 10:00
收件人："李娜" <li.na@agents.ticketmesh.test>
主题：发票抬头错误

你好，发票抬头写错了。
"""

QQ = """转给你

------------------ 原始邮件 ------------------
发件人: "张三"<a@b.cn>;
发送时间: 2026年3月2日(星期一) 上午10:00
收件人: "李娜"<li.na@agents.ticketmesh.test>;
主题: 订单还没到
"""

QQ_PLAIN_NAME = """------------------ 原始邮件 ------------------
发件人: 张三 <a@b.cn>
发送时间: 2026年3月2日
"""

CHINESE_OUTLOOK = """麻烦跟进。

发件人: 王芳 <wang.fang@customer.cn>
发送时间: 2026年3月2日 10:00
收件人: 李娜
主题: 退款
"""

QUOTED_FORWARD = """> ---------- Forwarded message ---------
> From: Quoted Person <quoted@example.com>
> Date: today
"""

NESTED = """---------- Forwarded message ---------
From: Zhang Wei <zhang.wei@example.com>
Date: Mon, 2 Mar 2026

see my colleague's mail

---------- Forwarded message ---------
From: Colleague <colleague@example.com>
Date: Sun, 1 Mar 2026
"""


@pytest.mark.parametrize("text,expected", [
    (GMAIL, OriginalSender("zhang.wei@example.com", "Zhang Wei")),
    (APPLE, OriginalSender("sam@example.org", "Sam Customer")),
    (OUTLOOK, OriginalSender("wang.lei@corp.example.com", "Wang, Lei")),
    (OUTLOOK_NO_SEPARATOR, OriginalSender("jane.roe@example.net", "Jane Roe")),
    (FOXMAIL, OriginalSender("zhangsan@b.cn", "张三")),
    (QQ, OriginalSender("a@b.cn", "张三")),
    (QQ_PLAIN_NAME, OriginalSender("a@b.cn", "张三")),
    (CHINESE_OUTLOOK, OriginalSender("wang.fang@customer.cn", "王芳")),
    (QUOTED_FORWARD, OriginalSender("quoted@example.com", "Quoted Person")),
    (NESTED, OriginalSender("zhang.wei@example.com", "Zhang Wei")),  # the top block is the forwarded one
], ids=["gmail", "apple", "outlook", "outlook-no-separator", "foxmail", "qq", "qq-plain-name",
        "chinese-outlook", "quoted", "nested"])
def test_original_sender(text, expected):
    assert original_sender(text) == expected


@pytest.mark.parametrize("text", [
    "Hello, I have a question about my invoice.",
    "From: the start of a sentence, not a header block\nthanks",
    "你好，发件人：我自己。没有转发。",
    "---------- Forwarded message ---------\nno header block here\n",
])
def test_no_forwarded_block(text):
    assert original_sender(text) is None


AGENTS = {"li.na@agents.ticketmesh.test": "li.na", "chen.wei@agents.ticketmesh.test": "chen.wei"}
OURS = "support@ticketmesh.test"


def who(*, from_email="li.na@agents.ticketmesh.test", from_name="李娜", text=FOXMAIL):
    return customer_of(from_email=from_email, from_name=from_name, text=text, agents_by_email=AGENTS,
                       our_address=OURS)


def test_agent_forwarding_files_for_the_original_customer():
    assert who() == Customer("zhangsan@b.cn", "张三", forwarded_by="li.na")
    assert who(from_email="Li.Na@Agents.Ticketmesh.test") == Customer("zhangsan@b.cn", "张三", forwarded_by="li.na")


def test_a_stranger_forwarding_stays_the_customer():
    assert who(from_email="someone@example.com", from_name="Someone") == Customer("someone@example.com", "Someone")


def test_an_agent_forwarding_an_agents_mail_or_ours_is_their_own_mail():
    internal = "---------- Forwarded message ---------\nFrom: 陈伟 <chen.wei@agents.ticketmesh.test>\n"
    assert who(text=internal) == Customer("li.na@agents.ticketmesh.test", "李娜")
    assert who(text=f"-----Original Message-----\nFrom: {OURS}\n") == Customer("li.na@agents.ticketmesh.test", "李娜")




def test_an_over_long_original_address_is_no_original_sender_and_a_long_name_is_cut():
    long_address = "a" * 330 + "@example.com"
    text = f"---------- Forwarded message ---------\nFrom: Someone <{long_address}>\nDate: today\n"
    assert original_sender(text) is None
    assert who(text=text) == Customer("li.na@agents.ticketmesh.test", "李娜")  # the agent's own mail
    name = "N" * 500
    found = original_sender(f"---------- Forwarded message ---------\nFrom: {name} <a@example.com>\n")
    assert found == OriginalSender("a@example.com", "N" * 200)
