"""The manifest: every row of a dataset, its split, label, content hash and whether it is usable.

Built once by a Ray Data pass that decodes every row at its own size (so bad rows are found in
the workers, recorded, and never crash them) and written to `<run>/manifest.parquet`; a resumed
run reads it back, and `medray data inspect --dedupe` writes one that a run can use through
`data.manifest`. Every later stage reads only the manifest's usable rows, so all stages and all
re-runs see the same rows, and rows in = rows used + rows reported, always.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from medray import storage
from medray.console import ProgressBar
from medray.data.decode import content_hash, decode_row
from medray.data.volumes import plane_shape
from medray.data.dicom import is_dicom
from medray.data.readers import pieces_of, read_tasks, rows_of
from medray.data.sources import SPLITS, RawRow, Source, check_usable, count_labels, get_source_kind
from medray.data.sources.base import UNLABELLED, reader_settings, row_label
from medray.data.validation import small_validation_warnings
from medray.errors import BadImage, MedrayError

OK = "ok"
# Statuses `inspect --dedupe` gives; the rows are fine as images, so on_bad_image does not apply.
DEDUPLICATED = ("duplicate", "leak")
# The data settings that decide which rows exist and how they decode: a manifest is reused only for these.
ROW_SETTINGS = ("source", "path", "image_column", "path_column", "label_column", "class_names",
                "max_image_pixels", "split")
# Row settings added later: in the fingerprint only when set, so manifests written before them stay valid.
LATER_ROW_SETTINGS = ("label_columns", "label_separator", "no_finding", "uncertain", "image_folder",
                      "split_column", "patient_column", "window")
FINGERPRINT_KEY = b"medray.data"
COLOR_KEY = b"medray.color"
REPORTED_EXAMPLES = 200


def scan_rows(source: Source, data_config) -> pd.DataFrame:
    """One record per row of every split (decoded in Ray Data workers), in discovery order."""
    pieces = [piece | {"order": order} for order, piece in
              enumerate(piece for split in SPLITS for piece in source.pieces[split])]
    described = read_tasks(pieces, source.kind, describe_rows, {"settings": reader_settings(source, data_config)})
    batches = []  # small records, no pixels
    with ProgressBar("decode", sum(len(piece["rows"]) for piece in pieces)) as progress:
        for batch in described.iter_batches(batch_size=None, batch_format="pandas"):
            batches.append(batch)
            progress.advance(len(batch))
    records = pd.concat(batches, ignore_index=True) if batches else described.to_pandas()
    rejected = pd.DataFrame(source.rejected, columns=["row_id", "split", "source", "status", "message"])
    # A rejected row's label is unknown: -1, or K unknown values for multi-label data.
    unknown = (pd.Series([[UNLABELLED] * len(source.class_names)] * len(rejected), index=rejected.index, dtype=object)
               if source.multi_label else UNLABELLED)
    rejected = rejected.assign(label=unknown, order=len(pieces), position=np.arange(len(rejected)))
    frame = pd.concat([records, rejected], ignore_index=True) if len(rejected) else records
    if source.multi_label:  # lists, stored as list<int64> in manifest.parquet
        frame["label"] = [[int(value) for value in label] for label in frame["label"]]
    return frame.sort_values(["order", "position"], kind="stable").reset_index(drop=True)[_columns(frame)]


def _columns(frame: pd.DataFrame) -> list[str]:
    return [column for column in ("row_id", "split", "label", "source", "status", "message", "warning", "content_hash",
                                  "height", "width", "mode", "bit_depth", "format", "name_prefix", "source_folder",
                                  "mean", "std", "file", "part", "offset", "row",
                                  "order", "position") if column in frame]


def describe_rows(batch: dict, settings: dict) -> dict:
    """Ray Data worker: decode each row once; record its hash and statistics, or why it is unusable."""
    records = []
    for piece in pieces_of(batch):
        for position, row in enumerate(rows_of(settings["kind"], piece, settings)):
            record = {"row_id": row.row_id, "split": str(piece["split"]), "label": row.label, "source": row.where,
                      "file": str(piece["file"]), "part": int(piece["part"]), "offset": int(piece["offset"]),
                      "row": int(piece["rows"][position]), "order": int(piece["order"]), "position": position,
                      "status": OK, "message": "", "content_hash": "", "height": 0, "width": 0, "mode": "",
                      "mean": np.nan, "std": np.nan, **acquisition_facts(row, settings["kind"])}
            warnings: list[str] = []
            try:
                pixels, mode = decode_row(row, settings["max_pixels"], warnings)
            except BadImage as error:
                record |= {"status": error.reason, "message": str(error)}
            else:
                height, width = plane_shape(pixels, mode)
                record |= {"content_hash": content_hash(pixels), "height": height,
                           "width": width, "mode": mode, "bit_depth": bit_depth(mode),
                           "mean": float(pixels.mean()), "std": float(pixels.std())}
            record["warning"] = "; ".join(warnings)
            records.append(record)
    return {key: np.asarray([record[key] for record in records]) for key in records[0]} if records else {}


# Bits per stored sample by Pillow mode; DICOM modes ("DICOM MONOCHROME2") are read as 16.
MODE_BITS = {"1": 1, "L": 8, "LA": 8, "P": 8, "PA": 8, "RGB": 8, "RGBA": 8, "CMYK": 8, "YCbCr": 8,
             "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}
FILE_FORMATS = ((b"\x89PNG", "PNG"), (b"\xff\xd8", "JPEG"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
                (b"BM", "BMP"), (b"GIF8", "GIF"))


def bit_depth(mode: str) -> int:
    return 16 if mode.startswith("DICOM") else MODE_BITS.get(mode, 8)


def acquisition_facts(row: RawRow, kind: str) -> dict:
    """What a row says about how it was acquired and stored, not about anatomy: its file format,
    the letters its file name starts with and the folder it sits in below its class (inspect's
    shortcut detector reads these)."""
    content = row.content
    if isinstance(content, np.ndarray):
        file_format = "npz"
    elif isinstance(content, bytes) and is_dicom(content):
        file_format = "DICOM"
    else:
        file_format = next((name for magic, name in FILE_FORMATS
                            if isinstance(content, bytes) and content.startswith(magic)), "other")
    prefix, folder = get_source_kind(kind).file_facts(row.row_id)
    return {"format": file_format, "name_prefix": prefix, "source_folder": folder, "bit_depth": 0}


def fingerprint(data_config) -> str:
    settings = data_config.model_dump(mode="json", include=set(ROW_SETTINGS))
    later = data_config.model_dump(mode="json", include=set(LATER_ROW_SETTINGS))
    settings |= {key: value for key, value in later.items() if value != type(data_config).model_fields[key].default}
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def write_manifest(frame: pd.DataFrame, path: Path, data_config, color: str) -> Path:
    """`color`: how the rows were read, gray or rgb (data.color "auto" resolved), kept in the
    file's metadata under COLOR_KEY."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           FINGERPRINT_KEY: fingerprint(data_config).encode(),
                                           COLOR_KEY: color.encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def read_manifest(path: str | Path, data_config) -> pd.DataFrame:
    """data.manifest, a local path or a URI."""
    path = storage.normalise(path)
    if storage.info(path, "data.manifest").type != pafs.FileType.File:
        raise storage.missing(path, "data.manifest", "write one with `medray data inspect --dedupe`")
    filesystem, inside = storage.resolve(path)
    table = pq.read_table(inside, filesystem=filesystem)
    written_for = (table.schema.metadata or {}).get(FINGERPRINT_KEY, b"").decode()
    if written_for != fingerprint(data_config):
        raise MedrayError(f"{path} was written for other data settings (data.{', data.'.join(ROW_SETTINGS)}); "
                          "rebuild it with `medray data inspect` on this config, or delete it")
    return table.to_pandas()


