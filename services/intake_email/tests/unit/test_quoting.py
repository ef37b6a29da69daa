"""split_reply(): the customer's new words apart from quoted history, for the clients people use."""
import pytest

from services.intake_email.quoting import split_reply

# (client, text, expected reply, first line of the quoted part; None when nothing is quoted)
CASES = [
    ("gmail en",
     "Thanks, restarting fixed it.\n\nOn Tue, Jan 2, 2024 at 10:00 AM Support <support@example.com> wrote:\n\n"
     "> Please restart the router.\n> \n> Support",
     "Thanks, restarting fixed it.",
     "On Tue, Jan 2, 2024 at 10:00 AM Support <support@example.com> wrote:"),
    ("gmail en, attribution wrapped over two lines",
     "Still broken.\n\nOn Tue, Jan 2, 2024 at 10:00 AM Example Support Team <support+TM-12.abcdefghijkl@example.com>\n"
     "wrote:\n\n> Did you try turning it off and on?",
     "Still broken.",
     "On Tue, Jan 2, 2024 at 10:00 AM Example Support Team <support+TM-12.abcdefghijkl@example.com>"),
    ("apple mail with mobile signature",
     "Yes, order 12345.\n\nSent from my iPhone\n\nOn Jan 2, 2024, at 10:00, Support <support@example.com> wrote:\n\n"
     "> Which order?",
     "Yes, order 12345.",
     "Sent from my iPhone"),
    ("thunderbird without address",
     "Works now.\n\nOn 1/2/24 10:00, Support Team wrote:\n> Try again please.",
     "Works now.",
     "On 1/2/24 10:00, Support Team wrote:"),
    ("outlook desktop header block under a rule",
     "Hi,\n\nplease cancel it.\n\nBest regards\nJane\n\n________________________________\n"
     "From: Support <support@example.com>\nSent: Tuesday, January 2, 2024 10:00 AM\nTo: Jane <jane@example.org>\n"
     "Subject: RE: [#TM-12] order\n\nDear Jane, ...",
     "Hi,\n\nplease cancel it.\n\nBest regards\nJane",
     "________________________________"),
    ("outlook original message banner",
     "See the attached invoice.\n\n-----Original Message-----\nFrom: Support <support@example.com>\n"
     "Sent: Tuesday, January 2, 2024 10:00 AM\nSubject: invoice\n\nCould you send the invoice?",
     "See the attached invoice.",
     "-----Original Message-----"),
    ("outlook mobile",
     "OK\n\nGet Outlook for iOS\n________________________________\nFrom: Support <support@example.com>\n"
     "Sent: Tuesday, January 2, 2024 10:00:00 AM\nTo: me@example.org <me@example.org>\nSubject: order",
     "OK",
     "Get Outlook for iOS"),
    ("outlook header block without a rule",
     "Thanks.\n\nFrom: Support <support@example.com>\nDate: Tuesday, 2 January 2024 at 10:00\n"
     "To: Jane <jane@example.org>\nSubject: Re: order\n\nHello",
     "Thanks.",
     "From: Support <support@example.com>"),
    ("plain > quote under a name-only attribution",
     "That's right.\n\nJohn Doe <john@example.com> wrote:\n> Is it the blue model?\n> John",
     "That's right.",
     "John Doe <john@example.com> wrote:"),
    ("trailing > block without attribution",
     "Agreed.\n\n> Shall we ship on Monday?\n>\n> Ops",
     "Agreed.",
     "> Shall we ship on Monday?"),
    ("standard signature delimiter",
     "The app crashes on start.\n\n-- \nJohn Doe\nACME Corp\n+1 555 0100",
     "The app crashes on start.",
     "-- "),
    ("gmail zh",
     "好的，已经收到退款了，谢谢！\n\n张三 <zhangsan@example.cn> 于2024年1月2日周二 10:00写道：\n\n> 您好，退款已处理。",
     "好的，已经收到退款了，谢谢！",
     "张三 <zhangsan@example.cn> 于2024年1月2日周二 10:00写道："),
    ("apple mail / qq zh",
     "订单号是 12345。\n\n在 2024年1月2日 周二 10:00，客服 <kf@example.cn> 写道：\n\n> 请提供订单号。",
     "订单号是 12345。",
     "在 2024年1月2日 周二 10:00，客服 <kf@example.cn> 写道："),
    ("zh attribution wrapped over two lines",
     "问题还在。\n在 2024年1月2日 周二 上午10:00，客服中心 <kf@example.cn>\n写道：\n> 请重启设备。",
     "问题还在。",
     "在 2024年1月2日 周二 上午10:00，客服中心 <kf@example.cn>"),
    ("foxmail / qq banner",
     "已付款，请尽快发货。\n\n\n------------------ 原始邮件 ------------------\n发件人: \"客服\"<kf@example.cn>;\n"
     "发送时间: 2024年1月2日(星期二) 上午10:00\n收件人: \"张三\"<zs@example.cn>;\n主题: 回复：订单\n\n请付款。",
     "已付款，请尽快发货。",
     "------------------ 原始邮件 ------------------"),
    ("foxmail english banner with literal &nbsp;",
     "Please check again.\n\n------------------&nbsp;Original&nbsp;------------------\n"
     "From: \"Support\"<support@example.com>;\nDate: Tue, Jan 2, 2024 10:00 AM\nTo: \"me\"<me@example.org>;",
     "Please check again.",
     "------------------&nbsp;Original&nbsp;------------------"),
    ("163 / 126 banner",
     "发票已收到。\n\n-----原始邮件-----\n发件人:\"客服\" <kf@example.cn>\n发送时间:2024-01-02 10:00:00\n"
     "收件人:zs@163.com\n主题:发票",
     "发票已收到。",
     "-----原始邮件-----"),
    ("163 attribution with ascii colon",
     "收到，谢谢。\n\n在 2024-01-02 10:00:00，\"客服\" <kf@example.cn> 写道:\n> 已为您补发。",
     "收到，谢谢。",
     "在 2024-01-02 10:00:00，\"客服\" <kf@example.cn> 写道:"),
    ("outlook zh header block",
     "请帮忙处理。\n\n发件人: 客服 <kf@example.cn>\n发送时间: 2024年1月2日 10:00\n收件人: 张三 <zs@example.cn>\n"
     "主题: 回复: 订单问题\n\n您好",
     "请帮忙处理。",
     "发件人: 客服 <kf@example.cn>"),
    ("netease mail master replied message",
     "好的\n\n---- Replied Message ----\n| From | 客服<kf@example.cn> |\n| Date | 01/02/2024 10:00 |\n| Subject | 订单 |",
     "好的",
     "---- Replied Message ----"),
    ("mobile zh signature before the history",
     "收到\n\n发自我的iPhone\n\n------------------ 原始邮件 ------------------\n发件人: kf@example.cn",
     "收到",
     "发自我的iPhone"),
    ("huawei signature alone",
     "屏幕还是黑的。\n\n发自我的华为手机",
     "屏幕还是黑的。",
     "发自我的华为手机"),
    ("netease mail master signature",
     "请回电。\n\n发自网易邮箱大师",
     "请回电。",
     "发自网易邮箱大师"),
    # False-positive guards: nothing here is quoted history.
    ("customer writing 'I wrote:' mid-text",
     "Last week I wrote: please cancel my order. Nobody answered.\nStill waiting.",
     "Last week I wrote: please cancel my order. Nobody answered.\nStill waiting.",
     None),
    ("line starting with On and ending with wrote:, but no time or address",
     "Hello,\nOn Monday my colleague wrote:\nthe printer is broken. It still is.",
     "Hello,\nOn Monday my colleague wrote:\nthe printer is broken. It still is.",
     None),
    ("zh customer quoting themselves",
     "我在上一封邮件里写道：\n打印机坏了。\n现在还是坏的。",
     "我在上一封邮件里写道：\n打印机坏了。\n现在还是坏的。",
     None),
    ("banner mid-sentence",
     "Please read the -----Original Message----- part below, it explains everything.\nThanks",
     "Please read the -----Original Message----- part below, it explains everything.\nThanks",
     None),
    ("a From: line that is not a header block",
     "From: my side everything is fine.\nTo be honest, the issue is on your server.",
     "From: my side everything is fine.\nTo be honest, the issue is on your server.",
     None),
    ("inline answers between quotes",
     "> Which model?\nThe blue one.\n> Since when?\nSince Monday.",
     "> Which model?\nThe blue one.\n> Since when?\nSince Monday.",
     None),
    ("phone mentioned in a sentence",
     "The photo was sent from my iPhone yesterday.\nIt is blurry.",
     "The photo was sent from my iPhone yesterday.\nIt is blurry.",
     None),
    ("-- divider in a long mail is not a signature",
     "Part one\n--\n" + "\n".join(f"step {n}" for n in range(1, 21)),
     "Part one\n--\n" + "\n".join(f"step {n}" for n in range(1, 21)),
     None),
    # Everything looks quoted: the reply is the whole text, never empty.
    ("all quoted",
     "> everything here\n> is quoted",
     "> everything here\n> is quoted",
     None),
    ("forward with nothing written above",
     "-----Original Message-----\nFrom: Customer <c@example.org>\nSent: Tuesday\nSubject: help\n\nMy order is late.",
     "-----Original Message-----\nFrom: Customer <c@example.org>\nSent: Tuesday\nSubject: help\n\nMy order is late.",
     None),
]


