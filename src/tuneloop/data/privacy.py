"""Find and redact personally identifiable information (PII) in text, offline.

Kinds and how each is found (validators come from maintained libraries; regexes only propose candidates):
    email         a regex for addresses with subdomains, dots, apostrophes and plus tags in the local part, and
                  non-ASCII letters (internationalised addresses).
    phone         phonenumbers.PhoneNumberMatcher with Leniency.VALID, once as region US and once as GB;
                  numbers written with a +country code are found whatever the region. A bare run of digits
                  (no spaces, dashes, dots, brackets or +) only counts after a word such as "call" or "phone",
                  because order and invoice numbers look exactly like that.
    credit_card   13-19 digits in groups with one kind of separator (space or dash), starting 2-6 (the major
                  payment networks) and passing stdnum.luhn, so most random digit runs are not flagged.
    iban          a country code, two check digits and up to 30 characters, validated by stdnum.iban
                  (mod-97 checksum and the country's BBAN layout). Upper case only.
    ip_address    IPv4 and IPv6 candidates from regexes, validated by the stdlib ipaddress module.
                  Four-part version numbers (1.0.0.1) are valid IPv4 addresses and are reported as such.
    national_id   US Social Security numbers written 123-45-6789 (stdnum.us.ssn rules: no area 000, 666 or
                  9xx, no group 00, no serial 0000, known-bad numbers) and UK National Insurance numbers
                  ("QQ 12 34 56 C", spaced or not; prefix rules from HMRC's manual, hand-written because
                  python-stdnum has no NINO module).
    person        pattern-based, because no offline NER model is available: a capitalised name after an
                  honorific (Mr, Mrs, Ms, Mx, Miss, Dr, Prof, Sir, Dame: "Dr. Ana Lopez", "Ms Dawson"), or
                  after "my name is" (one to three words). Only the name is reported, not the honorific.
                  It misses names without such a cue ("Ana said hi", "I'm Ana Lopez": "I am" is left out
                  because title-case text such as "I am Very Tired" would match), lower-case names and
                  names in non-Latin scripts; it flags "Dr." used for Drive ("Elm Dr. Springfield") and brand
                  names such as "Dr Pepper".

Digits are ASCII only (0-9). Findings never overlap: the longer one wins, and on equal length the more specific
kind (checksummed kinds first). redact_pii swaps each for a placeholder such as [EMAIL] and leaves every other
character as it was.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import phonenumbers
from stdnum import iban, luhn
from stdnum.us import ssn


@dataclass(frozen=True)
class PiiFinding:
    """One piece of PII: its kind, its character offsets in the text, and the raw text (print redacted_example)."""

    kind: str
    start: int
    end: int
    text: str


PII_KINDS = ("email", "phone", "credit_card", "iban", "ip_address", "national_id", "person")
# Tie-break for equal-length overlaps: checksummed kinds are least likely to be a coincidence.
_SPECIFICITY = ("iban", "credit_card", "national_id", "email", "ip_address", "phone", "person")

Span = tuple[int, int]


def placeholder(kind: str) -> str:
    """The text that replaces a finding of this kind, e.g. "[CREDIT_CARD]"."""
    return f"[{kind.upper()}]"


def find_pii(text: str, kinds: Iterable[str] = PII_KINDS) -> list[PiiFinding]:
    """All PII findings of the given kinds in text, sorted by start and never overlapping."""
    candidates = [
        PiiFinding(kind, start, end, text[start:end])
        for kind in _checked_kinds(kinds)
        for start, end in _FINDERS[kind](text)
    ]
    return _without_overlaps(candidates)


def redact_pii(text: str, kinds: Iterable[str] = PII_KINDS) -> tuple[str, list[PiiFinding]]:
    """The text with each finding replaced by its placeholder, and the findings (positions refer to the input)."""
    findings = find_pii(text, kinds)
    return _replace_with_placeholders(text, findings), findings


def redacted_example(finding: PiiFinding, text: str, width: int = 20) -> str:
    """A one-line snippet of up to `width` characters either side of a finding, for reports.

    The finding itself and any other PII in the text are replaced by placeholders before the snippet is cut,
    so no raw PII (not even part of one cut at the edge) is shown.
    """
    others = [f for f in find_pii(text) if f.end <= finding.start or f.start >= finding.end]
    before = _replace_with_placeholders(text[: finding.start], [f for f in others if f.end <= finding.start])
    after_findings = [
        PiiFinding(f.kind, f.start - finding.end, f.end - finding.end, f.text) for f in others if f.start >= finding.end
    ]
    after = _replace_with_placeholders(text[finding.end :], after_findings)
    head = ("…" + before[-width:]) if len(before) > width else before
    tail = (after[:width] + "…") if len(after) > width else after
    return (head + placeholder(finding.kind) + tail).replace("\n", " ")


def _checked_kinds(kinds: Iterable[str]) -> list[str]:
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    unknown = [kind for kind in kinds if kind not in _FINDERS]
    if unknown:
        raise ValueError(f"unknown PII kind(s) {unknown}; choose from {list(PII_KINDS)}")
    return kinds


def _without_overlaps(candidates: list[PiiFinding]) -> list[PiiFinding]:
    ranked = sorted(candidates, key=lambda f: (f.start - f.end, _SPECIFICITY.index(f.kind), f.start))
    kept: list[PiiFinding] = []
    for finding in ranked:
        if all(finding.end <= other.start or finding.start >= other.end for other in kept):
            kept.append(finding)
    return sorted(kept, key=lambda f: f.start)


def _replace_with_placeholders(text: str, findings: list[PiiFinding]) -> str:
    pieces, cursor = [], 0
    for finding in sorted(findings, key=lambda f: f.start):
        pieces += [text[cursor : finding.start], placeholder(finding.kind)]
        cursor = finding.end
    pieces.append(text[cursor:])
    return "".join(pieces)


# --- email ---------------------------------------------------------------------------------------------

# \w is Unicode-aware, so internationalised addresses (josé@exämple.de) are found too.
_EMAIL = re.compile(
    r"(?<![\w.%+-])"
    r"[^\W_](?:[\w.%+'-]{0,62}[\w%+-])?"
    r"@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_]{2,63}"
    r"(?![\w-])"
)


def _find_emails(text: str) -> Iterator[Span]:
    for match in _EMAIL.finditer(text):
        yield match.span()


# --- phone ---------------------------------------------------------------------------------------------

_PHONE_REGIONS = ("US", "GB")
_PHONE_CUE = re.compile(
    r"(?i)\b(?:phone|call|tel|telephone|mobile|cell|fax|text|sms|whatsapp|ring|reach)\b(?:\W+\w+){0,3}\W*$"
)
_PHONE_FORMATTING = re.compile(r"[\s().+-]")


def _find_phones(text: str) -> Iterator[Span]:
    spans: set[Span] = set()
    for region in _PHONE_REGIONS:
        for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
            formatted = _PHONE_FORMATTING.search(match.raw_string) is not None
            if formatted or _PHONE_CUE.search(text[max(0, match.start - 30) : match.start]):
                spans.add((match.start, match.end))
    yield from sorted(spans)


# --- credit card ---------------------------------------------------------------------------------------

_DIGIT_GROUPS = re.compile(r"(?<![\w.,/-])[0-9]+(?:[ -][0-9]+)*")
_DIGITS = re.compile(r"[0-9]+")
_CARD_LENGTHS = range(13, 20)


def _find_card_numbers(text: str) -> Iterator[Span]:
    for run in _DIGIT_GROUPS.finditer(text):
        groups = [(run.start() + g.start(), run.start() + g.end()) for g in _DIGITS.finditer(run.group())]
        yield from _card_spans_among(text, groups)


def _card_spans_among(text: str, groups: list[Span]) -> Iterator[Span]:
    """The longest Luhn-valid stretches of whole digit groups, left to right (a card may sit among other numbers)."""
    first = 0
    while first < len(groups):
        for last in range(min(len(groups), first + max(_CARD_LENGTHS)), first, -1):
            start, end = groups[first][0], groups[last - 1][1]
            if _is_card_number(text[start:end]):
                yield start, end
                first = last
                break
        else:
            first += 1


def _is_card_number(candidate: str) -> bool:
    digits = re.sub(r"[ -]", "", candidate)
    separators = set(re.findall(r"[ -]", candidate))
    return len(digits) in _CARD_LENGTHS and len(separators) <= 1 and digits[0] in "23456" and luhn.is_valid(digits)


# --- IBAN ----------------------------------------------------------------------------------------------

_IBAN_CANDIDATE = re.compile(r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{1,4}){3,8}\b")


def _find_ibans(text: str) -> Iterator[Span]:
    position = 0
    while match := _IBAN_CANDIDATE.search(text, position):
        span = _longest_valid_iban_prefix(match)
        if span:
            yield span
        # Search again right after what was used: a candidate can swallow the start of the next IBAN.
        position = span[1] if span else match.start() + 1


def _longest_valid_iban_prefix(match: re.Match[str]) -> Span | None:
    """The candidate may have swallowed following short words ("... 32 AND"): drop pieces until it is valid."""
    pieces = match.group().split(" ")
    for count in range(len(pieces), 0, -1):
        candidate = " ".join(pieces[:count])
        if iban.is_valid(candidate.replace(" ", "")):
            return match.start(), match.start() + len(candidate)
    return None


# --- IP address ----------------------------------------------------------------------------------------

_IPV4_CANDIDATE = re.compile(r"(?<![\w.])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?!\w|\.[0-9])")
_IPV6_CANDIDATE = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9A-Fa-f]{1,4})?(?![\w:])"
)


def _find_ip_addresses(text: str) -> Iterator[Span]:
    for pattern in (_IPV4_CANDIDATE, _IPV6_CANDIDATE):
        for match in pattern.finditer(text):
            if _is_ip_address(match.group()):
                yield match.span()


def _is_ip_address(candidate: str) -> bool:
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


# --- national id ---------------------------------------------------------------------------------------

_SSN_CANDIDATE = re.compile(r"(?<![\w-])[0-9]{3}-[0-9]{2}-[0-9]{4}(?![\w-])")
_NINO_CANDIDATE = re.compile(r"\b([A-Z])([A-Z]) ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D]\b")
# From HMRC's National Insurance Manual: these letters never appear in a prefix (O never second), and these
# prefixes are never allocated.
_NINO_BAD_FIRST, _NINO_BAD_SECOND = set("DFIQUV"), set("DFIOQUV")
_NINO_BAD_PREFIXES = {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}


def _find_national_ids(text: str) -> Iterator[Span]:
    for match in _SSN_CANDIDATE.finditer(text):
        if ssn.is_valid(match.group()):
            yield match.span()
    for match in _NINO_CANDIDATE.finditer(text):
        first, second = match.group(1), match.group(2)
        if first not in _NINO_BAD_FIRST and second not in _NINO_BAD_SECOND and first + second not in _NINO_BAD_PREFIXES:
            yield match.span()


# --- person --------------------------------------------------------------------------------------------

_UPPER, _LOWER = "A-ZÀ-ÖØ-Þ", "a-zß-öø-ÿ"
_NAME_WORD = rf"(?:[{_UPPER}]'|Mc|Mac)?[{_UPPER}][{_LOWER}]+(?:-[{_UPPER}][{_LOWER}]+)?"
_NAME = rf"{_NAME_WORD}(?:[ \t]+{_NAME_WORD}){{0,2}}"
_HONORIFIC = r"(?:(?:Mr|Mrs|Ms|Mx|Dr|Prof)\.?|Miss|Sir|Dame)"
_PERSON_PATTERNS = (
    re.compile(rf"\b{_HONORIFIC}[ \t]+(?P<name>{_NAME})"),
    re.compile(rf"\b(?i:my name is|my name's)[ \t]+(?P<name>{_NAME})"),
)


def _find_person_names(text: str) -> Iterator[Span]:
    for pattern in _PERSON_PATTERNS:
        for match in pattern.finditer(text):
            yield match.span("name")


_FINDERS: dict[str, Callable[[str], Iterable[Span]]] = {
    "email": _find_emails,
    "phone": _find_phones,
    "credit_card": _find_card_numbers,
    "iban": _find_ibans,
    "ip_address": _find_ip_addresses,
    "national_id": _find_national_ids,
    "person": _find_person_names,
}
