"""Separate the new part of a mail from quoted history and signatures. Pure: text in, text out.

Mail clients mark the start of the history each in their own way; we recognise, on a line of
its own (never mid-sentence):

- attribution lines: Gmail/Apple/Thunderbird "On <date>, <name> wrote:" (also wrapped over two
  lines), and the Chinese forms "在 2024年1月2日 周二 10:00，张三 <a@b.cn> 写道：",
  "张三 <a@b.cn> 于2024年1月2日周二 10:00写道：". To tell them from a customer writing
  "On Monday I wrote:", an attribution must carry a time (10:00) or an address (@);
- banners: "-----Original Message-----" (Outlook), "-----原始邮件-----" (163/126, Outlook zh),
  "------------------ 原始邮件 ------------------" and "------------------ Original ------------------"
  (Foxmail/QQ, also with a literal "&nbsp;"), "---- Replied Message ----" (NetEase Mail Master);
- the Outlook header block: a "From:"/"发件人：" line *carrying an email address* followed within
  a few lines by at least two of "Sent:"/"Date:"/"To:"/"Cc:"/"Subject:" (or
  发送时间/时间/日期/收件人/抄送/主题), with the "________" rule Outlook puts above it (without the
  address, "From: PEK / To: SFO / Date: 12 May" is an itinerary, not history);
- a trailing block of ">" lines (with the "… wrote:" line right above it, whatever its form);
- signatures: the RFC 3676 "-- " delimiter (or "--", as tidied text has it) only among the last
  :data:`DASH_SIGNATURE_WINDOW` lines with at most :data:`DASH_SIGNATURE_MAX_LINES` after it;
  and, as whole lines, the phrases mail apps append: "Sent from my iPhone" (and the other known
  devices), "Get Outlook for iOS", "发自我的iPhone", "发自我的华为手机", "发自网易邮箱大师", ...
  A signature counts only near the end of the text (or right before history).

Conservative by design: the history starts at the first line that is surely a marker; when
nothing would be left of the reply, the reply is the whole text; and when the customer answered
inline (unquoted lines below the quoted lines after an "… wrote:" line), nothing is cut.
"""
from __future__ import annotations

import re

# A signature is believed only when at most this many non-blank lines follow it (to the end or
# to the history below it): a real signature is short.
SIGNATURE_MAX_LINES = 12
MARKER_MAX_CHARS = 400  # a longer line is prose, not a marker
HEADER_BLOCK_WINDOW = 8  # lines after "From:" searched for the rest of an Outlook header block
DASH_SIGNATURE_WINDOW = 8  # a "-- " delimiter is believed only among the text's last lines...
DASH_SIGNATURE_MAX_LINES = 6  # ...with at most this many non-blank lines after it

_BANNER = re.compile(
    r"[-—–_=]{2,}\s*(?:original message|original|replied message|原始邮件|原始郵件|邮件原件|原邮件|"
    r"回复的原邮件|回覆的原郵件)\s*[-—–_=]{2,}",
    re.IGNORECASE)
_ATTRIBUTION_EN = re.compile(
    r"(?:on|am|le|el|il|op|em)\s.{4,350}?\s(?:wrote|schrieb|a écrit|escribió|ha scritto|schreef|escreveu)\s?:",
    re.IGNORECASE)
_WROTE_END = re.compile(r"(?:wrote|schrieb|a écrit|escribió|ha scritto|schreef|escreveu|写道|寫道)\s?[:：]$",
                        re.IGNORECASE)
_ATTRIBUTION_ZH = re.compile(r".{2,350}?(?:写道|寫道)\s*[：:]")
_TIME = re.compile(r"\d{1,2}\s?[:：]\s?\d{2}")
_HEADER_FROM = re.compile(r"\*?(?:from|发件人|發件人|寄件者|寄件人|von|de)\*?\s*[:：]", re.IGNORECASE)
_HEADER_OTHER = re.compile(
    r"\*?(sent|date|to|cc|subject|发送时间|發送時間|时间|時間|日期|收件人|收件者|抄送|副本|主题|主題|主旨|"
    r"寄件日期|gesendet|datum|an|betreff|envoyé|à|objet)\*?\s*[:：]", re.IGNORECASE)
