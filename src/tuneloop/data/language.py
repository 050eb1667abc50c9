"""Detect the language of each row offline with lingua, and list the rows confidently in an unexpected language.

The detector uses lingua's high-accuracy models for COMMON_LANGUAGES (32 widely used languages) plus the
expected language, and is built once per language set (loading the models is the slow part). Why this choice,
measured on this machine (2 shared cores, lingua 2.1, 10,000 rows of 50-70 characters, parallel detection):

    COMMON_LANGUAGES, high accuracy   ~3 s to load the models once, then 1.3-3 s for the 10,000 rows
    all 75 languages, high accuracy   ~5 s to load, 8.5-9 s for the rows
    COMMON_LANGUAGES, low accuracy    ~0.2 s to load, ~0.4 s for the rows
    all 75 languages, low accuracy    ~0.3 s to load, ~1.2 s for the rows

The cores are shared, so timings vary between runs. Through this module, detect_languages on the 10,000 rows
took 2-5 s including the one-off model load. Low-accuracy mode is faster but worse on short rows: in a spot
check of 9 short English rows, high accuracy picked English for 6 and low accuracy for 4 (it read "Reset my
password please" as Italian). Restricting to common
languages also keeps rare look-alikes from winning on short text (all 75 languages call "Hello there, general
Kenobi" Latin). A row in a language outside the set is reported as the closest language in the set.

Rows shorter than min_chars (after stripping) get None: lingua's guesses on a few words are close to chance.
"""

from __future__ import annotations

from functools import lru_cache

from lingua import ConfidenceValue, IsoCode639_1, Language, LanguageDetector, LanguageDetectorBuilder

COMMON_LANGUAGES = (
    "en", "zh", "es", "ar", "hi", "bn", "pt", "ru", "ja", "de", "fr", "id", "ms", "ur", "tr", "it", "ko", "vi",
    "fa", "pl", "uk", "nl", "th", "ro", "el", "cs", "hu", "sv", "da", "nb", "fi", "he",
)  # fmt: skip
# The expected language wins a near-tie: short rows in the data's own language should not read as foreign.
EXPECTED_LANGUAGE_TIE_RATIO = 0.8


def detect_languages(texts: list[str], expected: str | None = "en", min_chars: int = 20) -> list[str | None]:
    """The ISO 639-1 code ("en", "fr", ...) of each text, or None when it is too short or undecidable.

    `expected` is always among the candidate languages, and is chosen when its confidence is at least
    EXPECTED_LANGUAGE_TIE_RATIO times the best one's.
    """
    expected = expected.lower() if expected else None
    ranked = _ranked_confidences(texts, expected, min_chars)
    return [_best_language(values, expected) for values in ranked]


def unexpected_language_rows(
    texts: list[str], expected: str = "en", min_chars: int = 20, min_confidence: float = 0.5
) -> list[tuple[int, str]]:
    """(index, detected code) of each row that lingua puts in another language with at least min_confidence.

    Confidences sum to 1 over the candidate languages; a clear sentence of ten words scores 0.6-0.99 for its
    language, while a mixed or ambiguous row rarely passes 0.5.
    """
    expected = expected.lower()
    rows = []
    for index, values in enumerate(_ranked_confidences(texts, expected, min_chars)):
        detected = _best_language(values, expected)
        if detected not in (None, expected) and values[0].value >= min_confidence:
            rows.append((index, detected))
    return rows


def language_screen(
    texts: list[str], expected: str = "en", min_chars: int = 20, min_confidence: float = 0.5
) -> tuple[list[str | None], list[tuple[int, str]]]:
    """Both answers from one detection pass: each row's code (as detect_languages) and the confident
    unexpected rows (as unexpected_language_rows)."""
    expected = expected.lower()
    codes: list[str | None] = []
    unexpected = []
    for index, values in enumerate(_ranked_confidences(texts, expected, min_chars)):
        detected = _best_language(values, expected)
        codes.append(detected)
        if detected not in (None, expected) and values[0].value >= min_confidence:
            unexpected.append((index, detected))
    return codes, unexpected


def _ranked_confidences(texts: list[str], expected: str | None, min_chars: int) -> list[list[ConfidenceValue]]:
    """Per text, lingua's confidence values best first; an empty list for texts shorter than min_chars."""
    detector = _detector(_candidate_codes(expected))
    long_enough = [index for index, text in enumerate(texts) if len(text.strip()) >= min_chars]
    values = detector.compute_language_confidence_values_in_parallel([texts[index] for index in long_enough])
    ranked: list[list[ConfidenceValue]] = [[] for _ in texts]
    for index, text_values in zip(long_enough, values, strict=True):
        ranked[index] = text_values
    return ranked


def _best_language(values: list[ConfidenceValue], expected: str | None) -> str | None:
    # lingua gives all-zero confidences to text it cannot judge (digits, symbols, unknown scripts).
    if not values or values[0].value == 0:
        return None
    best = values[0]
    if expected is not None:
        for value in values:
            if _code(value.language) == expected and value.value >= EXPECTED_LANGUAGE_TIE_RATIO * best.value:
                return expected
    return _code(best.language)


def _candidate_codes(expected: str | None) -> tuple[str, ...]:
    if expected is None or expected in COMMON_LANGUAGES:
        return COMMON_LANGUAGES
    return (*COMMON_LANGUAGES, expected)


@lru_cache(maxsize=4)
def _detector(codes: tuple[str, ...]) -> LanguageDetector:
    return LanguageDetectorBuilder.from_iso_codes_639_1(*[_iso_code(code) for code in codes]).build()


def _iso_code(code: str) -> IsoCode639_1:
    try:
        return IsoCode639_1.from_str(code)
    except ValueError:
        raise ValueError(
            f"unknown language code {code!r}: use a lower-case ISO 639-1 code that lingua supports, e.g. 'en' or 'fr'"
        ) from None


def _code(language: Language) -> str:
    return language.iso_code_639_1.name.lower()
