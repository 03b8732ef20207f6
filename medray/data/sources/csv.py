"""A CSV listing of image files, one row per image, as ChestX-ray14 (Data_Entry_2017.csv) and
CheXpert (train.csv) ship their labels. data.path is the CSV file; data.image_column its column
of image paths, relative to data.image_folder (default: the CSV's folder). One read task per image.

Labels, one of:
- data.label_column: an image's label names joined by data.label_separator ("Effusion|Mass"), or
  data.no_finding ("No Finding") for none: several labels per image, named by data.class_names or
  the sorted names seen. With label_separator null: one class per row (single-label).
- data.label_columns: one column per label holding 1 (present), 0 (absent), -1 (uncertain, see
  data.uncertain) or blank. Blank - the finding was not mentioned in the report - counts as 0, as
  the CheXpert paper (Irvin et al. 2019) trains.

Files: images (PNG, JPEG, DICOM) or volumes (NIfTI .nii / .nii.gz, read as medray.data.nifti reads
them: canonical orientation, spacing kept); one listing holds one or the other, and the files
decide which (sources/files.py). A column named data.mask_column (default "mask"), if the CSV has
one, gives each row's lesion mask file, relative like the images: a PNG for an image, a NIfTI file
for a volume (reoriented as its volume is); a blank cell is a row without a lesion.

Splits: data.split_column if given (train / val / test or their aliases); else medray splits by
data.split's fractions and seed - by patient when data.patient_column names one (all images of a
patient in one split, so no test patient was seen in training), otherwise image by image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pandas as pd
import pyarrow.fs as pafs

from medray import storage
from medray.data.sources.base import (NO_IMAGE, SPLIT_ALIASES, SPLITS, RawRow, Source, SourceKind,
                                      data_paths, labelled_source, missing_path, path_type, piece_of_rows, row_label)
from medray.data.sources.files import HOLDS, file_spatial_dims, read_listed_file
from medray.data.sources.registry import register
from medray.data.sources.splits import group_split
from medray.errors import MedrayError

# The first data row of a CSV is line 2 of the file (and row 2 of a spreadsheet): messages name that line.
FIRST_LINE = 2


class CsvSource(SourceKind):
    name = "csv"
    layout = "a CSV file with one row per image (data.image_column) and its labels"
    suffixes = (".csv",)
    # Image files are read a few dozen at a time.
    pieces_per_read_task = 32

    def discover(self, data_config) -> Source:
        csv_path = _csv_path(data_config)
        table = read_listing(csv_path)
        _check_columns(csv_path, table, data_config)
        lines = [FIRST_LINE + index for index in range(len(table))]
        where = [f"{csv_path} line {line} ({image})" for line, image in zip(lines, table[data_config.image_column])]
        folder = image_folder(data_config, csv_path)
        spatial_dims = _spatial_dims(csv_path, table[data_config.image_column].tolist())
        masks = _mask_files(table, data_config, folder)
        values, class_names, multi_label = _labels(csv_path, table, data_config)
        labeller = self.labeller(class_names, data_config, multi_label)
        splits = _splits(csv_path, table, data_config)
        row_ids = _row_ids(csv_path, table[data_config.image_column].tolist(), lines, labeller,
                           data_config.on_bad_image == "skip", splits)
        pieces: dict[str, list[dict]] = {split: [] for split in SPLITS}
        for split in SPLITS:
            chosen = [index for index, row_split in enumerate(splits) if row_split == split and row_ids[index]]
            labels = labeller.rows([values[i] for i in chosen], [row_ids[i] for i in chosen],
                                   [where[i] for i in chosen], split)
            for index, label in zip(chosen, labels):
                # `offset` carries the CSV line: a piece is one image, and messages name its line.
                piece = piece_of_rows(image_location(folder, row_ids[index]), 0, [0], [row_ids[index]], [label],
                                      split, offset=lines[index])
                if piece and masks is not None:
                    piece["mask"] = masks[index]
                pieces[split] += [piece] if piece else []
        return labelled_source(self, csv_path, class_names, pieces, labeller, has_masks=masks is not None,
                               spatial_dims=spatial_dims)

    def rows(self, piece: dict, settings: dict) -> Iterator[RawRow]:
        path, row_id = str(piece["file"]), str(piece["row_ids"][0])
        listing = f"{settings.get('source_path', 'CSV')} line {int(piece['offset'])}"
        where = f"{listing} ({row_id})"
        content = read_listed_file(path, where, settings, "; fix the path in the CSV or data.image_folder")
        mask, mask_where = None, None
        if settings.get("mask_column") and piece.get("mask"):
            mask_path = str(piece["mask"])
            # Named with its image: a mask that does not fit says which two files disagree.
            mask_where = f"{mask_path} (the mask of {path}, {listing})"
            mask = read_listed_file(mask_path, mask_where, settings,
                                    f"; fix the path in column {settings['mask_column']!r}")
        yield RawRow(row_id, row_label(piece["labels"][0]), where, content, mask, name=Path(path).name,
                     mask_where=mask_where)

    def row_source(self, piece: dict, row: int) -> str:
        return piece["file"]


def _csv_path(data_config) -> str:
    paths = data_paths(data_config)
    kind = path_type(paths[0]) if len(paths) == 1 else None
    if kind == pafs.FileType.NotFound:
        raise missing_path(paths[0])
    if kind != pafs.FileType.File:
        raise MedrayError(f"data.path {data_config.path}: data.source csv reads one CSV file")
    return paths[0]


def read_listing(csv_path: str) -> pd.DataFrame:
    """Every cell as text, a blank cell as "" (never NaN: "NA" may be a label, and a blank means 0)."""
    try:
        with storage.open_input(csv_path) as handle:
            return pd.read_csv(handle, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise MedrayError(f"{csv_path}: cannot read it as CSV ({storage.first_line(error)}); save it as "
                          "comma-separated text with a header row") from None


def _check_columns(csv_path: str, table: pd.DataFrame, data_config) -> None:
    wanted = [(data_config.image_column, "data.image_column")]
    wanted += ([(column, "data.label_columns") for column in data_config.label_columns] if data_config.label_columns
               else [(data_config.label_column, "data.label_column")])
    wanted += [(column, f"data.{key}") for key in ("split_column", "patient_column")
               if (column := getattr(data_config, key))]
    for column, key in wanted:
        if column not in table.columns:
            raise MedrayError(f"{csv_path}: no column {column!r} (columns: {', '.join(table.columns)}); set {key} "
                              "to the right name")


def _spatial_dims(csv_path: str, images: list[str]) -> int:
    """2 when the listing names images, 3 when it names volumes (NIfTI); both in one listing stops
    discovery naming the first row of the rarer kind."""
    dims = [file_spatial_dims(image.strip()) if image.strip() else None for image in images]
    counts = {value: dims.count(value) for value in (2, 3)}
    if counts[2] and counts[3]:
        odd = min(counts, key=counts.get)
        index = dims.index(odd)
        raise MedrayError(f"{csv_path} line {FIRST_LINE + index}: {images[index].strip()} is {HOLDS[odd]} but the "
                          f"other rows list {HOLDS[5 - odd][2:]}s; one CSV lists images or volumes, not both: "
                          "move it to a listing of its own")
    return 3 if counts[3] else 2


def _mask_files(table: pd.DataFrame, data_config, folder: str) -> list[str] | None:
    """Each row's mask file location ("" for a row without one), if the CSV has data.mask_column."""
    column = data_config.mask_column
    if not column or column not in table.columns:
        return None
    return [image_location(folder, cell.strip()) if cell.strip() else "" for cell in table[column]]


