"""Ticket classification: built-in signals, then ordered rules → priority, skills, tags, category, group.

Rules come from a YAML file (``deploy/config/routing.yaml`` by default)::

    defaults:
      skills: [general]              # when no rule names a skill
      priority: P3                   # when no rule sets a priority
      phone_callback_priority: P2    # missed calls / voicemails wanting a call back
    signals:
      complaint_words: [差评]         # added to the built-in complaint lexicon
      complaint_patterns: ['不退.{0,8}曝光']  # regexes, added too
      repeat_contact_tickets: 2      # recent tickets (this one excluded) that make a repeat contact
    rules:
      - name: complaint
        when:                        # every condition given must hold; each lists alternatives
          channel: [email, chat]     # email / chat / phone
          mailbox: [vip]             # source["mailbox"] (email intake's mailbox name)
          queue: [hotline-vip]       # source["queue"] or source["line"] (phone)
          sender: [boss@example.com] # exact address
          domain: [example.com]      # the sender's domain or any subdomain of it
          tier: [vip]                # customer tier; no tier is "standard"
          language: [zh]             # the ticket's language (given or detected)
          signal: [complaint_risk]   # a built-in signal is present
          keywords: [投诉, lawyer]    # case-insensitive
          regex: ['订单号?\\s*\\d{8}'] # case-insensitive, searched like keywords
          fields: [subject, text]    # where keywords and regexes look (default both)
        then:
          priority: P1               # the most urgent among matching rules wins
          skills: [complaints]       # required; accumulate
          preferred_skills: [senior] # accumulate; a bonus for routing, not a filter
          tags: [complaint]          # accumulate
          category: complaint        # the first matching rule that sets one wins
          group: escalations         # the first matching rule that sets one wins
        stop: false                  # true: later rules are not evaluated
    routing: {...}                   # read by routing, ignored here

Built-in signals are computed before the rules, so a rule can act on them (``signal:``), and
each present signal is also a tag:

* ``complaint_risk``: a complaint, legal or publicity threat, or a refund threat, in Chinese
  (Simplified or Traditional) or English: 投诉, 12315, 律师, 曝光, 媒体, "lawyer", "chargeback",
  "dispute with my bank", "go to the media", 要求退款否则投诉 ...
* ``repeat_contact``: the customer sent ``repeat_contact_tickets`` or more other tickets recently.
* ``repeat_complaint``: a complaint risk from a customer who already complained recently.

Matching: text is compared case-insensitively after Unicode NFKC (full-width ``ＶＩＰ`` is
``vip``) and with common Traditional characters read as Simplified, so ``投訴`` matches the
keyword ``投诉`` (and a Traditional keyword matches Simplified text). A keyword with CJK
characters matches as a substring (Chinese has no spaces between words); a Latin keyword must
start at a word boundary, so ``error`` matches "errors" but ``charge`` does not match
"discharge". Regexes see the same folded text; a regex that does not compile is a load error
naming the rule.

Everything is compiled at load. Per ticket, every distinct keyword (of all rules and the
complaint lexicon) costs one substring test over subject and text together, and its regex runs
only where that test hits; an all-ASCII ticket skips the Chinese keywords. A regex that starts
with plain text is faster than one starting with ``\b`` or a group. Nothing here touches the network or the clock; :func:`load_rules` reads one
file, :func:`rules_file` gives a :class:`~shared.reloading.ReloadingFile` of it.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from services.dispatcher.customers import NO_HISTORY, CustomerHistory
from shared.config_files import ConfigFileError, describe_validation_error, read_yaml, repeated_names
from shared.reloading import DEFAULT_CHECK_INTERVAL, ReloadingFile

Priority = Literal["P1", "P2", "P3", "P4"]
PRIORITIES = ("P1", "P2", "P3", "P4")  # most urgent first
CHANNELS = ("email", "chat", "phone")
TEXT_FIELDS = ("subject", "text")

COMPLAINT_RISK = "complaint_risk"
REPEAT_CONTACT = "repeat_contact"
REPEAT_COMPLAINT = "repeat_complaint"
SIGNALS = (COMPLAINT_RISK, REPEAT_CONTACT, REPEAT_COMPLAINT)
SignalName = Literal["complaint_risk", "repeat_contact", "repeat_complaint"]
STANDARD_TIER = "standard"

# Only the head of a long body is scanned: the customer's own words come first, quoted history
# and signatures later; a 200 kB body should not cost a regex pass per keyword.
TEXT_SCAN_LIMIT = 20_000
LANGUAGE_SAMPLE_LIMIT = 5_000

CALLBACK_TAG = "callback"

# The built-in complaint lexicon. Latin words match at a word start ("lawyer" matches
# "lawyers"); write them in Simplified, Traditional text is folded to it.
BUILTIN_COMPLAINT_WORDS = (
    # Chinese: complaint channels and bodies, lawyers and courts, publicity, bank disputes.
    "投诉", "12315", "消协", "消费者协会", "工商局", "市场监管", "黑猫投诉", "维权",
    "律师", "律师函", "起诉", "法院", "诉讼", "报警", "举报",
    "曝光", "媒体", "记者", "电视台", "发微博", "上热搜",
    "拒付", "银行申诉", "信用卡争议", "欺诈", "诈骗", "骗子", "给差评", "打差评",
    # English
    "complaint", "lawyer", "attorney", "solicitor", "legal action", "lawsuit", "take you to court",
    "small claims", "ombudsman", "consumer protection", "trading standards", "better business bureau",
    "chargeback", "charge back", "dispute with my bank", "dispute the charge", "dispute this charge",
    "go to the media", "go to the press", "contact the media", "contact the press", "the newspapers",
    "social media", "report you", "scam", "fraud",
)
# Refund threats and word forms a keyword would over- or under-match ("sue" must not be "suede"),
# each with the substrings one of which it needs (a cheap test before the regex runs). Chinese
# refund threats ("要求退款否则投诉") are caught by the lexicon's 投诉/曝光/起诉/差评 words.
BUILTIN_COMPLAINT_PATTERNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (r"\b(sue|sued|suing)\b", ("sue", "suing")),
    (r"\brefund\b.{0,60}\bor (else|i will|i'll|i am going to|i'm going to)\b", ("refund",)),
    (r"\b(unless|if)\b.{0,40}\brefund.{0,60}\b(i will|i'll|i am going to|i'm going to)\b", ("refund",)),
)

_CJK_CHARS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002a6df"
_CJK = re.compile(f"[{_CJK_CHARS}]")
_LATIN_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
# Not words of the writer's language: links, addresses, quoted lines of an earlier mail.
_QUOTED_LINE = re.compile(r"^[ \t]*>.*$", re.MULTILINE)
_CJK_RUN = re.compile(f"[{_CJK_CHARS}]+")

# Common Traditional characters and their Simplified forms (one-to-one), enough for the words
# support tickets use. Text and keywords are both folded, so either script matches the other.
_TRAD_SIMP = (
    "訴诉師师體体錯错誤误無无號号帳账賬账單单費费發发開开關关閉闭機机電电話话網网絡络線线連连"
    "問问題题務务買买賣卖貨货價价錢钱銀银個个們们這这還还請请謝谢對对為为與与來来時时間间會会"
    "員员過过後后麼么說说讓让給给點点經经從从頭头應应該该種种報报導导記记協协權权維维護护處处"
    "態态質质壞坏損损換换遞递運运輸输訂订確确認认證证碼码錄录戶户註注冊册幫帮聯联繫系係系滿满"
    "評评論论舉举賠赔償偿責责負负擔担憑凭據据額额轉转雙双詐诈騙骗爛烂氣气憤愤嚴严緊紧遲迟沒没"
    "閃闪當当斷断顯显異异頓顿載载啟启動动級级軟软設设備备藍蓝螢萤鍵键盤盘腦脑車车門门東东樣样"
    "總总長长辦办資资訊讯郵邮寫写實实際际標标準准選选項项條条規规則则節节獎奖勵励積积優优禮礼"
    "續续約约廣广騷骚擾扰隱隐盜盗竊窃鎖锁凍冻結结綁绑變变驗验測测試试邊边聽听見见覺觉視视頻频"
    "圖图檔档傳传頁页區区國国紙纸簽签議议廠厂購购筆笔罰罚壓压熱热亂乱擊击兩两萬万億亿親亲愛爱"
    "風风險险歷历團团隊队彈弹貼贴補补齊齐雜杂嗎吗裡里裏里臺台檯台幾几於于並并衝冲劃划夠够盡尽"
    "歸归雖虽將将專专業业創创產产現现紀纪組组織织職职餘余燈灯鐘钟週周僅仅稱称態态驟骤衛卫視视"
    "狀状況况費费戲戏聞闻廳厅寶宝麗丽惡恶劣劣糾纠紛纷鬧闹騙骗慮虑懷怀疑疑療疗藥药醫医院院險险"
)
_T2S = str.maketrans({_TRAD_SIMP[i]: _TRAD_SIMP[i + 1] for i in range(0, len(_TRAD_SIMP), 2)
                      if _TRAD_SIMP[i] != _TRAD_SIMP[i + 1]})


def fold(text: str) -> str:
    """What keywords and regexes are matched against: NFKC, casefolded, Traditional → Simplified."""
    if text.isascii():  # most English mail: nothing to normalise or map
        return text.lower()
    return unicodedata.normalize("NFKC", text).casefold().translate(_T2S)


class RulesError(ConfigFileError):
    """The routing rules file cannot be used; the message names the file and the rule."""


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, (str, int, float)) and not isinstance(value, bool) else value


def _strings(value: Any) -> Any:
    # `12315` (the consumer-complaint hotline) is an int to YAML; it is a keyword here.
    value = _as_list(value)
    if isinstance(value, list):
        return [str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for v in value]
    return value


def _non_blank_list(value: list[str] | None, what: str) -> list[str] | None:
    if value is not None:
        if not value:
            raise ValueError(f"{what} must not be empty (leave it out to match every ticket)")
        for item in value:
            if not str(item).strip():
                raise ValueError(f"{what} must not contain blank entries")
    return value


def _check_regexes(value: list[str] | None) -> list[str] | None:
    for i, pattern in enumerate(value or ()):
        try:
            re.compile(fold(pattern), re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"regex {i + 1} {pattern!r} does not compile: {exc}") from None
    return value


class _When(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: list[Literal["email", "chat", "phone"]] | None = None
    mailbox: list[str] | None = None
    queue: list[str] | None = None
    sender: list[str] | None = None
    domain: list[str] | None = None
    tier: list[str] | None = None
    language: list[str] | None = None
    signal: list[SignalName] | None = None
    keywords: list[str] | None = None
    regex: list[str] | None = None
    fields: list[Literal["subject", "text"]] = Field(default_factory=lambda: list(TEXT_FIELDS))

    @field_validator("channel", "signal", "fields", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return _as_list(value)

    @field_validator("mailbox", "queue", "sender", "domain", "tier", "language", "keywords", "regex", mode="before")
    @classmethod
    def _numbers_are_words(cls, value: Any) -> Any:
        return _strings(value)

    @field_validator("mailbox", "queue", "sender", "domain", "tier", "language", "keywords", "regex",
                     "channel", "signal")
    @classmethod
    def _non_blank(cls, value: list[str] | None, info: Any) -> list[str] | None:
        return _non_blank_list(value, info.field_name)

    @field_validator("sender")
    @classmethod
    def _addresses(cls, value: list[str] | None) -> list[str] | None:
        for address in value or ():
            if "@" not in address:
                raise ValueError(f"sender {address!r} is not an address (use domain: for a whole domain)")
        return value

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: list[str] | None) -> list[str] | None:
        return _check_regexes(value)


class _Then(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    skills: list[str] = Field(default_factory=list)
    preferred_skills: list[str] = Field(default_factory=list)
    priority: Priority | None = None
    tags: list[str] = Field(default_factory=list)
    category: str | None = Field(default=None, min_length=1, max_length=100)
    group: str | None = Field(default=None, min_length=1, max_length=100)

    @field_validator("skills", "preferred_skills", "tags", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return _strings(value)


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100)
    when: _When = Field(default_factory=_When)
    then: _Then
    stop: bool = False


class _Defaults(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    skills: list[str] = Field(default_factory=lambda: ["general"], min_length=1)
    priority: Priority = "P3"
    phone_callback_priority: Priority = "P2"


class _Signals(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    builtin_complaint_words: bool = True
    complaint_words: list[str] = Field(default_factory=list)
    complaint_patterns: list[str] = Field(default_factory=list)
    repeat_contact_tickets: int = Field(default=2, ge=1)

    @field_validator("complaint_words", "complaint_patterns", mode="before")
    @classmethod
    def _numbers_are_words(cls, value: Any) -> Any:
        return _strings(value)

    @field_validator("complaint_words", "complaint_patterns")
    @classmethod
    def _non_blank(cls, value: list[str], info: Any) -> list[str]:
        if any(not str(v).strip() for v in value):
            raise ValueError(f"{info.field_name} must not contain blank entries")
        return value

    @field_validator("complaint_patterns")
    @classmethod
    def _compiles(cls, value: list[str]) -> list[str]:
        return _check_regexes(value) or []


class _RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: _Defaults = Field(default_factory=_Defaults)
    signals: _Signals = Field(default_factory=_Signals)
    rules: list[_Rule] = Field(default_factory=list)
    routing: Any = None  # the router's section of the same file; not ours to judge


# --- compiled form ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    name: str
    channels: frozenset[str] | None = None
    mailboxes: frozenset[str] | None = None
    queues: frozenset[str] | None = None
    senders: frozenset[str] | None = None
    domains: tuple[str, ...] | None = None
    tiers: frozenset[str] | None = None
    languages: frozenset[str] | None = None
    signals: frozenset[str] | None = None
    keywords: tuple[str, ...] | None = None           # as written, for explanations
    keyword_ids: frozenset[int] | None = None          # into RuleSet.index.keywords
    regexes: tuple[re.Pattern[str], ...] | None = None
    regex_sources: tuple[str, ...] = ()                # as written
    fields: tuple[str, ...] = TEXT_FIELDS
    skills: tuple[str, ...] = ()
    preferred_skills: tuple[str, ...] = ()
    priority: str | None = None
    tags: tuple[str, ...] = ()
    category: str | None = None
    group: str | None = None
    stop: bool = False


@dataclass(frozen=True)
class _Keyword:
    text: str                          # folded, for explanations
    needle: str                        # a plain substring every match contains
    pattern: re.Pattern[str] | None    # None: the needle is the whole keyword


@dataclass(frozen=True)
class _KeywordIndex:
    """Every keyword of every rule and of the complaint lexicon, each once. A plain substring test
    (C speed) comes first and the keyword's regex runs only where its needle is present, so a
    field costs about one ``in`` per distinct keyword rather than one regex pass per rule."""
    keywords: tuple[_Keyword, ...] = ()
    ascii_ids: tuple[int, ...] = ()  # the keywords an all-ASCII text can contain

    def find(self, haystacks: Mapping[str, str]) -> dict[str, dict[int, int]]:
        """field → keyword id → position of its first match in that field."""
        found: dict[str, dict[int, int]] = {f: {} for f in haystacks}
        # Most keywords are in no field: one substring test over all fields rules them out.
        joined = "\x00".join(haystacks.values())
        keywords = self.keywords
        for kid in self.ascii_ids if joined.isascii() else range(len(keywords)):
            word = keywords[kid]
            if word.needle not in joined:
                continue
            for f, haystack in haystacks.items():
                pos = haystack.find(word.needle)
                if pos < 0:
                    continue
                if word.pattern is not None:
                    match = word.pattern.search(haystack)
                    if match is None:
                        continue
                    pos = match.start()
                found[f][kid] = pos
        return found


@dataclass(frozen=True)
class SignalSettings:
    complaint_keyword_ids: frozenset[int] = frozenset()
    complaint_patterns: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = ()  # (regex, needles or ())
    repeat_contact_tickets: int = 2


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    default_skills: tuple[str, ...] = ("general",)
    default_priority: str = "P3"
    phone_callback_priority: str = "P2"
    signals: SignalSettings = field(default_factory=SignalSettings)
    index: _KeywordIndex = field(default_factory=_KeywordIndex)


@dataclass(frozen=True)
class Classification:
    priority: str
    required_skills: tuple[str, ...]
    tags: tuple[str, ...]
    language: str
    matched_rules: tuple[str, ...]
    preferred_skills: tuple[str, ...] = ()
    category: str | None = None
    group: str | None = None
    signals: tuple[str, ...] = ()  # built-in: complaint_risk, repeat_contact, repeat_complaint


def _keyword(word: str) -> _Keyword:
    """``word`` is folded and stripped."""
    parts = word.split()
    escaped = r"\s+".join(re.escape(part) for part in parts)
    needs_regex = len(parts) > 1
    if word[-1].isdigit():  # a number is a whole number: 12315 is not inside order no. 8123156
        escaped += r"(?![0-9])"
        needs_regex = True
    if not _CJK.search(word) and word[0].isalnum():
        # Word start only: "errors" and "crashed" match "error"/"crash", "discharge" not "charge".
        escaped = rf"(?<![a-z0-9]){escaped}"
        needs_regex = True
    # The longest part is the rarest needle: "the newspapers" is looked for as "newspapers".
    return _Keyword(word, max(parts, key=len), re.compile(escaped) if needs_regex else None)


def _build_index(words: list[str]) -> tuple[_KeywordIndex, dict[str, int]]:
    """``words`` are folded and distinct; returns the index and word → id."""
    keywords = tuple(_keyword(w) for w in words)
    ascii_ids = tuple(i for i, k in enumerate(keywords) if k.needle.isascii())
    return _KeywordIndex(keywords, ascii_ids), {w: i for i, w in enumerate(words)}


def _folded_set(values: list[str] | None) -> frozenset[str] | None:
    return frozenset(v.strip().casefold() for v in values) if values else None


def _compile_regexes(patterns: list[str] | None) -> tuple[re.Pattern[str], ...] | None:
    return tuple(re.compile(fold(p), re.IGNORECASE) for p in patterns) if patterns else None


def _rule_set(parsed: _RulesFile) -> RuleSet:
    words: list[str] = []
    for rule in parsed.rules:
        words.extend(fold(w).strip() for w in rule.when.keywords or ())
    lexicon = [*(BUILTIN_COMPLAINT_WORDS if parsed.signals.builtin_complaint_words else ()),
               *parsed.signals.complaint_words]
    words.extend(fold(w).strip() for w in lexicon)
    index, ids = _build_index(list(dict.fromkeys(words)))
    rules = []
    for r in parsed.rules:
        when, then = r.when, r.then
        rules.append(Rule(
            name=r.name,
            channels=frozenset(when.channel) if when.channel else None,
            mailboxes=_folded_set(when.mailbox),
            queues=_folded_set(when.queue),
            senders=_folded_set(when.sender),
            domains=tuple(sorted({d.strip().lstrip("@.").casefold() for d in when.domain})) if when.domain else None,
            tiers=_folded_set(when.tier),
            languages=frozenset(normalize_language(v) or v for v in when.language) if when.language else None,
            signals=frozenset(when.signal) if when.signal else None,
            keywords=tuple(when.keywords) if when.keywords else None,
            keyword_ids=frozenset(ids[fold(w).strip()] for w in when.keywords) if when.keywords else None,
            regexes=_compile_regexes(when.regex),
            regex_sources=tuple(when.regex or ()),
            fields=tuple(dict.fromkeys(when.fields)),
            skills=tuple(then.skills),
            preferred_skills=tuple(then.preferred_skills),
            priority=then.priority,
            tags=tuple(then.tags),
            category=then.category,
            group=then.group,
            stop=r.stop,
        ))
    patterns = [*(BUILTIN_COMPLAINT_PATTERNS if parsed.signals.builtin_complaint_words else ()),
                *((p, ()) for p in parsed.signals.complaint_patterns)]
    return RuleSet(
        rules=tuple(rules),
        default_skills=tuple(parsed.defaults.skills),
        default_priority=parsed.defaults.priority,
        phone_callback_priority=parsed.defaults.phone_callback_priority,
        signals=SignalSettings(
            complaint_keyword_ids=frozenset(ids[fold(w).strip()] for w in lexicon),
            complaint_patterns=tuple((re.compile(fold(p), re.IGNORECASE), needles) for p, needles in patterns),
            repeat_contact_tickets=parsed.signals.repeat_contact_tickets,
        ),
        index=index,
    )


def parse_rules(data: Any, *, origin: str = "routing rules") -> RuleSet:
    """Validate already-parsed YAML; raise :class:`RulesError` naming the offending rule."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise RulesError(f"{origin}: expected a mapping with 'defaults' and 'rules', got {type(data).__name__}")
    try:
        parsed = _RulesFile.model_validate(data)
    except ValidationError as exc:
        detail = describe_validation_error(data, exc, list_key="rules", entry_label="rule")
        raise RulesError(f"{origin}: {detail.replace('Value error, ', '')}") from None
    duplicates = repeated_names([r.name for r in parsed.rules])
    if duplicates:
        raise RulesError(f"{origin}: rule names must be unique, repeated: {', '.join(duplicates)}")
    return _rule_set(parsed)