def load_or_build_manifest(source: Source, data_config, path: Path) -> pd.DataFrame:
    """The run's manifest: data.manifest if given, else `path` if written for these settings, else a new one."""
    if data_config.manifest is not None:
        frame = read_manifest(data_config.manifest, data_config)
    elif path.is_file() and _written_for(path, data_config):
        frame = pq.read_table(path).to_pandas()
    else:
        frame = scan_rows(source, data_config)
        write_manifest(frame, path, data_config, source.color)
        return frame
    expected = sum(len(piece["rows"]) for pieces in source.pieces.values() for piece in pieces) + len(source.rejected)
    if len(frame) != expected:
        raise MedrayError(f"{data_config.manifest or path} lists {len(frame)} rows but the data at "
                          f"{source.path} has {expected}; the data changed since it was written: rebuild "
                          "it (`medray data inspect`) or delete it")
    if data_config.manifest is not None:
        write_manifest(frame, path, data_config, source.color)
    return frame


def _written_for(path: Path, data_config) -> bool:
    metadata = pq.read_schema(path).metadata or {}
    return metadata.get(FINGERPRINT_KEY, b"").decode() == fingerprint(data_config)


def unusable(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[~frame["status"].isin((OK, *DEDUPLICATED))]


def enforce_policy(frame: pd.DataFrame, on_bad_image: str, counted_in: str = "data.json") -> None:
    """With on_bad_image "error", the first unusable row as one line; `counted_in` names the file
    that lists skipped rows (data.json of a run; the manifest of a job over images without labels)."""
    bad = unusable(frame)
    if on_bad_image == "error" and len(bad):
        first = bad.iloc[0]
        more = f" ({len(bad)} unusable rows in all)" if len(bad) > 1 else ""
        raise MedrayError(f"{first['message']}{more}; or set data.on_bad_image: skip to leave such rows out "
                          f"and count them in {counted_in}")


def usable_source(source: Source, frame: pd.DataFrame) -> Source:
    """The source reduced to the manifest's usable rows: its read tasks, counts and reported rows."""
    pieces = usable_pieces(frame, source)
    counts = {split: count_labels(pieces[split], len(source.class_names)) for split in SPLITS}
    reported = frame[frame["status"] != OK][["row_id", "split", "source", "status", "message"]]
    usable = replace(source, pieces=pieces, class_counts=counts, rejected=reported.to_dict("records"))
    check_usable(usable)
    return usable


# What every read task holds (base.py); a kind may add keys of its own (a CSV row's mask file).
PIECE_KEYS = ("file", "part", "offset", "rows", "row_ids", "labels", "split")


def usable_pieces(frame: pd.DataFrame, source: Source) -> dict[str, list[dict]]:
    """The read tasks of the manifest's usable rows, split by split, with the keys their kind added
    to `source`'s read tasks (numbered as `build_manifest` numbers them: `order`)."""
    used = frame[frame["status"] == OK]
    originals = [piece for split in SPLITS for piece in source.pieces[split]]
    pieces: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for (split, order), rows in used.groupby(["split", "order"], sort=False):
        first = rows.iloc[0]
        own = ({key: value for key, value in originals[int(order)].items() if key not in PIECE_KEYS}
               if int(order) < len(originals) else {})
        pieces[split].append({"file": first["file"], "part": int(first["part"]), "offset": int(first["offset"]),
                              "rows": rows["row"].astype(int).tolist(), "row_ids": rows["row_id"].tolist(),
                              "labels": manifest_labels(rows["label"]), "split": split, **own})
    return pieces


def manifest_labels(labels: pd.Series) -> list:
    """A manifest's label column as pieces hold it: class indices, or lists of K values (multi-label)."""
    return [row_label(label) for label in labels]


def prepare_source(source: Source, data_config, run_dir: Path) -> tuple[Source, dict]:
    """Manifest -> policy -> the usable source and the data report (data.json) of a run."""
    frame = load_or_build_manifest(source, data_config, run_dir / "manifest.parquet")
    enforce_policy(frame, data_config.on_bad_image)
    usable = usable_source(source, frame)
    report = data_report(usable, frame, run_dir / "manifest.parquet")
    report["validation_warnings"] = small_validation_warnings(usable, data_config.min_val_per_class)
    return usable, report


def usable_unlabelled(source: Source, data_config, manifest_path: Path) -> tuple[Source, int]:
    """The rows of images without labels that decode, after one pass over all of them (the job's
    manifest); unusable rows stop the job in one line naming the first, or with data.on_bad_image:
    skip are left out and counted. Returns the usable source and the number of rows left out."""
    frame = load_or_build_manifest(source, data_config, manifest_path)
    enforce_policy(frame, data_config.on_bad_image, counted_in=str(manifest_path))
    pieces = usable_pieces(frame, source)
    if not pieces["test"]:
        raise MedrayError(f"data.path {data_config.path}: none of the {len(frame)} images can be decoded "
                          f"(see {manifest_path})")
    return replace(source, pieces=pieces), int((frame["status"] != OK).sum())


def data_report(source: Source, frame: pd.DataFrame, manifest_path: Path) -> dict:
    reported = frame[frame["status"] != OK]
    report = {
        "kind": source.kind,
        "path": str(source.path),
        "class_names": source.class_names,
        # several labels per image: class_counts then count the images with each label present
        "multi_label": source.multi_label,
        # how images were read (gray or rgb), after data.color "auto" was decided
        "color": source.color,
        "class_counts": {split: dict(zip(source.class_names, source.class_counts[split])) for split in SPLITS},
        "manifest": str(manifest_path),
        "rows_in": len(frame),
        "rows_used": int(sum(source.num_rows(split) for split in SPLITS)),
        "rows_reported": len(reported),
        "reported_by_reason": reported["status"].value_counts().sort_index().to_dict(),
        "reported_rows": reported[["row_id", "split", "source", "status", "message"]]
        .head(REPORTED_EXAMPLES).to_dict("records"),
        "ignored_files": {"count": len(source.ignored_files), "files": source.ignored_files[:REPORTED_EXAMPLES]},
        "warnings": row_warnings(frame),
    }
    if source.discarded_val_rows:  # never read, so neither in rows_in nor reported
        report["discarded_validation"] = {
            "count": source.discarded_val_rows,
            "reason": "data.split.val_from_train carves the validation split out of train, so the dataset's "
                      "own validation rows are not used"}
    if report["rows_in"] != report["rows_used"] + report["rows_reported"]:
        raise MedrayError(f"internal check failed: {report['rows_in']} rows in, {report['rows_used']} used, "
                          f"{report['rows_reported']} reported; please report this with {manifest_path}")
    return report


def row_warnings(frame: pd.DataFrame) -> dict:
    """Rows used as they are but worth a look (an EXIF orientation ignored): counted by kind, named."""
    notes = frame["warning"].fillna("") if "warning" in frame else pd.Series("", index=frame.index)
    warned = frame.assign(warning=notes)[notes != ""]
    kinds = Counter(str(note).split(":")[0] for note in warned["warning"])
    return {"count": len(warned), "by_kind": dict(sorted(kinds.items())),
            "rows": warned[["row_id", "source", "warning"]].head(REPORTED_EXAMPLES).to_dict("records")}


def describe_data_report(report: dict) -> str:
    """Two lines for the console: what was left out and why, and what was ignored."""
    lines = [f"data: {report['rows_in']} rows in, {report['rows_used']} used, {report['rows_reported']} reported"
             + (" (" + ", ".join(f"{reason} {count}" for reason, count in report["reported_by_reason"].items())
                + ")" if report["rows_reported"] else "")]
    if "discarded_validation" in report:
        lines.append(f"data: {report['discarded_validation']['count']} rows of the dataset's own validation split "
                     "not used (data.split.val_from_train carves validation out of train)")
    lines += [f"warning: {warning}" for warning in report.get("validation_warnings", [])]
    warnings = report.get("warnings", {"count": 0})
    if warnings["count"]:
        lines.append(f"data: {warnings['count']} rows used with a warning ("
                     + ", ".join(f"{kind} {count}" for kind, count in warnings["by_kind"].items()) + ")")
    if report["ignored_files"]["count"]:
        lines.append(f"data: {report['ignored_files']['count']} files that are not images ignored, e.g. "
                     + ", ".join(Path(file).name for file in report["ignored_files"]["files"][:3]))
    return "\n".join(lines)