def image_folder(data_config, csv_path: str) -> str:
    """data.image_folder as a location: absolute or a URI as given, else relative to the CSV's folder."""
    folder = data_config.image_folder
    if folder is None:
        return storage.parent(csv_path)
    if storage.is_uri(folder) or Path(folder).is_absolute():
        return storage.normalise(folder)
    return storage.join(storage.parent(csv_path), folder)


def image_location(folder: str, value: str) -> str:
    return value if storage.is_uri(value) or Path(value).is_absolute() else storage.join(folder, value)


def _labels(csv_path: str, table: pd.DataFrame, data_config) -> tuple[list, list[str], bool]:
    """(each row's raw label for the labeller, the class or label names, whether multi-label)."""
    if data_config.label_columns:
        names = data_config.class_names or list(data_config.label_columns)
        if len(names) != len(data_config.label_columns):
            raise MedrayError(f"data.class_names lists {len(names)} names for {len(data_config.label_columns)} "
                              "data.label_columns; name every column's label, in order, or leave class_names out")
        cells = table[data_config.label_columns].to_numpy().tolist()
        return [[_chexpert_value(cell) for cell in row] for row in cells], names, True
    raw = [value.strip() for value in table[data_config.label_column]]
    if data_config.label_separator is None:
        values = [value or None for value in raw]
        return values, data_config.class_names or sorted({value for value in values if value}), False
    values = [None if not value else [name for part in value.split(data_config.label_separator)
                                      if (name := part.strip()) and name != data_config.no_finding]
              for value in raw]
    seen = sorted({name for names in values if names for name in names})
    return values, data_config.class_names or seen, True


