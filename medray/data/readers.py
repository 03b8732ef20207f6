"""Read tasks ("pieces", see medray.data.sources) as a Ray Dataset, and their rows inside Ray Data
workers. Two consumers share them: the pipeline decodes and resizes, the manifest pass hashes and
measures. How a piece's rows are read is its source kind's `rows`; bad content is judged only in
decode.py.
"""

from __future__ import annotations

from typing import Iterator

import ray
from ray.data import DataContext

from medray.data.sources import RawRow, get_source_kind


def pieces_of(batch: dict) -> Iterator[dict]:
    """A Ray Data batch of pieces (columns of arrays) back into one dict per piece."""
    for index in range(len(batch["file"])):
        yield {key: values[index] for key, values in batch.items()}


def rows_of(kind: str, piece: dict, settings: dict) -> Iterator[RawRow]:
    """The rows of one piece of the source kind named `kind` (a Source's `kind`, data.source)."""
    return get_source_kind(kind).rows(piece, settings)


def read_tasks(pieces: list[dict], kind: str, read_batch, fn_kwargs: dict) -> ray.data.Dataset:
    """A Ray Dataset whose tasks each run `read_batch` over a batch of pieces (as many as the
    source kind `kind` reads in one task).

    Ray Data's per-operator resource reservation is turned off first: on a 2-CPU cluster it held
    a one-operator pipeline to one task at a time (`backpressured:tasks(ResourceBudget)`), so
    decoding used one core and ran at half the speed it has without the reservation. Ray's own
    scheduler still keeps tasks within the CPUs that training leaves free.
    """
    DataContext.get_current().op_resource_reservation_enabled = False
    items = ray.data.from_items(pieces, override_num_blocks=max(1, min(len(pieces), 64)))
    return items.map_batches(read_batch, batch_size=get_source_kind(kind).pieces_per_read_task, fn_kwargs=fn_kwargs)