@pytest.mark.parametrize("text, reply, quoted_first_line", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_split_reply(text, reply, quoted_first_line):
    new, quoted = split_reply(text)
    assert new == reply
    if quoted_first_line is None:
        assert quoted == ""
    else:
        assert quoted.split("\n", 1)[0] == quoted_first_line
        assert text.startswith(new) and text.rstrip().endswith(quoted.rstrip())


def test_empty_text():
    assert split_reply("") == ("", "")


def test_long_lines_stay_fast():
    # A pathological body (no newlines, markers everywhere) must not trigger regex backtracking.
    import time
    text = ("On " + "x " * 5000 + " wrote" + "写道" * 2000 + "-" * 5000) * 3
    started = time.perf_counter()
    split_reply(text)
    split_reply("\n".join(["On 1 2 10:00 a@b wrote"] * 5000))
    split_reply("\n".join(["--", "Sent from my iPhone"] * 5000))
    assert time.perf_counter() - started < 0.5


# The customer's words must survive: each of these was once cut away as "history".
KEPT_WHOLE = {
    "inline answers below an attribution": (
        "Hi, answers inline.\n\nOn Tue, Jan 2, 2024 at 10:00 AM Support <support@example.com> wrote:\n"
        "> Which model do you have?\nThe blue one, model X2.\n> Since when?\nSince Monday.\n"),
    "inline answers below a zh attribution": (
        "见下方回答。\n\n在 2024年1月2日 周二 10:00，客服 <kf@example.cn> 写道：\n> 什么型号？\nX2 蓝色。\n> 什么时候开始的？\n周一。"),
    "inline answers below a wrapped attribution": (
        "See below.\n\nOn Tue, Jan 2, 2024 at 10:00 AM Support Team <support@example.com>\nwrote:\n"
        "> Order number?\n12345\n"),
    "an itinerary": "Please change my flight:\n\nFrom: PEK\nTo: SFO\nDate: 12 May 10:30\nFlight: CA985\n\nThanks, Li",
    "a zh itinerary": "请帮我改签：\n\n发件人：北京\n收件人：上海\n日期：5月12日 10:30\n\n谢谢",
    "a -- divider with a long part after it": "Part one\n\n--\n\n" + "\n".join(f"line {n}" for n in range(1, 8)),
    "a -- divider not near the end": (
        "Steps:\n--\nfirst\n\n\n\n\n\n\n\n\nsecond"),
    "a -- with text after it on the line": "It broke -- again.\n-- not a delimiter\nJohn",
    "Sent from my warehouse": "The parcel was\nSent from my warehouse\non Monday and never arrived.",
    "Sent from my warehouse at the end": "The parcel is late. It was\nSent from my warehouse",
    "a sentence starting like a device phrase": "Sent from my iPhone, the photo is attached.\nPlease check.",
    "发自我的仓库": "货物\n发自我的仓库",
}


@pytest.mark.parametrize("text", KEPT_WHOLE.values(), ids=KEPT_WHOLE.keys())
def test_customer_text_is_never_cut(text):
    assert split_reply(text) == (text, "")


SIGNATURES = [
    "Sent from my iPhone", "Sent from my iPad", "Sent from my iPhone 15 Pro Max", "Sent from my Android phone",
    "Sent from my Samsung Galaxy smartphone.", "Sent from my Huawei phone", "Sent from my HUAWEI Mate 60 Pro",
    "Sent from my Galaxy", "Sent from Mail for Windows", "Sent from Outlook", "Get Outlook for Android",
    "Sent from Yahoo Mail on Android", "发自我的iPhone", "发自我的 iPad", "发自我的华为手机", "发自我的荣耀手机",
    "发自我的小米手机", "发自我的手机", "發自我的 iPhone", "从我的 iPhone 发送", "发自网易邮箱大师", "发自网易邮箱手机版",
    "发自QQ邮箱", "-- ", "--",
]


@pytest.mark.parametrize("signature", SIGNATURES)
def test_known_signatures_are_cut(signature):
    text = f"My order 12345 is late.\n\n{signature}\nJohn Doe"
    assert split_reply(text) == ("My order 12345 is late.", f"{signature}\nJohn Doe".strip("\n"))


def test_a_dash_signature_of_six_lines_is_cut_and_seven_is_not():
    six = "Order is late.\n-- \n" + "\n".join(f"sig {n}" for n in range(6))
    seven = "Order is late.\n-- \n" + "\n".join(f"sig {n}" for n in range(7))
    assert split_reply(six)[0] == "Order is late."
    assert split_reply(seven) == (seven, "")