def _chexpert_value(cell: str):
    """A CheXpert cell: blank -> 0 (not mentioned); "1", "1.0", "-1.0" -> int; else the text (refused)."""
    text = cell.strip()
    if not text:
        return 0
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() else number


def _splits(csv_path: str, table: pd.DataFrame, data_config) -> list[str]:
    if data_config.split_column:
        splits = []
        for index, value in enumerate(table[data_config.split_column]):
            split = SPLIT_ALIASES.get(value.strip().lower())
            if split is None:
                raise MedrayError(f"{csv_path} line {FIRST_LINE + index}: split {value!r} in column "
                                  f"{data_config.split_column!r} is not train, val or test")
            splits.append(split)
        if data_config.patient_column:
            _check_patients_apart(csv_path, table[data_config.patient_column].tolist(), splits)
        return splits
    if data_config.patient_column:
        patients = table[data_config.patient_column].tolist()
        blank = next((index for index, patient in enumerate(patients) if not patient.strip()), None)
        if blank is not None:
            raise MedrayError(f"{csv_path} line {FIRST_LINE + blank}: no patient in column "
                              f"{data_config.patient_column!r}; fill it, so that the split keeps patients apart")
        return group_split([patient.strip() for patient in patients], data_config.split)
    return group_split([f"{index}" for index in range(len(table))], data_config.split)


def _check_patients_apart(csv_path: str, patients: list[str], splits: list[str]) -> None:
    first: dict[str, tuple[str, int]] = {}
    for index, (patient, split) in enumerate(zip(patients, splits)):
        seen = first.setdefault(patient.strip(), (split, index))
        if seen[0] != split:
            raise MedrayError(f"{csv_path} line {FIRST_LINE + index}: patient {patient!r} is in the {split} split "
                              f"and (line {FIRST_LINE + seen[1]}) in {seen[0]}; a patient's images belong in one "
                              "split, or the test scores include patients the model was trained on")


def _row_ids(csv_path: str, images: list[str], lines: list[int], labeller, skip: bool,
             splits: list[str]) -> list[str | None]:
    """The image paths as row ids; a row without one stops discovery or, with skip, is rejected (None)."""
    row_ids: list[str | None] = []
    first: dict[str, int] = {}
    for image, line, split in zip(images, lines, splits):
        image = image.strip()
        if not image:
            message = f"{csv_path} line {line}: no image in the row; fill data.image_column or remove the row"
            if not skip:
                raise MedrayError(message + ", or set data.on_bad_image: skip to leave such rows out")
            labeller.rejected.append({"row_id": f"{storage.name(csv_path)}#line{line}", "split": split,
                                      "source": f"{csv_path} line {line}", "status": NO_IMAGE, "message": message})
            row_ids.append(None)
            continue
        if image in first:
            raise MedrayError(f"{csv_path} line {line}: image {image} is listed again (first on line {first[image]}); "
                              "list every image once")
        first[image] = line
        row_ids.append(image)
    return row_ids


register(CsvSource())
