"""Directories as data files: a Hugging Face dataset saved with `save_to_disk`, or a folder of shards.

    data.train_file: data/my_dataset          # Dataset.save_to_disk(...) (state.json + arrow files)
    data.train_file: data/my_dataset_dict     # DatasetDict.save_to_disk(...): its "train" split,
    data.train_file: data/my_dataset_dict/validation   # or name the split's folder
    data.train_file: data/shards              # *.parquet / *.jsonl(.gz) / *.json / *.csv files, in name order

Rows are tagged `DIR[row N]` for a saved dataset and with each shard's own `file:line` for shards.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tuneloop.errors import DataError


def is_saved_dataset(path: Path) -> bool:
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def read_directory(path: Path, split: str = "train") -> Iterator:
    """Rows of a saved HF dataset (the given split of a DatasetDict) or of every shard in the folder."""
    from tuneloop.data.load import Row, file_kind, read_rows

    if is_saved_dataset(path):
        from datasets import DatasetDict, load_from_disk

        try:
            dataset = load_from_disk(str(path))
        except Exception as exc:  # datasets raises several types for a damaged directory
            raise DataError(f"{path}: a saved Hugging Face dataset that cannot be loaded ({exc}).") from None
        if isinstance(dataset, DatasetDict):
            if split not in dataset:
                raise DataError(f"{path}: a DatasetDict without a '{split}' split (it has {sorted(dataset)}); point "
                                f"at one split's folder, e.g. {path / sorted(dataset)[0]}.")
            dataset = dataset[split]
        for index, record in enumerate(dataset, start=1):
            yield Row(f"{path}[row {index}]", record)
        return
    shards = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and file_kind(p))
    kinds = {file_kind(p) for p in shards}
    if not shards:
        raise DataError(f"{path}: a directory with neither a saved Hugging Face dataset (state.json) nor data files "
                        "(.parquet, .jsonl, .json, .csv, .tsv); point data.train_file at a file or such a folder.")
    if len(kinds) > 1:
        raise DataError(f"{path}: shards of several types ({', '.join(sorted(kinds))}); keep one type per folder.")
    for shard in shards:
        yield from read_rows(shard)