_RULE = re.compile(r"_{8,}|[-—]{20,}")
# An address on a header block's From line: a@b.c, or <…@…> (Outlook's [mailto:a@b.c] included).
_HEADER_ADDRESS = re.compile(r"[^\s<>\[\]()\"'@:：;,]+@[^\s<>\[\]()\"'@:：;,]+\.[^\s<>\[\]()\"'@:：;,]+|<[^<>\s]+@[^<>\s]+>")
# The devices and apps whose names mail apps append ("Sent from my <device>"); a model may follow
# a brand ("iPhone 15 Pro", "HUAWEI Mate 60"), but no other word: "Sent from my warehouse" is prose.
_MODEL = r"(?:\s(?:\d{1,4}[a-z]{0,3}|[a-z]{1,4}\d{1,4}[a-z]{0,3}|pro|max|plus|mini|ultra|lite|note|mate|se|fold|flip|xl|s|x|t))"
_DEVICE = (
    r"(?:iphone|ipad|ipod(?:\stouch)?|apple\swatch|huawei|honor|xiaomi|redmi|oppo|vivo|oneplus|meizu|(?:google\s)?pixel"
    r"|(?:samsung\s)?galaxy|samsung|nokia|motorola|sony\sxperia|blackberry)" + _MODEL + r"{0,3}"
    r"(?:\s(?:smartphone|phone|mobile|device|tablet))?"
    r"|android(?:\s(?:phone|device|tablet|smartphone))?|windows\sphone|mobile(?:\s(?:device|phone))?"
    r"|phone|smartphone|tablet")
_ZH_DEVICE = (
    r"(?:\s?(?:iphone|ipad|apple\swatch)"
    r"|(?:华为|荣耀|小米|红米|三星|魅族|一加|vivo|oppo|huawei|honor|安卓|android)?\s?(?:手机|平板)"
    r"|\s?(?:华为|荣耀|小米|红米|三星|huawei|honor)\s?[a-z]{0,6}\s?\d{0,4}\s?(?:pro|max|plus)?)")
_SIGNATURE = re.compile(
    r"(?:sent\sfrom\smy\s(?:" + _DEVICE + r")"
    r"|sent\sfrom\s(?:mail|outlook|yahoo\smail)(?:\s(?:for|on)\s(?:windows(?:\s1[01])?|ios|android|iphone|ipad|mac))?"
    r"|get\soutlook\sfor\s(?:ios|android)"
    r"|(?:发自|發自|来自|來自|发送自)我的" + _ZH_DEVICE +
    r"|从我的\s?(?:iphone|ipad)\s?发送|從我的\s?(?:iphone|ipad)\s?傳送"
    r"|发自网易邮箱(?:大师|手机版)|发自\s?qq\s?邮箱(?:手机版|app)?)\.?",
    re.IGNORECASE)


def split_reply(text: str) -> tuple[str, str]:
    """``(new part, quoted history including signature)``; ``(text, "")`` when nothing is quoted."""
    if not text:
        return text, ""
    lines = text.split("\n")
    cut = _first_history_line(lines)
    if cut is not None and _answered_inline(lines, cut):
        return text, ""
    cut = _signature_before(lines, cut)
    if cut is None:
        return text, ""
    reply = "\n".join(lines[:cut]).rstrip()
    if not reply.strip():
        return text, ""
    return reply, "\n".join(lines[cut:]).strip("\n")


def _clean(line: str) -> str:
    if "&nbsp;" in line:
        line = line.replace("&nbsp;", " ")
    return line.replace("\u00a0", " ").replace("\u3000", " ").strip()


def _is_quoted(line: str) -> bool:
    return line.lstrip().startswith(">")


def _first_history_line(lines: list[str]) -> int | None:
    """Index of the first line of quoted history (banner, attribution, header block, > block)."""
    for index, raw in enumerate(lines):
        line = _clean(raw)
        if not line or len(line) > MARKER_MAX_CHARS or line.startswith(">"):
            continue
        if _is_banner(line) or _is_attribution(line):
            return index
        if _is_header_block(lines, index, line):
            rule = _previous_nonblank(lines, index)
            return rule if rule is not None and _RULE.fullmatch(_clean(lines[rule])) else index
        if index + 1 < len(lines) and _is_wrapped_attribution(line, _clean(lines[index + 1])):
            return index
    return _trailing_quote_block(lines)


