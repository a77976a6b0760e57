"""Training batches for in-batch negatives: one source per batch, and never two queries of the same passage.

In-batch negatives treat every other row's positive as a negative for a query. Two rows with the same passage
(SQuAD has 4.6 questions per paragraph) would make a query's own positive one of its negatives, and a batch that
mixes sources (Wikipedia paragraphs next to debate arguments) gives negatives too easy to teach anything. So
:class:`PassageBatchSampler`:

- **mixing rule**: each batch holds rows of one source only (as sentence-transformers' multi-dataset training
  does), and the batches of all sources are shuffled together, so over an epoch the sources are drawn in
  proportion to their number of rows and every row is seen once (a source's last partial batch is dropped);
- **same-passage rule**: a batch never holds two rows with the same passage; a row whose passage is already in the
  batch being filled waits for the next one.

Each epoch has its own seeded order (``seed + epoch``).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence

from torch.utils.data import Sampler

from hf_projections.checks import non_negative_int, positive_int
from hf_projections.data.pairs import SOURCE_COLUMN

PASSAGE_ID_COLUMN = "positive_id"


def _columns(rows) -> list[str]:
    if isinstance(rows, Mapping):  # plain columns {name: [values]}
        return list(rows)
    return rows.column_names if hasattr(rows, "column_names") else (list(rows[0]) if len(rows) else [])


def _column(rows, column: str) -> list:
    if isinstance(rows, Mapping) or hasattr(rows, "column_names"):
        return list(rows[column])
    return [row[column] for row in rows]


def passage_keys(rows, positive_column: str = "positive") -> list:
    """One key per row naming its positive passage: the ``positive_id`` column when the rows have one (same id =
    same passage), else the positive's text. ``rows``: a ``datasets.Dataset``, plain columns or a list of dicts."""
    return _column(rows, PASSAGE_ID_COLUMN if PASSAGE_ID_COLUMN in _columns(rows) else positive_column)


def row_sources(rows) -> list[str] | None:
    """The ``source`` column (the training set each row came from), or None when the rows have none."""
    return _column(rows, SOURCE_COLUMN) if SOURCE_COLUMN in _columns(rows) else None


class PassageBatchSampler(Sampler[list[int]]):
    """Row-index batches (``DataLoader(batch_sampler=...)``): one source each, no passage twice.

    Args:
        passages: one key per row naming its positive passage (its id, or its text).
        sources: one source name per row (None: all rows are one source).
        batch_size: rows per batch (every batch is full).
        seed: seed of the order; epoch ``e`` uses ``seed + e`` (see :meth:`set_epoch`).
    """

    def __init__(self, passages: Sequence, batch_size: int, sources: Sequence[str] | None = None, seed: int = 0):
        positive_int("batch_size", batch_size)
        non_negative_int("seed", seed)
        if sources is not None and len(sources) != len(passages):
            raise ValueError(f"sources must name one source per row: {len(sources)} sources for {len(passages)} rows")
        self.passages = list(passages)
        self.sources = list(sources) if sources is not None else ["all"] * len(self.passages)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self._batches: dict[int, list[list[int]]] = {}
        by_source: dict[str, list[int]] = {}
        for row, source in enumerate(self.sources):
            by_source.setdefault(source, []).append(row)
        self.rows_by_source = by_source
        for source, rows in by_source.items():
            distinct = len({self.passages[row] for row in rows})
            if distinct < batch_size:
                raise ValueError(
                    f"source {source!r} has {distinct} distinct passages, fewer than batch_size={batch_size}: no batch "
                    "of it can hold distinct passages; lower batch_size or add rows"
                )

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` for the next iteration."""
        self.epoch = non_negative_int("epoch", epoch)

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """The batches of an epoch (default: the current one), computed once and kept."""
        epoch = self.epoch if epoch is None else epoch
        if epoch not in self._batches:
            self._batches = {epoch: self._build(random.Random(self.seed + epoch))}  # keep one epoch's worth
        return self._batches[epoch]

    def _build(self, rng: random.Random) -> list[list[int]]:
        batches: list[list[int]] = []
        for source in sorted(self.rows_by_source):
            rows = list(self.rows_by_source[source])
            rng.shuffle(rows)
            batches += self._pack(rows)
        rng.shuffle(batches)
        return batches

    def _pack(self, rows: list[int]) -> list[list[int]]:
        """Fill batches in order; a row whose passage the current batch holds waits for a later batch."""
        batches, current, seen, waiting = [], [], set(), []
        pending = iter(rows)
        while True:
            row = None
            for index, candidate in enumerate(waiting):  # rows that waited go first, when they fit
                if self.passages[candidate] not in seen:
                    row = waiting.pop(index)
                    break
            if row is None:
                row = next(pending, None)
                if row is None:
                    break
                if self.passages[row] in seen:
                    waiting.append(row)
                    continue
            current.append(row)
            seen.add(self.passages[row])
            if len(current) == self.batch_size:
                batches.append(current)
                current, seen = [], set()
        return batches  # the last partial batch and rows that never fit are dropped

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())
