"""A new source kind is one class and one `register` call: the kind below (a tab-separated list of
image files with their split and label, as ChestX-ray14 ships its labels) is defined here, and
config validation, discovery, colour detection, the empty-split message, `medray data inspect`'s
guess and the pipeline's reader all find it without a line of medray changed."""

from pathlib import Path

import numpy as np
import pytest

from medray.config import DataConfig, validate_config
from medray.data.pipeline import read_pieces
from medray.data.sources import (RawRow, Source, SourceKind, discover, get_source_kind, guess_kind, register,
                                 source_kind_names)
from medray.data.sources.base import labelled_source, piece_of_rows, reader_settings
from medray.data.sources.registry import unregister
from medray.errors import MedrayError

from data_factory import image_bytes, scan, write


class ListingSource(SourceKind):
    """`<file>\t<split>\t<label>` lines in a .tsv file; image paths relative to its folder."""

    name = "listing"
    layout = "one <file> <split> <label> line per image in <path>"
    suffixes = (".tsv",)

    def discover(self, data_config) -> Source:
        listing = Path(data_config.path)
        lines = [line.split("\t") for line in listing.read_text().splitlines() if line]
        class_names = data_config.class_names or sorted({label for _, _, label in lines})
        labeller = self.labeller(class_names, data_config)
        pieces = {"train": [], "val": [], "test": []}
        for number, (file, split, label) in enumerate(lines):
            row_id = f"{listing.name}#{number}"
            labels = labeller.rows([label], [row_id], [f"{listing} line {number + 1}"], split)
            piece = piece_of_rows(str(listing.parent / file), 0, [0], [row_id], labels, split)
            pieces[split] += [piece] if piece else []
        return labelled_source(self, str(listing), class_names, pieces, labeller)

    def rows(self, piece, settings):
        yield RawRow(str(piece["row_ids"][0]), int(piece["labels"][0]), str(piece["file"]),
                     Path(str(piece["file"])).read_bytes())


@pytest.fixture
def listing_kind():
    kind = register(ListingSource())
    yield kind
    unregister(kind.name)


def listing(root: Path, splits=("train", "val", "test")) -> Path:
    lines = []
    for split in splits:
        for index in range(4):
            label = "effusion" if index % 2 else "no_finding"
            write(root / "images" / f"{split}{index}.png", image_bytes(scan(len(lines))))
            lines.append(f"images/{split}{index}.png\t{split}\t{label}")
    path = root / "labels.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_registered_kind_is_a_valid_data_source_and_an_unregistered_one_is_not(listing_kind, tmp_path):
    assert source_kind_names()[-1] == "listing"
    assert DataConfig(path=tmp_path, source="listing").source == "listing"
    unregister("listing")
    with pytest.raises(MedrayError, match=r"data.source='listing' is not allowed: Input should be "
                                          r"'parquet', 'folders', 'npz', 'csv', 'npz_volumes', 'nifti' or "
                                          r"'dicom_series'"):
        validate_config({"data": {"path": str(tmp_path), "source": "listing"}})


def test_a_registered_kind_is_discovered_through_discover(listing_kind, tmp_path):
    source = discover(DataConfig(path=listing(tmp_path), source="listing"))
    assert source.kind == "listing" and source.class_names == ["effusion", "no_finding"]
    assert source.class_counts == {split: [2, 2] for split in ("train", "val", "test")}
    assert source.color == "gray"  # data.color auto: decided by reading train rows through the kind


def test_an_empty_split_names_the_kinds_own_layout(listing_kind, tmp_path):
    with pytest.raises(MedrayError, match=r"the test split has no images; medray expects one <file> <split> "
                                          r"<label> line per image"):
        discover(DataConfig(path=listing(tmp_path, splits=("train", "val")), source="listing"))


def test_data_inspect_guesses_a_registered_kind_by_its_suffix(listing_kind, tmp_path):
    assert guess_kind(listing(tmp_path)) == "listing"


def test_the_pipeline_reader_decodes_a_registered_kinds_rows(listing_kind, tmp_path):
    config = DataConfig(path=listing(tmp_path), source="listing")
    source = discover(config)
    pieces = source.pieces["val"]
    batch = {key: np.asarray([piece[key] for piece in pieces], dtype=object) for key in pieces[0]}
    rows = read_pieces(batch, reader_settings(source, config), image_size=8)
    assert rows["pixels"].shape == (4, 8, 8) and rows["label"].tolist() == [1, 0, 1, 0]
    assert rows["row_id"].tolist() == [f"labels.tsv#{number}" for number in range(4, 8)]


def test_a_kind_name_is_registered_once(listing_kind):
    with pytest.raises(ValueError, match="'listing' is registered already"):
        register(ListingSource())
    assert get_source_kind("listing") is listing_kind
