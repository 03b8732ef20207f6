"""data.color: whether a dataset is read as gray or RGB, decided once on the driver before Ray starts.

"auto" decodes a small, evenly spread sample of train images (of all images, for images without
labels): when at least half of them carry colour (channels that differ, not gray saved as RGB) the
dataset is read as RGB, otherwise as gray. Images with and without labels decode the same way.
Pathology, dermatoscopy, fundus and blood-cell images are colour, and colour is what separates
their classes; X-ray, CT and MRI are gray however they were saved.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from medray.data.decode import BadImage, decode_row, is_colour
from medray.data.sources.base import Source, reader_settings
from medray.data.sources.registry import get_source_kind

# Train images decoded to decide "auto": enough to see a colour dataset, cheap on the driver.
SAMPLE_IMAGES = 32


def with_color(source: Source, data_config) -> Source:
    """The source with its colour decided: data.color as given, or "auto" resolved from a sample."""
    color = data_config.color if data_config.color != "auto" else detect_color(source, data_config)
    return replace(source, color=color)


def detect_color(source: Source, data_config) -> str:
    # Images without labels are all test rows (discover_unlabelled).
    pieces = source.pieces["train"] or source.pieces["test"]
    if not pieces:
        return "gray"
    spread = np.linspace(0, len(pieces) - 1, min(len(pieces), SAMPLE_IMAGES)).astype(int)
    chosen = [pieces[i] for i in np.unique(spread)]
    per_piece = max(1, SAMPLE_IMAGES // len(chosen))
    settings = reader_settings(source, data_config) | {"mask_column": None, "mask_columns": None}
    kind, votes = get_source_kind(source.kind), []
    for piece in chosen:
        step = max(1, len(piece["rows"]) // per_piece)
        sample = {key: value[::step][:per_piece] if isinstance(value, list) else value for key, value in piece.items()}
        for row in kind.rows(sample, settings):
            try:
                votes.append(is_colour(decode_row(row, settings["max_pixels"], color="rgb")[0]))
            except BadImage:  # reported by the manifest pass, not here
                continue
    return "rgb" if votes and np.mean(votes) >= 0.5 else "gray"
