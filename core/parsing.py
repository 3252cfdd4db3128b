"""Answer parsing: turn a free-form model reply into one of a task's labels, or None.

Order of evidence (first that gives one label wins):
1. the last ``<answer>X</answer>`` tag or ``\\boxed{X}``;
2. the last answer cue ("Answer: X", "Final answer: X", "the answer is X", "I'd go with X" ...);
3. the final non-empty line (just a label, "(B)", "B. <option text>", "Therefore, yes." ...);
4. the first line when it is just a label ("No.\\n\\nExplanation ...");
5. a short reply (<= 12 words) naming exactly one label.
Single-character labels (MCQ letters) only count as answer tokens, never as the article "A".
All patterns are bounded, so replies of any length parse in linear time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

SHORT_REPLY_WORDS = 12
_MAX_CHARS = 100_000  # only the last 100k characters of a reply are read
_SPAN_CHARS = 300  # how far after a cue we look
_MAX_CUES = 64  # only the last 64 answer cues are tried

_TAG_RE = re.compile(
    r"<answer>\s*(.{0,300}?)\s*</answer>|\\boxed\{\s*(?:\\text(?:bf)?\{)?([^{}\n]{0,200}?)\}?\s*\}",
    re.IGNORECASE | re.DOTALL,
)
_CUE_RE = re.compile(
    r"\b(?:answer|verdict|decision|classification|prediction|label|category)"
    r"[*_\s]{0,4}(?:is|would\s+be|will\s+be|should\s+be|must\s+be|[:=\-–—])"
    r"|\b(?:correct|best|right|final)\s+(?:option|choice)[*_\s]{0,4}(?:is|would\s+be|[:=])"
    r"|\bI\s*(?:would|will|'d|'ll|’d|’ll)?\s*(?:choose|pick|select|go\s+with|opt\s+for)\b",
    re.IGNORECASE,
)
_MD_RE = re.compile(r"[*`]+|__+")
_LEAD_PUNCT = " \t\"'“”‘’:;,=>#-–—~|"
_FILLER_RE = re.compile(
    r"(?:is|would\s+be|will\s+be|should\s+be|be|most\s+likely|likely|probably|definitely|clearly|"
    r"certainly|therefore|thus|so|then|simply|just|the|that|option|choice|letter|answer|correct|"
    r"final|best|right|my)\b[\s:,\-–—]*",
    re.IGNORECASE,
)
_LINE_LEAD_RE = re.compile(
    r"(?:so|therefore|thus|hence|in\s+conclusion|in\s+summary|to\s+conclude|overall|finally|"
    r"conclusion|summary|most\s+likely|probably|likely|definitely|clearly|option|choice|letter)"
    r"\b[\s,:\-–—]*",
    re.IGNORECASE,
)
_BULLET_RE = re.compile(r"^\s{0,8}(?:[-*+>#•]\s?){1,6}")
_LETTER_RE = re.compile(r"(\()?\s?([A-Za-z0-9])\s?(?(1)\))(?![\w'’-])")
_SEP_RE = re.compile(r"\s{0,3}(?:,|/|\||&|\bor\b|\band\b|\bvs\.?)\s{0,3}", re.IGNORECASE)
_NEGATED_RE = re.compile(r"(?:\bnot|n't|n’t|\bnor|\bneither)\s{1,3}$", re.IGNORECASE)
_NEGATION_START_RE = re.compile(r"(?:not|neither|nor)\b", re.IGNORECASE)
_PAREN_LETTER_RE = re.compile(r"\(([A-Za-z0-9])\)")
_OPTION_LETTER_RE = re.compile(r"\b(?:option|choice)\s{0,3}\(?([A-Za-z0-9])\)?(?![\w'’-])", re.I)
_TRAIL_LETTER_RE = re.compile(
    r"(?i:\bis|\bbe|:|\bso|\bthus|\btherefore|\bhence)\s{1,3}[(\[]?([A-Z0-9])[)\]]?[.!]?\s*$"
)
_STANDALONE_LETTER_RE = re.compile(
    r"(?<![\w'’-])([A-Z0-9])(?:(?=[.):!?,]|\s*$)|(?=\s+(?:is|seems|appears|looks|fits)\b))"
)
_COMMITTED_RE = re.compile(
    r"\s{0,3}(?:[,.;:!?)\]\-–—]|$|\s(?:because|since|as|given|due|based|according|but|though|although|here)\b)",
    re.IGNORECASE,
)
_NORM_RE = re.compile(r"[^\w]+")


@dataclass(frozen=True)
class _Matcher:
    """Compiled patterns for one label set."""

    labels: tuple[str, ...]
    letters: dict[str, str]  # lowercased single-character label -> label
    words: dict[str, str]  # normalised multi-character label -> label
    word_re: re.Pattern | None  # any word label, with boundaries
    word_start_re: re.Pattern | None

    def word_label(self, token: str) -> str | None:
        return self.words.get(re.sub(r"\s+", " ", token.lower()))


@lru_cache(maxsize=256)
def _matcher(labels: tuple[str, ...]) -> _Matcher:
    letters = {lab.lower(): lab for lab in labels if len(lab.strip()) == 1}
    word_labels = [lab for lab in labels if len(lab.strip()) > 1]
    words = {re.sub(r"\s+", " ", lab.strip().lower()): lab for lab in word_labels}
    word_re = word_start_re = None
    if word_labels:
        alts = sorted(words, key=len, reverse=True)
        body = "|".join(r"\s+".join(map(re.escape, w.split(" "))) for w in alts)
        word_re = re.compile(rf"(?<![\w-])(?:{body})(?![\w-])", re.IGNORECASE)
        word_start_re = re.compile(rf"(?:{body})(?![\w-])", re.IGNORECASE)
    return _Matcher(tuple(labels), letters, words, word_re, word_start_re)


def _norm(text: str) -> str:
    return _NORM_RE.sub(" ", text.lower()).strip()


def _clean(text: str) -> str:
    """Drop markdown emphasis and leading punctuation/bullets."""
    return _BULLET_RE.sub("", _MD_RE.sub("", text)).strip(_LEAD_PUNCT + "\n")


def _option_match(text: str, choices: dict[str, str] | None, m: _Matcher, whole: bool) -> str | None:
    """Label whose option text the text starts with (or equals, if whole); None unless exactly one."""
    if not choices:
        return None
    t = _norm(text)
    if not t:
        return None
    hits: list[tuple[int, str]] = []
    for key, opt in choices.items():
        o = _norm(opt)
        label = m.letters.get(key.strip().lower()) or m.word_label(key)
        if not o or label is None:
            continue
        if t == o or (not whole and t.startswith(o + " ")):
            hits.append((len(o), label))
    if not hits:
        return None
    hits.sort(reverse=True)
    if len(hits) > 1 and hits[0][0] == hits[1][0] and hits[0][1] != hits[1][1]:
        return None
    return hits[0][1]


def _second_label(rest: str, m: _Matcher, first: str) -> bool:
    """True if rest starts with 'or/,/and <another label>' (e.g. 'yes or no', 'A/B')."""
    sep = _SEP_RE.match(rest)
    if not sep:
        return False
    after = rest[sep.end():]
    if m.word_start_re:
        w = m.word_start_re.match(after)
        if w and m.word_label(w.group(0)) != first:
            return True
    lt = _LETTER_RE.match(after)
    if lt:
        other = m.letters.get(lt.group(2).lower())
        if other and other != first and (lt.group(1) or lt.group(2).isupper()):
            return True
    return False


def _letter_start(s: str, m: _Matcher, choices: dict[str, str] | None, strict: bool) -> tuple[str | None, bool]:
    """(label, ambiguous) for a single-character label at the start of s."""
    mt = _LETTER_RE.match(s)
    if not mt or not m.letters:
        return None, False
    ch = mt.group(2)
    label = m.letters.get(ch.lower())
    if label is None:
        return None, False
    rest = s[mt.end():]
    if _second_label(rest, m, label):
        return None, True
    if mt.group(1) or not rest.strip():
        return label, False
    head, after = rest[0], rest[1:].strip()
    if head in ".):]":
        if not after:
            return label, False
        if choices and not strict:  # "Answer: A. <the text of option C>": a conflict, not an A
            opt = _option_match(after, choices, m, False)
            return (None, True) if opt is not None and opt != label else (label, False)
        if not strict:
            return label, False
        if choices:
            opt = _option_match(after, choices, m, False)
            return (label, False) if opt == label else (None, opt is not None)  # "A. <text of C>": conflict
        return (label, False) if len(after.split()) <= SHORT_REPLY_WORDS else (None, False)
    if head.isspace():
        if not strict:
            return (label, False) if ch.isupper() or ch.isdigit() else (None, False)
        if choices and _option_match(after, {k: v for k, v in choices.items() if k.strip().lower() == ch.lower()}, m, False):
            return label, False
        return None, False
    if head in ",;!?" and (ch.isupper() or ch.isdigit()):
        return label, False
    return None, False


def _word_start(s: str, m: _Matcher, strict: bool) -> tuple[str | None, bool]:
    """(label, ambiguous) for a word label at the start of s."""
    if not m.word_start_re:
        return None, False
    mt = m.word_start_re.match(s)
    if not mt:
        return None, False
    label = m.word_label(mt.group(0))
    rest = s[mt.end():]
    if _second_label(rest, m, label):
        return None, True
    if strict and rest.strip() and rest[0] not in ",.;:!?)]—–-":
        return None, False
    return label, False


def _distinct_words(text: str, m: _Matcher) -> set[str]:
    """Word labels mentioned in text, ignoring negated mentions ('not negative')."""
    found: set[str] = set()
    if m.word_re:
        for w in m.word_re.finditer(text):
            if not _NEGATED_RE.search(text[max(0, w.start() - 12):w.start()]):
                found.add(m.word_label(w.group(0)))
    return found


def _parse_span(span: str, m: _Matcher, choices: dict[str, str] | None) -> tuple[str | None, bool]:
    """Parse the text right after an answer cue or inside an answer tag."""
    s = _clean(span)
    for _ in range(6):  # skip filler words such as "most likely", "option", "the"
        if m.word_start_re and m.word_start_re.match(s):
            break
        if _NEGATION_START_RE.match(s):
            return None, False
        f = _FILLER_RE.match(s)
        if not f or f.end() == 0:
            break
        s = _clean(s[f.end():])
    for attempt in (_letter_start(s, m, choices, strict=False), _word_start(s, m, strict=False)):
        if attempt[0] or attempt[1]:
            return attempt
    opt = _option_match(s, choices, m, whole=False)
    if opt:
        return opt, False
    clause = re.split(r"[.;\n]", s, maxsplit=1)[0][:150]
    found = _distinct_words(clause, m)
    if len(found) == 1:
        return found.pop(), False
    return None, len(found) > 1


def _parse_line(line: str, m: _Matcher, choices: dict[str, str] | None) -> tuple[str | None, bool]:
    """Parse one line that should be just the answer ('Yes.', '**B**', '(B) text', 'Therefore, no.')."""
    s = _clean(line)
    for _ in range(3):
        f = _LINE_LEAD_RE.match(s)
        if not f or f.end() == 0 or (m.word_start_re and m.word_start_re.match(s)):
            break
        s = _clean(s[f.end():])
    for attempt in (_letter_start(s, m, choices, strict=True), _word_start(s, m, strict=True)):
        if attempt[0] or attempt[1]:
            return attempt
    opt = _option_match(s.rstrip(".!"), choices, m, whole=True)
    if opt:
        return opt, False
    if m.letters:
        parens = {m.letters.get(c.lower()) for c in _PAREN_LETTER_RE.findall(s)} - {None}
        if len(parens) == 1:
            return parens.pop(), False
        if len(parens) > 1:
            return None, True
        t = _TRAIL_LETTER_RE.search(s)
        if t and t.group(1).lower() in m.letters:
            return m.letters[t.group(1).lower()], False
    if m.word_re:
        tail = s[-80:]
        hits = list(m.word_re.finditer(tail))
        if hits:
            last = hits[-1]
            before = tail[:last.start()].rstrip()
            after = tail[last.end():].strip()
            if re.fullmatch(r"[.!)]*", after) and re.search(r"(?:\bis|:|\bso|\bthus|\btherefore|\bhence|,|—|–)$", before, re.I):
                return m.word_label(last.group(0)), False
    return None, False


def _first_line(line: str, m: _Matcher) -> str | None:
    """A first line that is only a label ('No.', '**B**', '(C)') or starts 'Yes, ...'."""
    s = _clean(line)
    bare = s.strip(" .!()[]")
    if bare.lower() in m.letters:
        return m.letters[bare.lower()]
    label, ambiguous = _word_start(s, m, strict=True)
    return None if ambiguous else label


def _short_reply(text: str, m: _Matcher) -> str | None:
    """A short reply naming exactly one label (word labels anywhere, letters only as answer tokens).

    A word label must once stand as an answer (before punctuation, the end, or 'because'/'since' ...),
    so "No one can know" is not "No".
    """
    found = _distinct_words(text, m)
    if found and m.word_re and not any(_COMMITTED_RE.match(text, w.end()) for w in m.word_re.finditer(text)):
        found = set()
    if m.letters:
        for rx in (_PAREN_LETTER_RE, _OPTION_LETTER_RE, _STANDALONE_LETTER_RE):
            for c in rx.findall(text):
                if c.lower() in m.letters and (rx is not _STANDALONE_LETTER_RE or c.isupper() or c.isdigit()):
                    found.add(m.letters[c.lower()])
    return found.pop() if len(found) == 1 else None


@dataclass(frozen=True)
class ParsedAnswer:
    label: str | None
    ambiguous: bool = False  # the reply commits to conflicting answers ("A. <the text of option C>", "A or C")


def _verdict(t: str, verdicts: dict[str, str] | None) -> str | None:
    """A task's verdict phrase ("so it is a lie" -> Yes) in the reply's last sentence; the last one wins."""
    if not verdicts:
        return None
    tail = re.split(r"(?<=[.!?])\s+|\n", t.strip()[-300:])
    tail = next((x for x in reversed(tail) if x.strip()), "")
    alts = "|".join(r"\s+".join(map(re.escape, p.split())) for p in sorted(verdicts, key=len, reverse=True))
    hits = list(re.finditer(rf"(?<![\w-])(?:{alts})(?![\w-])", tail, re.I))
    if not hits:
        return None
    return verdicts.get(re.sub(r"\s+", " ", hits[-1].group(0).lower()))


def parse_answer(text: str | None, labels: list[str] | tuple[str, ...], choices: dict[str, str] | None = None,
                 verdicts: dict[str, str] | None = None) -> str | None:
    """The label a model reply commits to, spelled exactly as in labels; None if unparsed or ambiguous.
    `verdicts` maps a task's verdict phrases to labels (LIAR: "a lie" -> "Yes")."""
    return parse_answer_detail(text, labels, choices, verdicts).label


