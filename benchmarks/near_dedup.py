"""Near-duplicate detection speed: tuneloop's vectorized MinHash/LSH against datasketch's, same rows, same run.

Prints one JSON line per (implementation, rows) with rows/s, recall and precision, then the speed
ratio, at 10k, 50k and 100k rows. Both use 128 permutations, character 5-grams of the normalized
text and a Jaccard threshold of 0.8. Truth: the pairs either one reports whose exact 5-gram Jaccard
similarity reaches the threshold.

    .venv/bin/python benchmarks/near_dedup.py [--sizes 10000 50000 100000]
"""

from __future__ import annotations

import argparse
import json
import random
import time

from datasketch import MinHash, MinHashLSH

from tuneloop.data.dedup import SHINGLE_BYTES, near_duplicate_pairs, normalize_text, shingles

THRESHOLD = 0.8


def synthetic_rows(count: int, seed: int = 0) -> list[str]:
    """Sentences of random made-up words; about 10% are light edits of an earlier row, 2% exact copies."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ten", "dra", "vos", "pel", "un", "ri", "sha", "gor", "bli", "ste", "quo"]
    vocabulary = ["".join(rng.choices(syllables, k=rng.randint(1, 3))) for _ in range(3000)]
    rows: list[str] = []
    for _ in range(count):
        roll = rng.random()
        if rows and roll < 0.02:
            rows.append(rng.choice(rows))
        elif rows and roll < 0.12:
            words = rng.choice(rows).split()
            words[rng.randrange(len(words))] = rng.choice(vocabulary)
            rows.append(" ".join(words))
        else:
            rows.append(" ".join(rng.choices(vocabulary, k=rng.randint(8, 20))))
    return rows


def datasketch_pairs(rows: list[str]) -> set[tuple[int, int]]:
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=128)
    signatures = []
    for index, text in enumerate(rows):
        data = normalize_text(text).encode("utf-8").ljust(SHINGLE_BYTES, b"\0")
        minhash = MinHash(num_perm=128)
        minhash.update_batch([data[i : i + SHINGLE_BYTES] for i in range(len(data) - SHINGLE_BYTES + 1)])
        lsh.insert(index, minhash)
        signatures.append(minhash)
    pairs = set()
    for index, minhash in enumerate(signatures):
        for other in lsh.query(minhash):
            if other != index and minhash.jaccard(signatures[other]) >= THRESHOLD:
                pairs.add((min(index, other), max(index, other)))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 100_000])
    args = parser.parse_args()
    for size in args.sizes:
        rows = synthetic_rows(size)
        started = time.perf_counter()
        ours = {(p.first, p.second) for p in near_duplicate_pairs(rows, THRESHOLD)}
        ours_seconds = time.perf_counter() - started
        started = time.perf_counter()
        theirs = datasketch_pairs(rows)
        theirs_seconds = time.perf_counter() - started
        truth = {pair for pair in ours | theirs if _jaccard(rows, *pair) >= THRESHOLD}
        for name, seconds, pairs in (("tuneloop", ours_seconds, ours), ("datasketch", theirs_seconds, theirs)):
            print(json.dumps({"impl": name, "rows": size, "seconds": round(seconds, 2),
                              "rows_per_s": round(size / seconds), "pairs": len(pairs),
                              "recall": round(len(pairs & truth) / max(1, len(truth)), 3),
                              "precision": round(len(pairs & truth) / max(1, len(pairs)), 3)}), flush=True)
        print(json.dumps({"rows": size, "speedup_vs_datasketch": round(theirs_seconds / ours_seconds, 1)}), flush=True)


def _jaccard(rows: list[str], first: int, second: int) -> float:
    a, b = shingles(rows[first]), shingles(rows[second])
    return len(a & b) / len(a | b)


if __name__ == "__main__":
    main()
