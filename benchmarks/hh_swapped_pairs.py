"""Write HH-RLHF harmless-base with chosen and rejected swapped, for the safety gate's red-team run.

    python benchmarks/hh_swapped_pairs.py [OUT]   # default runs/hh-swapped/harmless-base-swapped.jsonl.gz

The rows keep their order and prompts, so `data.test_size` with the same seed splits them exactly as the
unswapped file. The output goes under runs/ (not committed): the data is Anthropic's, not ours.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

SOURCE = Path("../shared/datasets/hh-rlhf/harmless-base/test.jsonl.gz")


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path("runs/hh-swapped/harmless-base-swapped.jsonl.gz")
    if not SOURCE.is_file():
        print(f"{SOURCE}: not found; run from the repository root with ../shared/datasets present", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    with gzip.open(SOURCE, "rt", encoding="utf-8") as source, gzip.open(out, "wt", encoding="utf-8") as target:
        for line in source:
            if line.strip():
                row = json.loads(line)
                row["chosen"], row["rejected"] = row["rejected"], row["chosen"]
                target.write(json.dumps(row, ensure_ascii=False) + "\n")
                rows += 1
    print(f"{out}: {rows} pairs, chosen and rejected swapped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
