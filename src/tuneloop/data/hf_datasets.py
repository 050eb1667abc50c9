"""A Hugging Face dataset saved with `save_to_disk`, read as rows when a data file names its directory.

    data.train_file: data/my_dataset          # Dataset.save_to_disk(...) (state.json + arrow files)
    data.train_file: data/my_dataset_dict     # DatasetDict.save_to_disk(...): its "train" split,
    data.train_file: data/my_dataset_dict/validation   # or name the split's folder

Rows are tagged `DIR[row N]`. data/load.py reads any other directory as a folder of shards.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tuneloop.data.rows import Row
from tuneloop.errors import DataError


def is_saved_dataset(path: Path) -> bool:
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def read_saved_dataset(path: Path, split: str = "train") -> Iterator[Row]:
    """Rows of a saved HF dataset (the given split of a DatasetDict)."""
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
