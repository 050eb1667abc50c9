"""Bias screen: how many rows mention demographic terms, per label (or response type), and where that is skewed.

Lexicon. TERM_GROUPS maps a term group ("gender") to its categories ("female", "male"), each a tuple of words
or short phrases. Terms match as whole words, case-insensitively: "he" does not match "the", "man" matches
"man" and "man's" but not "manager", "woman" or "mankind". Plurals are listed explicitly. Words with a common
non-demographic sense are left out on purpose ("miss", "ms" as in milliseconds, "senior" as in "senior
engineer", "old" as in "old phone"), and so are nationality and ethnicity terms: a fair list is long and its
words are ambiguous. Pass your own `lexicon` (same shape as TERM_GROUPS) to screen for other groups.

Counts are of rows, not occurrences: a row that says "she" three times counts once for "female".

Flags, each a sentence plus the numbers behind it:
    label skew    with `groups` given: for each term group and label, the share of the rows mentioning each
                  category that carry the label ("80% of rows mentioning female terms are labelled 'negative',
                  against 30% of rows mentioning male terms"). Flagged when the compared categories are each
                  mentioned in at least min_count rows, the higher share covers at least min_count rows, is
                  more than SKEW_RATIO times the lower one, and Fisher's exact test on the 2x2 table gives
                  p < MAX_P_VALUE (scipy). With more than two categories the highest and lowest shares are
                  compared. A two-label dataset skewed one way is flagged once per label, from each side.
    imbalance     gender only, with or without groups: rows mentioning one gender's terms outnumber the other's
                  by more than GENDER_IMBALANCE_RATIO to 1, with at least min_count rows on the larger side.

This is a screen for a human to read, not a verdict: it sees words, not meaning ("he" in a quoted title counts).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

TERM_GROUPS: dict[str, dict[str, tuple[str, ...]]] = {
    "gender": {
        "female": (
            "she", "her", "hers", "herself", "woman", "women", "girl", "girls", "lady", "ladies", "female", "females",
            "mother", "mothers", "mom", "moms", "mum", "mums", "daughter", "daughters", "sister", "sisters", "wife",
            "wives", "aunt", "aunts", "niece", "nieces", "grandmother", "grandmothers", "girlfriend", "girlfriends",
            "mrs", "madam",
        ),
        "male": (
            "he", "him", "his", "himself", "man", "men", "boy", "boys", "gentleman", "gentlemen", "male", "males",
            "father", "fathers", "dad", "dads", "son", "sons", "brother", "brothers", "husband", "husbands", "uncle",
            "uncles", "nephew", "nephews", "grandfather", "grandfathers", "boyfriend", "boyfriends", "mr", "sir",
        ),
    },
    "age": {
        "young": (
            "young", "youth", "youths", "youngster", "youngsters", "teen", "teens", "teenager", "teenagers",
            "adolescent", "adolescents", "child", "children", "kid", "kids", "millennial", "millennials",
        ),
        "old": (
            "elderly", "old people", "old man", "old woman", "older people", "older adults", "seniors",
            "senior citizen", "senior citizens", "retiree", "retirees", "pensioner", "pensioners", "grandparent",
            "grandparents", "boomer", "boomers",
        ),
    },
    "religion": {
        "christian": ("christian", "christians", "christianity", "catholic", "catholics", "protestant", "protestants"),
        "muslim": ("muslim", "muslims", "islam", "islamic"),
        "jewish": ("jewish", "jew", "jews", "judaism"),
        "hindu": ("hindu", "hindus", "hinduism"),
        "buddhist": ("buddhist", "buddhists", "buddhism"),
    },
}

SKEW_RATIO = 2.0
MAX_P_VALUE = 0.05
GENDER_IMBALANCE_RATIO = 3.0

Lexicon = Mapping[str, Mapping[str, Sequence[str]]]
CategoryCounts = dict[str, int]


def bias_screen(
    texts: list[str],
    groups: Sequence[Hashable | Sequence[Hashable]] | None = None,
    min_count: int = 5,
    lexicon: Lexicon | None = None,
) -> dict:
    """Count rows mentioning each term category, overall and per label, and flag skews (see the module docstring).

    `groups` holds the label (or response type) of each row; a list or tuple of labels counts the row under
    each of them. Returns a JSON-serializable dict:
        {"rows": int, "labels": {label: rows},
         "term_groups": {group: {"overall": {category: rows}, "by_label": {label: {category: rows}}}},
         "flags": [{"kind": "label_skew" | "imbalance", "term_group": ..., "message": ..., ...numbers}]}
    """
    if groups is not None and len(groups) != len(texts):
        raise ValueError(f"groups has {len(groups)} entries but texts has {len(texts)}: give one label per row")
    patterns = _compile(lexicon or TERM_GROUPS)
    row_labels = [_labels_of(group) for group in groups] if groups is not None else [[] for _ in texts]
    label_rows = Counter(label for labels in row_labels for label in labels)

    report_groups, flags = {}, []
    for term_group, categories in patterns.items():
        mentions = [{c for c, pattern in categories.items() if pattern.search(text)} for text in texts]
        overall = _count_rows(mentions, categories)
        by_label = {}
        for label in label_rows:
            labelled = [mentioned for mentioned, labels in zip(mentions, row_labels, strict=True) if label in labels]
            by_label[label] = _count_rows(labelled, categories)
        report_groups[term_group] = {"overall": overall, "by_label": by_label}
        flags += _flags_for(term_group, overall, by_label, min_count)
    return {"rows": len(texts), "labels": dict(label_rows), "term_groups": report_groups, "flags": flags}


def _flags_for(
    term_group: str, overall: CategoryCounts, by_label: dict[str, CategoryCounts], min_count: int
) -> list[dict]:
    flags = [_label_skew(term_group, label, counts, overall, min_count) for label, counts in by_label.items()]
    if term_group == "gender":
        flags.append(_imbalance(term_group, overall, min_count))
    return [flag for flag in flags if flag is not None]


def _compile(lexicon: Lexicon) -> dict[str, dict[str, re.Pattern[str]]]:
    return {
        term_group: {category: _whole_words(terms) for category, terms in categories.items()}
        for term_group, categories in lexicon.items()
    }


def _whole_words(terms: Sequence[str]) -> re.Pattern[str]:
    alternatives = "|".join(r"\s+".join(map(re.escape, term.split())) for term in terms)
    return re.compile(rf"\b(?:{alternatives})\b", re.IGNORECASE)


def _labels_of(group: Hashable | Sequence[Hashable]) -> list[str]:
    # Labels become JSON keys, so they are strings; a multi-label row counts under each of its labels.
    if isinstance(group, list | tuple | set | frozenset):
        return [str(label) for label in group]
    return [str(group)]


def _count_rows(mentions: list[set[str]], categories: Mapping[str, object]) -> CategoryCounts:
    """Rows mentioning each category; `mentions` holds the set of categories each row mentions."""
    counts = Counter(category for mentioned in mentions for category in mentioned)
    return {category: counts[category] for category in categories}


def _label_skew(
    term_group: str, label: str, in_label: CategoryCounts, overall: CategoryCounts, min_count: int
) -> dict | None:
    """Compare, across categories, the share of rows mentioning the category that carry this label."""
    shares = {c: in_label[c] / overall[c] for c in overall if overall[c] >= min_count}
    if len(shares) < 2:
        return None
    high, low = max(shares, key=shares.get), min(shares, key=shares.get)
    ratio = shares[high] / shares[low] if shares[low] else None
    if in_label[high] < min_count or (ratio is not None and ratio <= SKEW_RATIO):
        return None
    p_value = _fisher_p_value(in_label[high], overall[high], in_label[low], overall[low])
    if p_value >= MAX_P_VALUE:
        return None
    message = (
        f"{term_group}: {shares[high]:.0%} of rows mentioning {high} terms are labelled {label!r}, against "
        f"{shares[low]:.0%} of rows mentioning {low} terms ({in_label[high]}/{overall[high]} vs "
        f"{in_label[low]}/{overall[low]}, Fisher p={p_value:.2g})."
    )
    return {
        "kind": "label_skew",
        "term_group": term_group,
        "label": label,
        "over_represented": high,
        "compared_with": low,
        "rows_with_label": {high: in_label[high], low: in_label[low]},
        "rows_mentioning": {high: overall[high], low: overall[low]},
        "shares": {high: round(shares[high], 4), low: round(shares[low], 4)},
        "ratio": round(ratio, 4) if ratio is not None else None,
        "p_value": p_value,
        "message": message,
    }


def _fisher_p_value(hits_a: int, total_a: int, hits_b: int, total_b: int) -> float:
    # Fisher's exact test rather than chi-square: with min_count as low as 5 the chi-square approximation is poor.
    from scipy.stats import fisher_exact  # scipy comes with datasketch; imported late because it is slow to load

    table = [[hits_a, total_a - hits_a], [hits_b, total_b - hits_b]]
    return float(fisher_exact(table).pvalue)


def _imbalance(term_group: str, overall: CategoryCounts, min_count: int) -> dict | None:
    if len(overall) < 2:
        return None
    (larger, larger_rows), (smaller, smaller_rows) = sorted(overall.items(), key=lambda item: -item[1])[:2]
    if larger_rows < min_count or larger_rows <= GENDER_IMBALANCE_RATIO * smaller_rows:
        return None
    ratio = larger_rows / smaller_rows if smaller_rows else None
    ratio_text = f" {ratio:.1f}:1" if ratio is not None else ""
    message = (
        f"{term_group}: rows mentioning {larger} terms outnumber those mentioning {smaller} terms{ratio_text} "
        f"({larger_rows} vs {smaller_rows}; flagged above {GENDER_IMBALANCE_RATIO:g}:1)."
    )
    return {
        "kind": "imbalance",
        "term_group": term_group,
        "over_represented": larger,
        "compared_with": smaller,
        "rows_mentioning": {larger: larger_rows, smaller: smaller_rows},
        "ratio": round(ratio, 4) if ratio is not None else None,
        "message": message,
    }
