"""WordNet for synonym augmentation: Debian's `wordnet-base` read through nltk, set up once in a cache.

nltk 3.10 only reads corpora under its data roots, refuses symlinks that leave the corpus folder, and
needs a `lexnames` file that Debian's package lacks; so the first use copies the dict files into
$TUNELOOP_HOME/wordnet and derives `lexnames` from the installed man page (or the data files).
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path

from tuneloop.errors import DataError
from tuneloop.workspace import cache_root

WORDNET_DIR = Path("/usr/share/wordnet")
LEXNAMES_MAN_PAGE = Path("/usr/share/man/man5/lexnames.5WN.gz")
WORDNET_FILES = ("data.*", "index.*", "*.exc", "cntlist.rev", "lexnames")
# Syntactic category codes of the lexnames file, from lexnames(5WN).
CATEGORY_CODES = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
DATA_FILE_POS = {"data.noun": "noun", "data.verb": "verb", "data.adj": "adj", "data.adv": "adv"}
_LEXNAMES_ROW = re.compile(r"^(\d{2})\t\s*((?:noun|verb|adj|adv)\.\w+)\s*\t")


def wordnet():
    """The WordNet reader (nltk), built on first use from Debian's `wordnet-base` or $TUNELOOP_WORDNET."""
    source = Path(os.environ.get("TUNELOOP_WORDNET", WORDNET_DIR))
    return _load_wordnet(source, cache_root() / "wordnet")


@lru_cache(maxsize=4)
def _load_wordnet(source: Path, reader_dir: Path):
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    if not (source / "data.noun").is_file():
        raise DataError(
            f"WordNet is not installed ({source} has no data.noun); synonym and EDA augmentation need it. "
            "Install it with `apt-get install wordnet-base` (Debian/Ubuntu), or point TUNELOOP_WORDNET at a "
            "WordNet 3.0 dict directory."
        )
    _build_reader_dir(source, reader_dir)
    if str(reader_dir) not in nltk.data.path:
        nltk.data.path.append(str(reader_dir))  # nltk refuses to read corpora outside its data roots

    class EnglishWordNetReader(WordNetCorpusReader):
        def map_wn(self, version: str = "wordnet"):
            # The WordNet 3.0 sense map serves only multilingual lookups and needs index.sense, which Debian
            # leaves out; without this override the reader fails to load.
            return None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": we need English only
        return EnglishWordNetReader(str(reader_dir), None)


def _build_reader_dir(source: Path, reader_dir: Path) -> None:
    """Copy the dict files next to a `lexnames` file, which Debian leaves out and nltk requires.

    Copies, not links: nltk refuses symlinks that leave the corpus root and files with several hard links.
    The `source` file, written last, marks a complete build and says which dict it came from.
    """
    marker = reader_dir / "source"
    if marker.is_file() and marker.read_text(encoding="utf-8") == str(source.resolve()):
        return
    reader_dir.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(dir=reader_dir.parent, prefix=".wordnet-"))
    try:
        for pattern in WORDNET_FILES:
            for path in source.glob(pattern):
                shutil.copyfile(path, building / path.name)
                os.chmod(building / path.name, 0o644)  # nltk refuses group- or world-writable corpus files
        if not (building / "lexnames").is_file():
            (building / "lexnames").write_text(derive_lexnames(source), encoding="utf-8")
        (building / "source").write_text(str(source.resolve()), encoding="utf-8")
        shutil.rmtree(reader_dir, ignore_errors=True)
        try:
            os.replace(building, reader_dir)
        except OSError:
            if not marker.is_file():  # another process may have finished the same build first
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)


def derive_lexnames(source: Path, man_page: Path = LEXNAMES_MAN_PAGE) -> str:
    """The `lexnames` file: number, lexicographer file name and category code, one tab-separated line each.

    Parsed from the lexnames(5WN) man page that `wordnet-base` installs; where the page is missing, a generic
    list built from the file numbers that the dict's data files use.
    """
    rows = lexnames_from_man_page(man_page) if man_page.is_file() else []
    if not rows:
        rows = lexnames_from_data_files(source)
    return "".join(f"{number:02d}\t{name}\t{CATEGORY_CODES[name.split('.')[0]]}\n" for number, name in rows)


def lexnames_from_man_page(man_page: Path) -> list[tuple[int, str]]:
    """(number, name) from the man page's table; empty when the table is not the contiguous list nltk needs."""
    with gzip.open(man_page, "rt", encoding="utf-8", errors="replace") as handle:
        rows = [(int(m.group(1)), m.group(2)) for m in map(_LEXNAMES_ROW.match, handle) if m]
    return rows if [number for number, _ in rows] == list(range(len(rows))) else []


def lexnames_from_data_files(source: Path) -> list[tuple[int, str]]:
    """(number, "POS.fileNN") for every lexicographer file number the data files use, gaps filled.

    The second field of each synset line in data.* is its two-digit lexicographer file number; the real
    names (noun.animal, ...) are not in the data, so these stand in. They only show up in `Synset.lexname()`.
    """
    pos_of_number: dict[int, str] = {}
    for file_name, pos in DATA_FILE_POS.items():
        with (source / file_name).open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.startswith(" "):  # the licence header lines start with spaces
                    pos_of_number.setdefault(int(line.split(" ", 2)[1]), pos)
    last = max(pos_of_number, default=-1)
    # nltk reads line i as file number i, so unused numbers still need a line.
    return [(number, f"{pos_of_number.get(number, 'noun')}.file{number:02d}") for number in range(last + 1)]


def synonyms(word: str) -> list[str]:
    """WordNet synonyms of a word in any sense, multi-word lemmas with spaces, the word itself left out."""
    reader = wordnet()
    lowered = word.lower()
    base_forms = {lowered, reader.morphy(lowered)}  # "runs" -> "run" is no rewording
    found: list[str] = []
    for synset in reader.synsets(lowered):
        for lemma in synset.lemma_names():
            synonym = lemma.replace("_", " ")
            if synonym[:1].isupper():
                continue  # a proper name ("fox" -> "George Fox") is another thing, not another word for it
            if synonym.lower() not in base_forms and synonym not in found:
                found.append(synonym)
    return found