def parse_answer_detail(text: str | None, labels: list[str] | tuple[str, ...], choices: dict[str, str] | None = None,
                        verdicts: dict[str, str] | None = None) -> ParsedAnswer:
    """The parsed label, and whether the reply was ambiguous (conflicting answers) rather than silent."""
    if not text or not text.strip() or not labels:
        return ParsedAnswer(None)
    label, ambiguous = _parse(text, labels, choices)
    if label is None and not ambiguous:
        label = _verdict(text[-_MAX_CHARS:], verdicts)
    return ParsedAnswer(label, ambiguous and label is None)


def _parse(text: str, labels, choices) -> tuple[str | None, bool]:
    m = _matcher(tuple(labels))
    t = text[-_MAX_CHARS:].replace("\r\n", "\n").replace("\r", "\n").replace("\u00a0", " ")

    tags = [a or b for a, b in _TAG_RE.findall(t)]
    for inner in reversed(tags):
        label, amb = _parse_span(inner, m, choices)
        if label or amb:
            return label, amb

    hedged = False  # an answer cue followed by several labels ("Answer: A or C")
    for cue in list(_CUE_RE.finditer(t))[::-1][:_MAX_CUES]:
        span = t[cue.end(): cue.end() + _SPAN_CHARS]
        head, _, tail = span.partition("\n")
        if not _clean(head):  # "**Answer:**\nB": the answer is on the next line
            tail_lines = [ln for ln in tail.split("\n") if _clean(ln)]
            head = tail_lines[0] if tail_lines else ""
        label, ambiguous = _parse_span(head, m, choices)
        if label:
            return label, False
        hedged = hedged or ambiguous

    lines = [ln for ln in t.split("\n") if _clean(ln)]
    if not lines:
        return None, hedged
    label, ambiguous = _parse_line(lines[-1], m, choices)
    if label or ambiguous:
        return label, ambiguous
    if len(lines) > 1:
        label = _first_line(lines[0], m)
        if label:
            return label, False
    if len(t.split()) <= SHORT_REPLY_WORDS and not hedged:
        return _short_reply(_MD_RE.sub("", t), m), False
    return None, hedged
