"""The seeded, stratified sample of test images that the expensive checks run on.

Maps are made for every image; the faithfulness curves and the randomisation tests cost tens of
forward passes or whole extra models per image, so they run on a sample: a few hundred images,
stratified by true class and by whether the prediction was right, each stratum represented in
proportion to its size (largest remainder, at least one image from every stratum).

Which images are drawn depends only on the seed and the row ids, never on the order in which
shards arrived: each row gets a key hashed from (seed, row id), and a stratum's sample is the rows
with the smallest keys. The sampler streams: it keeps at most `size` candidates per stratum, so
the driver's memory does not grow with the number of images.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable

from medray.data.phantoms import proportional_class_counts

Stratum = tuple[int, bool]  # (true class, prediction correct)


def sample_key(seed: int, row_id: str) -> int:
    """A row's place in the draw: 64 bits of sha256(seed, row id)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{row_id}".encode()).digest()[:8], "big")


class StratifiedSampler:
    """Feed (row id, true class, prediction) in any order and batches, each image once (a shard
    holds all maps of its images: pass one map per image); `draw()` gives the sample."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed = size, seed
        self.counts: dict[Stratum, int] = {}
        # stratum -> heap of (-key, row id): the `size` smallest keys, the largest on top to evict
        self._candidates: dict[Stratum, list[tuple[int, str]]] = {}

    def add(self, row_ids: Iterable[str], labels: Iterable[int], predictions: Iterable[int]) -> None:
        for row_id, label, prediction in zip(row_ids, labels, predictions):
            stratum = (int(label), bool(label == prediction))
            self.counts[stratum] = self.counts.get(stratum, 0) + 1
            heap = self._candidates.setdefault(stratum, [])
            entry = (-sample_key(self.seed, str(row_id)), str(row_id))
            if len(heap) < self.size:
                heapq.heappush(heap, entry)
            elif entry > heap[0]:
                heapq.heapreplace(heap, entry)

    def draw(self) -> dict[str, Stratum]:
        """{row id: stratum} of the sample: min(size, images) rows, strata sorted for reproducibility."""
        strata = sorted(self.counts)
        total = sum(self.counts.values())
        if total == 0 or self.size == 0:
            return {}
        wanted = proportional_class_counts(min(self.size, total), tuple(self.counts[s] for s in strata))
        chosen = {}
        for stratum, count in zip(strata, wanted):
            smallest_first = sorted(self._candidates[stratum], reverse=True)
            chosen.update({row_id: stratum for _, row_id in smallest_first[:count]})
        return chosen


def stratified_sample(row_ids: Iterable[str], labels: Iterable[int], predictions: Iterable[int],
                      size: int, seed: int) -> dict[str, Stratum]:
    """The sample of a whole table at once: {row id: (true class, prediction correct)}."""
    sampler = StratifiedSampler(size, seed)
    sampler.add(row_ids, labels, predictions)
    return sampler.draw()
