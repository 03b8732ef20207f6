"""Class folders of image files (PNG, JPEG, DICOM): `<path>/<split>/<class>/*` with the splits as
given, or `<path>/<class>/*`, split by medray (stratified, seeded). One read task per file."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Iterator

import pyarrow.fs as pafs

from medray import storage
from medray.data.sources.base import (SPLIT_ALIASES, SPLITS, UNLABELLED, RawRow, Source, SourceKind,
                                      data_paths, is_image_name, labelled_source, local_paths, missing_path,
                                      path_type, piece_of_rows, row_label)
from medray.data.sources.files import read_listed_file
from medray.data.sources.registry import register
from medray.data.sources.splits import folder_order, stratified_split
from medray.errors import MedrayError


class FolderSource(SourceKind):
    name = "folders"
    layout = "<path>/<split>/<class>/*.png or <path>/<class>/*.png"
    # Image files are read a few dozen at a time.
    pieces_per_read_task = 32

    def discover(self, data_config) -> Source:
        paths = data_paths(data_config)
        kind = path_type(paths[0]) if len(paths) == 1 else None
        if kind != pafs.FileType.Directory:
            if kind == pafs.FileType.NotFound:
                raise missing_path(paths[0])
            raise MedrayError(f"data.path {data_config.path}: data.source folders needs one folder")
        root = paths[0]
        children = storage.list_files(root, "data.path", recursive=False)
        split_dirs = {}
        for child, is_dir in children:
            if is_dir and storage.name(child).lower() in SPLIT_ALIASES:
                split_dirs.setdefault(SPLIT_ALIASES[storage.name(child).lower()], child)
        ignored: list[str] = []
        if split_dirs:  # root/<split>/<class>/*: the splits are used as given
            files = {split: self.class_rows(split_dirs[split], ignored) if split in split_dirs else {}
                     for split in SPLITS}
            ignored += [child for child, is_dir in children if not is_dir]
        else:  # root/<class>/*: medray makes a stratified split
            files = stratified_split(self.class_rows(root, ignored), data_config.split)
        found = sorted({name for by_class in files.values() for name in by_class})
        class_names = data_config.class_names or found
        labeller = self.labeller(class_names, data_config)
        pieces: dict[str, list[dict]] = {split: [] for split in SPLITS}
        for split in SPLITS:
            for class_name, class_files in files[split].items():
                for file in class_files:
                    row_id = storage.relative(file, root)
                    label = labeller.rows([class_name], [row_id], [file], split)
                    piece = piece_of_rows(file, 0, [0], [row_id], label, split)
                    pieces[split] += [piece] if piece else []
        return labelled_source(self, root, class_names, pieces, labeller, ignored_files=sorted(ignored))

    def class_rows(self, folder: str, ignored: list[str]) -> dict[str, list[str]]:
        """class -> the rows (files) under folder/<class>/; what is not a row goes to `ignored`."""
        return _class_files(folder, ignored, self.accepts)

    def accepts(self, file: str) -> bool:
        """Whether a file in a class folder is one of this kind's rows (others are ignored, counted)."""
        return is_image_name(file)

    def rows(self, piece: dict, settings: dict) -> Iterator[RawRow]:
        path = str(piece["file"])
        content = read_listed_file(path, path, settings)
        yield RawRow(str(piece["row_ids"][0]), row_label(piece["labels"][0]), path, content, name=Path(path).name)

    def holds(self, folder: Path) -> bool:
        return any(is_image_name(file) for file in folder.rglob("*"))

    def has_labels(self, data_config) -> bool:
        """Whether the folder keeps its images in subfolders (classes) rather than directly inside it."""
        root = local_paths(data_config)[0]
        if not root.is_dir():
            raise missing_path(root)
        return not any(child.is_file() and is_image_name(child) for child in root.iterdir())

    def unlabelled_pieces(self, data_config) -> tuple[Path, list[dict]]:
        paths = local_paths(data_config)
        if len(paths) != 1 or not paths[0].is_dir():
            raise missing_path(paths[0]) if not paths[0].exists() else MedrayError(
                f"data.path {data_config.path}: data.source folders needs one folder")
        root = paths[0]
        # DICOM series are often stored as files without a suffix; decoding tells them from other files.
        files = sorted(file for file in root.rglob("*") if file.is_file() and not file.name.startswith(".")
                       and (is_image_name(file) or not file.suffix))
        return root, [{"file": str(file), "part": 0, "offset": 0, "rows": [0],
                       "row_ids": [file.relative_to(root).as_posix()], "labels": [UNLABELLED], "split": "test"}
                      for file in files]

    def row_source(self, piece: dict, row: int) -> str:
        return piece["file"]

    def file_facts(self, row_id: str) -> tuple[str, str]:
        parts = PurePosixPath(row_id).parts
        skip = 2 if parts[0].lower() in SPLIT_ALIASES else 1  # <split>/<class>/ or <class>/
        prefix_match = re.match(r"[A-Za-z]+", PurePosixPath(parts[-1]).stem)
        return (prefix_match.group(0).lower() if prefix_match else ""), "/".join(parts[skip:-1])


def _class_files(folder: str, ignored: list[str], accepts=is_image_name) -> dict[str, list[str]]:
    """class -> image files under folder/<class>/ (nested folders too) that `accepts` takes; anything
    else goes to `ignored`."""
    by_class = {}
    for child, is_dir in storage.list_files(folder, "data.path", recursive=False):
        if not is_dir:
            ignored.append(child)
            continue
        files = sorted((file for file, _ in storage.list_files(child, "data.path")), key=folder_order)
        by_class[storage.name(child)] = [file for file in files if accepts(file)]
        ignored += [file for file in files if not accepts(file)]
    return by_class


register(FolderSource())