def parse_rules_text(text: str, *, origin: str = "routing rules") -> RuleSet:
    """Parse the file's text (what :class:`ReloadingFile` hands over)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesError(f"{origin} is not valid YAML: {exc}") from None
    return parse_rules(data, origin=origin)


def load_rules(path: str | Path) -> RuleSet:
    data = read_yaml(path, "routing rules", RulesError)
    return parse_rules(data, origin=f"routing rules {path}")


def rules_file(path: str | Path, *, now: float, interval: float = DEFAULT_CHECK_INTERVAL) -> ReloadingFile[RuleSet]:
    """The rules file, re-read when it changes: ``rules_file(p, now=t).current(now)`` per ticket.
    A bad first version raises :class:`RulesError`; a bad later one keeps the last good rules."""
    origin = f"routing rules {path}"
    try:
        return ReloadingFile(path, lambda text: parse_rules_text(text, origin=origin), now=now,
                             interval=interval, name="routing rules")
    except OSError as exc:
        raise RulesError(f"cannot read routing rules {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise RulesError(f"{origin} is not UTF-8: {exc}") from None


# --- the ticket's side ------------------------------------------------------------------------

def detect_language(text: str) -> str:
    """``zh`` when Chinese carries the text, else ``en``.

    Links, addresses and quoted lines are left out first. One Chinese character carries about
    half of what an English word does, so two characters weigh a word: "Re: 退款" and
    "APP闪退了 error 500" are zh, an English mail signed "李娜" stays en. Traditional and
    Simplified characters count alike.
    """
    sample = text[:LANGUAGE_SAMPLE_LIMIT]
    if ">" in sample:
        sample = _QUOTED_LINE.sub("", sample)
    cjk = sum(map(len, _CJK_RUN.findall(sample)))
    if not cjk:
        return "en"
    if "@" in sample or "http" in sample or "www." in sample:
        sample = " ".join(w for w in sample.split() if "@" not in w and not w.startswith(("http", "www.")))
    words = _LATIN_WORD.subn("", sample)[1]
    return "zh" if 2 * cjk >= words else "en"


def normalize_language(tag: str | None) -> str | None:
    """``zh-CN`` / ``zh_Hans`` / ``ZH`` → ``zh``; blank → None."""
    if not tag or not tag.strip():
        return None
    return re.split(r"[-_]", tag.strip(), maxsplit=1)[0].lower() or None


def is_phone_callback(channel: str, source: Mapping[str, str]) -> bool:
    """A phone ticket asks for a call back: intake_phone opens one only for a missed call or a
    voicemail. A producer may say otherwise with ``source["callback"] = "false"``."""
    return channel == "phone" and str(source.get("callback", "")).lower() not in ("0", "false", "no")


def _most_urgent(priorities: list[str]) -> str:
    return min(priorities, key=PRIORITIES.index)


def _address(sender: str | None) -> str:
    if not sender:
        return ""
    if "<" in sender:
        sender = parseaddr(sender)[1] or sender
    return sender.strip().casefold()


@dataclass
class _Ticket:
    """One ticket as the conditions see it, computed once."""
    channel: str
    mailbox: str
    queue: str
    sender: str
    domain: str
    tier: str
    language: str
    language_given: bool
    haystacks: dict[str, str]
    hits: dict[str, dict[int, int]]
    signals: list[str]
    evidence: dict[str, str]


def _ticket(rules: RuleSet, *, channel: str, subject: str, text: str, customer_language: str | None,
            source: Mapping[str, str] | None, customer_tier: str | None, sender: str | None,
            history: CustomerHistory | None, explain: bool = False) -> _Ticket:
    source = source or {}
    history = history or NO_HISTORY
    body = text[:TEXT_SCAN_LIMIT]
    haystacks = {"subject": fold(subject), "text": fold(body)}
    index = rules.index
    hits = index.find(haystacks)
    address = _address(sender)
    given = normalize_language(customer_language)
    language = given or detect_language(f"{subject}\n{body}")

    signals: list[str] = []
    evidence: dict[str, str] = {}
    settings = rules.signals
    complaint = None
    for f in TEXT_FIELDS:
        found = settings.complaint_keyword_ids.intersection(hits[f])
        if found:
            kid = min(found, key=hits[f].__getitem__)
            complaint = f"{index.keywords[kid].text!r} in {f}"
            break
    if complaint is None:
        for pattern, needles in settings.complaint_patterns:
            for f in TEXT_FIELDS:
                if needles and not any(n in haystacks[f] for n in needles):
                    continue
                match = pattern.search(haystacks[f])
                if match:
                    complaint = f"{match.group(0)[:60]!r} in {f} (pattern)"
                    break
            if complaint:
                break
    if complaint:
        signals.append(COMPLAINT_RISK)
        evidence[COMPLAINT_RISK] = complaint
    if history.recent_tickets >= settings.repeat_contact_tickets:
        signals.append(REPEAT_CONTACT)
        evidence[REPEAT_CONTACT] = (f"{history.recent_tickets} recent tickets "
                                    f"(>= {settings.repeat_contact_tickets})")
    if complaint and history.recent_complaints >= 1:
        signals.append(REPEAT_COMPLAINT)
        evidence[REPEAT_COMPLAINT] = f"{history.recent_complaints} recent complaints and this one is a complaint risk"
    return _Ticket(
        channel=channel,
        mailbox=str(source.get("mailbox", "")).strip().casefold(),
        queue=str(source.get("queue") or source.get("line") or "").strip().casefold(),
        sender=address,
        domain=address.rpartition("@")[2] if "@" in address else "",
        tier=(customer_tier or STANDARD_TIER).strip().casefold() or STANDARD_TIER,
        language=language,
        language_given=given is not None,
        haystacks=haystacks,
        hits=hits,
        signals=signals,
        evidence=evidence,
    )


def _domain_matches(domain: str, domains: tuple[str, ...]) -> bool:
    return any(domain == d or domain.endswith("." + d) for d in domains)


def _first_failure(rule: Rule, t: _Ticket) -> str | None:
    """The first condition of ``rule`` the ticket fails, or None when all hold."""
    if rule.channels is not None and t.channel not in rule.channels:
        return "channel"
    if rule.mailboxes is not None and t.mailbox not in rule.mailboxes:
        return "mailbox"
    if rule.queues is not None and t.queue not in rule.queues:
        return "queue"
    if rule.senders is not None and t.sender not in rule.senders:
        return "sender"
    if rule.domains is not None and not (t.domain and _domain_matches(t.domain, rule.domains)):
        return "domain"
    if rule.tiers is not None and t.tier not in rule.tiers:
        return "tier"
    if rule.languages is not None and t.language not in rule.languages:
        return "language"
    if rule.signals is not None and rule.signals.isdisjoint(t.signals):
        return "signal"
    if rule.keyword_ids is not None and all(rule.keyword_ids.isdisjoint(t.hits[f]) for f in rule.fields):
        return "keywords"
    if rule.regexes is not None and not any(p.search(t.haystacks[f]) for p in rule.regexes for f in rule.fields):
        return "regex"
    return None


def _result(rules: RuleSet, t: _Ticket, channel: str, source: Mapping[str, str] | None,
            on_rule: Callable[[Rule, str | None], None] | None = None) -> Classification:
    skills: list[str] = []
    preferred: list[str] = []
    tags: list[str] = []
    priorities: list[str] = []
    matched: list[str] = []
    category = group = None
    for rule in rules.rules:
        failed = _first_failure(rule, t)
        if on_rule is not None:
            on_rule(rule, failed)
        if failed is not None:
            continue
        matched.append(rule.name)
        skills.extend(rule.skills)
        preferred.extend(rule.preferred_skills)
        tags.extend(rule.tags)
        if rule.priority:
            priorities.append(rule.priority)
        if category is None:
            category = rule.category
        if group is None:
            group = rule.group
        if rule.stop:
            break
    tags.extend(t.signals)
    if is_phone_callback(channel, source or {}):
        priorities.append(rules.phone_callback_priority)
        tags.append(CALLBACK_TAG)
    required = tuple(dict.fromkeys(skills)) or rules.default_skills
    return Classification(
        priority=_most_urgent(priorities) if priorities else rules.default_priority,
        required_skills=required,
        tags=tuple(dict.fromkeys(tags)),
        language=t.language,
        matched_rules=tuple(matched),
        preferred_skills=tuple(s for s in dict.fromkeys(preferred) if s not in required),
        category=category,
        group=group,
        signals=tuple(t.signals),
    )


def classify(rules: RuleSet, *, channel: str, subject: str, text: str, customer_language: str | None = None,
             source: Mapping[str, str] | None = None, customer_tier: str | None = None,
             sender: str | None = None, history: CustomerHistory | None = None) -> Classification:
    ticket = _ticket(rules, channel=channel, subject=subject, text=text, customer_language=customer_language,
                     source=source, customer_tier=customer_tier, sender=sender, history=history)
    return _result(rules, ticket, channel, source)


# --- why --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RuleVerdict:
    name: str
    outcome: Literal["matched", "failed", "not evaluated"]
    reason: str          # the failed condition, what matched, or which rule stopped evaluation
    actions: str = ""    # what the rule sets (for matched rules)


@dataclass(frozen=True)
class Explanation:
    classification: Classification
    language: str
    language_reason: str
    signals: tuple[tuple[str, str], ...]   # (signal, why)
    rules: tuple[RuleVerdict, ...]

    def as_dict(self) -> dict[str, Any]:
        c = self.classification
        return {
            "result": {"priority": c.priority, "required_skills": list(c.required_skills),
                       "preferred_skills": list(c.preferred_skills), "category": c.category, "group": c.group,
                       "tags": list(c.tags), "language": c.language, "signals": list(c.signals),
                       "matched_rules": list(c.matched_rules)},
            "language": {"value": self.language, "reason": self.language_reason},
            "signals": [{"signal": s, "reason": why} for s, why in self.signals],
            "rules": [{"rule": v.name, "outcome": v.outcome, "reason": v.reason, "actions": v.actions}
                      for v in self.rules],
        }


def _listing(values: Any, limit: int = 6) -> str:
    items = sorted(values) if isinstance(values, (set, frozenset)) else list(values)
    shown = ", ".join(str(v) for v in items[:limit])
    return shown + (f", … ({len(items)} in all)" if len(items) > limit else "")


def _why_failed(rule: Rule, condition: str, t: _Ticket) -> str:
    show = {
        "channel": (t.channel, rule.channels), "mailbox": (t.mailbox or "(none)", rule.mailboxes),
        "queue": (t.queue or "(none)", rule.queues), "sender": (t.sender or "(none)", rule.senders),
        "domain": (t.domain or "(none)", rule.domains), "tier": (t.tier, rule.tiers),
        "language": (t.language, rule.languages), "signal": (_listing(t.signals) or "(none)", rule.signals),
    }
    if condition in show:
        value, wanted = show[condition]
        return f"{condition}: {value} is not one of {_listing(wanted or ())}"
    where = " or ".join(rule.fields)
    if condition == "keywords":
        return f"keywords: none of {_listing(rule.keywords or ())} in {where}"
    return f"regex: none of {_listing(rule.regex_sources)} found in {where}"


def _why_matched(rule: Rule, t: _Ticket, index: _KeywordIndex) -> str:
    parts = []
    if rule.channels is not None:
        parts.append(f"channel {t.channel}")
    for name, value, wanted in (("mailbox", t.mailbox, rule.mailboxes), ("queue", t.queue, rule.queues),
                                ("sender", t.sender, rule.senders), ("domain", t.domain, rule.domains),
                                ("tier", t.tier, rule.tiers), ("language", t.language, rule.languages)):
        if wanted is not None:
            parts.append(f"{name} {value}")
    if rule.signals is not None:
        parts.append("signal " + _listing(s for s in t.signals if s in rule.signals))
    if rule.keyword_ids is not None:
        for f in rule.fields:
            found = [k for k in rule.keyword_ids if k in t.hits[f]]
            if found:
                kid = min(found, key=t.hits[f].__getitem__)
                parts.append(f"keyword {index.keywords[kid].text!r} in {f}")
                break
    if rule.regexes is not None:
        for p, written in zip(rule.regexes, rule.regex_sources):
            hit = next(((f, m) for f in rule.fields if (m := p.search(t.haystacks[f]))), None)
            if hit:
                parts.append(f"regex '{written}' found {hit[1].group(0)[:40]!r} in {hit[0]}")
                break
    return "; ".join(parts) or "no conditions (matches every ticket)"


def _actions(rule: Rule) -> str:
    parts = []
    if rule.priority:
        parts.append(f"priority {rule.priority}")
    for name, values in (("skills", rule.skills), ("preferred", rule.preferred_skills), ("tags", rule.tags)):
        if values:
            parts.append(f"{name} {', '.join(values)}")
    if rule.category:
        parts.append(f"category {rule.category}")
    if rule.group:
        parts.append(f"group {rule.group}")
    if rule.stop:
        parts.append("stop")
    return "; ".join(parts)


def explain(rules: RuleSet, *, channel: str, subject: str, text: str, customer_language: str | None = None,
            source: Mapping[str, str] | None = None, customer_tier: str | None = None,
            sender: str | None = None, history: CustomerHistory | None = None) -> Explanation:
    """What :func:`classify` decides for this ticket, and why: per rule matched (on what) or the
    first condition that failed, the signals with their evidence, the language's origin."""
    t = _ticket(rules, channel=channel, subject=subject, text=text, customer_language=customer_language,
                source=source, customer_tier=customer_tier, sender=sender, history=history)
    verdicts: dict[str, RuleVerdict] = {}

    def record(rule: Rule, failed: str | None) -> None:
        if failed is None:
            verdicts[rule.name] = RuleVerdict(rule.name, "matched", _why_matched(rule, t, rules.index), _actions(rule))
        else:
            verdicts[rule.name] = RuleVerdict(rule.name, "failed", _why_failed(rule, failed, t))

    result = _result(rules, t, channel, source, on_rule=record)
    stopper = next((v.name for v in verdicts.values() if v.outcome == "matched" and "stop" in v.actions.split("; ")),
                   None)
    ordered = tuple(verdicts.get(r.name) or RuleVerdict(r.name, "not evaluated", f"rule {stopper!r} has stop: true")
                    for r in rules.rules)
    if t.language_given:
        why = f"given by the customer ({customer_language})"
    else:
        why = "detected from subject and text"
    return Explanation(result, t.language, why, tuple((s, t.evidence[s]) for s in t.signals), ordered)