def _answered_inline(lines: list[str], cut: int) -> bool:
    """An "… wrote:" line above quoted lines with the customer's own unquoted lines below them:
    an interleaved reply, where cutting at the attribution would drop the answers."""
    line = _clean(lines[cut])
    following = _clean(lines[cut + 1]) if cut + 1 < len(lines) else ""
    if not (_WROTE_END.search(line) or _is_attribution(line) or _is_wrapped_attribution(line, following)):
        return False
    quoted = False
    for raw in lines[cut + 1:]:
        if _is_quoted(raw):
            quoted = True
        elif quoted and raw.strip():
            return True
    return False


def _is_banner(line: str) -> bool:
    return line[0] in "-—–_=" and _BANNER.fullmatch(line) is not None


def _is_attribution(line: str) -> bool:
    if not line.endswith((":", "：")):
        return False
    if "写道" in line or "寫道" in line:
        return _ATTRIBUTION_ZH.fullmatch(line) is not None and bool(_TIME.search(line) or "@" in line)
    return _ATTRIBUTION_EN.fullmatch(line) is not None and bool(_TIME.search(line) or "@" in line)


def _is_wrapped_attribution(line: str, following: str) -> bool:
    # Gmail wraps a long "On … <address>" line before "wrote:"; Chinese clients before "写道：".
    if line.endswith((":", "：")) or not _WROTE_END.search(following) or len(following) > 120:
        return False
    if _is_attribution(following):  # the line above is the end of the reply, not half a marker
        return False
    return _is_attribution(f"{line} {following}")


def _is_header_block(lines: list[str], index: int, line: str) -> bool:
    if not _HEADER_FROM.match(line) or not _HEADER_ADDRESS.search(line):
        return False
    keys: set[str] = set()
    for raw in lines[index + 1:index + 1 + HEADER_BLOCK_WINDOW]:
        found = _HEADER_OTHER.match(_clean(raw))
        if found:
            keys.add(found.group(1).lower())
    return len(keys) >= 2


def _trailing_quote_block(lines: list[str]) -> int | None:
    end = len(lines) - 1
    while end >= 0 and not lines[end].strip():
        end -= 1
    if end < 0 or not _is_quoted(lines[end]):
        return None
    start = end
    while start > 0 and (_is_quoted(lines[start - 1]) or not lines[start - 1].strip()):
        start -= 1
    while not lines[start].strip():
        start += 1
    above = _previous_nonblank(lines, start)
    if above is not None:
        line = _clean(lines[above])
        if len(line) <= MARKER_MAX_CHARS and _WROTE_END.search(line):
            return above
    return start


def _signature_before(lines: list[str], history: int | None) -> int | None:
    """The signature's first line when one sits right before the history (or ends the text)."""
    stop = len(lines) if history is None else history
    last = _previous_nonblank(lines, stop)
    for index in range(stop):
        if _is_dash_delimiter(lines[index]):
            if last is not None and last - index < DASH_SIGNATURE_WINDOW \
                    and _short_tail(lines, index + 1, stop, DASH_SIGNATURE_MAX_LINES):
                return index
            continue
        line = _clean(lines[index])
        if not line or line.startswith(">") or not _is_signature(line):
            continue
        if _short_tail(lines, index + 1, stop, SIGNATURE_MAX_LINES):
            return index
    return history


def _short_tail(lines: list[str], start: int, stop: int, most: int) -> bool:
    # Counting stops early: a text of a thousand "--" lines must not cost a million steps.
    count = 0
    for index in range(start, stop):
        if lines[index].strip():
            count += 1
            if count > most:
                return False
    return True


def _is_dash_delimiter(raw: str) -> bool:
    """RFC 3676's "-- " on a line of its own ("--" once trailing spaces are tidied away)."""
    return raw.rstrip("\r") in ("--", "-- ")


def _is_signature(line: str) -> bool:
    return len(line) <= 60 and _SIGNATURE.fullmatch(line) is not None


def _previous_nonblank(lines: list[str], index: int) -> int | None:
    for back in range(index - 1, -1, -1):
        if lines[back].strip():
            return back
    return None
