"""The on-disk dataset of teacher quadruplets, one format for every profile (paper 3.2-3.3).

A dataset is a folder of Parquet shards and a ``manifest.json``::

    data/teacher/
      manifest.json          # format, version, the shards in order with their row counts, info
      shard-00000.parquet    # COLUMNS below, one row per quadruplet (x, instruction, y)
      shard-00001.parquet

Why Parquet shards (and not WebDataset tars): the filters, the review and the statistics read
the score and decision columns of every row without decoding an image; a shard streams one row
group at a time; pyarrow, already in the environment, writes and reads it; and the images are
stored as Hugging Face ``datasets`` ``Image`` structs (PNG bytes), so
``datasets.load_dataset("parquet", data_files="data/teacher/*.parquet")`` opens a dataset as it is.

Why a writer of our own: a teacher or a self-distillation run is killed at any moment. Each shard
is renamed into place complete, and the manifest, rewritten atomically after it, is the only list
of what exists; a resumed writer learns the ids already written (:meth:`DatasetWriter.written_ids`)
and continues, so nothing is lost or written twice. Rows beyond the last complete shard are
made again by the caller.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from ..utils.files import atomic_write, atomic_write_json

__all__ = [
    "COLUMNS",
    "FORMAT",
    "Dataset",
    "DatasetWriter",
    "ImageRows",
    "compose",
    "decode_image",
    "encode_image",
    "open_dataset",
    "positions",
]

logger = logging.getLogger(__name__)

FORMAT = {"name": "cafe-quadruplets", "version": 1}
"""What ``manifest.json`` says it holds; a reader refuses another name or a newer version."""

_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # datasets' Image feature
_MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])

COLUMNS: dict[str, tuple[pa.DataType, bool, str]] = {
    # name: (type, required, meaning)
    "id": (pa.string(), True, "unique within the dataset; a resumed writer skips ids it holds"),
    "x": (_IMAGE, True, "the subject photo (PNG)"),
    "instruction": (pa.string(), True, "what the teacher was asked to draw, e.g. 'a dog on the beach'"),
    "y": (_IMAGE, True, "the teacher's target image (PNG)"),
    "messages": (pa.list_(_MESSAGE), False, "the chat up to the request (user turns and earlier answers)"),
    "response": (pa.string(), False, "the assistant's answer to the last user turn"),
    "kind": (pa.string(), False, "declarative, interrogative or ambiguous"),
    "teacher": (pa.string(), True, "who made y: a teacher's name, or 'self-distill' (eq. 4)"),
    "teacher_version": (pa.string(), True, "the teacher's checkpoint or code version"),
    "seed": (pa.int64(), True, "the seed y was drawn with"),
    "subject": (pa.string(), False, "the subject's name or id, where known"),
    "subject_class": (pa.string(), False, "the subject's class word as the instruction names it"),
    "context": (pa.string(), False, "the instruction's context, where known"),
    "clip_score": (pa.float32(), False, "CLIP cosine of y and the instruction (the filter's first test)"),
    "dino_score": (pa.float32(), False, "DINO cosine of x and y (the filter's second test)"),
    "clip_pass": (pa.bool_(), False, "the CLIP test's decision"),
    "dino_pass": (pa.bool_(), False, "the DINO test's decision"),
    "review": (pa.string(), False, "a reviewer's decision: 'accept', 'reject' or null (not reviewed)"),
    "truth": (pa.string(), False, "JSON of what y really shows, where a world knows it (graders only)"),
}
"""Every column of a shard: its Arrow type, whether a row must have it, and what it holds."""


def _hf_feature(dtype: pa.DataType) -> Any:
    """The Hugging Face ``datasets`` feature (as JSON) of one column's Arrow type."""
    if dtype == _IMAGE:
        return {"_type": "Image"}
    if pa.types.is_list(dtype):  # a JSON list is a list feature in every datasets version
        return [_hf_feature(dtype.value_type)]
    if pa.types.is_struct(dtype):
        return {field.name: _hf_feature(field.type) for field in dtype}
    names = {pa.string(): "string", pa.int64(): "int64", pa.float32(): "float32", pa.bool_(): "bool"}
    return {"dtype": names[dtype], "_type": "Value"}


_FEATURES = {name: _hf_feature(dtype) for name, (dtype, _, _) in COLUMNS.items()}
SCHEMA = pa.schema(
    # Every field nullable, as `datasets` writes them (it takes the features only where the fields
    # match); the writer enforces the required columns.
    [pa.field(name, dtype) for name, (dtype, _, _) in COLUMNS.items()],
    metadata={"huggingface": json.dumps({"info": {"features": _FEATURES}})},
)
"""The Arrow schema of every shard, with the ``datasets`` features in its metadata."""


def encode_image(image: np.ndarray | Image.Image) -> dict[str, Any]:
    """A uint8 (H, W, 3) array or a PIL image -> the ``{"bytes": PNG, "path": None}`` of an image cell."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"an image must be uint8 (H, W, 3); got {image.dtype} {image.shape}")
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def decode_image(cell: Mapping[str, Any]) -> np.ndarray:
    """An image cell -> uint8 (H, W, 3)."""
    return np.asarray(Image.open(io.BytesIO(cell["bytes"])).convert("RGB"))


def _manifest_path(folder: Path) -> Path:
    return folder / "manifest.json"


def _read_manifest(folder: Path) -> dict:
    path = _manifest_path(folder)
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a dataset: it has no manifest.json (cafe_core.data.dataset)")
    manifest = json.loads(path.read_text())
    fmt = manifest.get("format", {})
    if fmt.get("name") != FORMAT["name"] or not isinstance(fmt.get("version"), int):
        raise ValueError(f"{path} holds {fmt!r}, not a {FORMAT['name']} dataset")
    if fmt["version"] > FORMAT["version"]:
        raise ValueError(f"{path} is version {fmt['version']}; this code reads up to {FORMAT['version']}: update it")
    return manifest


class Dataset:
    """A dataset folder opened for reading; nothing is loaded until asked, and images only on demand."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.manifest = _read_manifest(self.folder)
        missing = [s["file"] for s in self.manifest["shards"] if not (self.folder / s["file"]).is_file()]
        if missing:
            raise FileNotFoundError(f"{self.folder} lists shards that are not there: {missing} (dvc pull?)")

    def __len__(self) -> int:
        return int(self.manifest["rows"])

    def __repr__(self) -> str:
        return f"Dataset({str(self.folder)!r}, rows={len(self)}, shards={len(self.shards)})"

    @property
    def info(self) -> dict:
        """What the writer said of the whole dataset (its source, teacher, params)."""
        return dict(self.manifest.get("info") or {})

    @property
    def shards(self) -> list[Path]:
        return [self.folder / s["file"] for s in self.manifest["shards"]]

    @functools.cached_property
    def content_digest(self) -> str:
        """sha256 of the shards' bytes in order, read once per opened dataset (it names a dataset's
        content for caches; a dataset of 1M targets is hundreds of GB, so it is worth keeping)."""
        h = hashlib.sha256()
        for shard in self.shards:
            with open(shard, "rb") as f:
                h.update(hashlib.file_digest(f, "sha256").digest())
        return h.hexdigest()

    def table(self, columns: Sequence[str] | None = None) -> pa.Table:
        """The rows as one Arrow table; name ``columns`` to leave the images on disk."""
        _check_columns(columns)
        tables = [pq.read_table(path, columns=list(columns) if columns else None) for path in self.shards]
        if not tables:
            return SCHEMA.empty_table().select(list(columns) if columns else SCHEMA.names)
        return pa.concat_tables(tables)

    def column(self, name: str) -> list:
        """One column of every row, in order, as Python values (images stay encoded)."""
        return self.table([name]).column(name).to_pylist()

    def iter_batches(self, batch_size: int = 256, columns: Sequence[str] | None = None) -> Iterator[list[dict]]:
        """Rows in order, ``batch_size`` at a time, one shard's row group in memory at once."""
        _check_columns(columns)
        for path in self.shards:
            for batch in pq.ParquetFile(path).iter_batches(batch_size, columns=list(columns) if columns else None):
                yield batch.to_pylist()

    def statistics(self) -> dict[str, Any]:
        """What the dataset holds, from its small columns (no image is decoded).

        ``stages``: rows made, passing each filter test and both, accepted by a reviewer, kept by
        every decision (what G trains on), with a dialogue; ``pass_rate``: each test's share of the
        scored rows; ``teachers``, ``classes``, ``contexts``, ``kinds``, ``review``: counts;
        ``scores``: quantiles of each score.
        """
        names = [n for n in COLUMNS if n not in ("x", "y", "messages")]
        t = self.table(names).to_pydict()
        clip, dino = t["clip_pass"], t["dino_pass"]
        scored = [c is not None and d is not None for c, d in zip(clip, dino, strict=True)]
        both = [bool(c) and bool(d) for c, d in zip(clip, dino, strict=True)]
        n_scored = sum(scored)
        return {
            "rows": len(self),
            "stages": {
                "made": len(self),
                "scored": n_scored,
                "clip_pass": sum(bool(c) for c in clip),
                "dino_pass": sum(bool(d) for d in dino),
                "both_pass": sum(both),
                "review_accepted": sum(r == "accept" for r in t["review"]),
                "kept": int(self.kept().sum()),
                "with_dialogue": sum(r is not None for r in t["response"]),
            },
            "pass_rate": {
                test: (sum(bool(v) for v in values) / n_scored if n_scored else None)
                for test, values in (("clip", clip), ("dino", dino), ("both", both))
            },
            "teachers": _counts(t["teacher"]),
            "classes": _counts(t["subject_class"]),
            "contexts": _counts(t["context"]),
            "kinds": _counts(t["kind"]),
            "review": _counts(t["review"], none="unreviewed"),
            "scores": {name: _quantiles(t[name]) for name in ("clip_score", "dino_score")},
        }

    def kept(self) -> np.ndarray:
        """Boolean (N,): the rows every decision made accepts (a filter test not run, or a row not
        reviewed, does not reject it). What G and M train on."""
        t = self.table(["clip_pass", "dino_pass", "review"]).to_pydict()
        return np.array(
            [c is not False and d is not False and r != "reject" for c, d, r in zip(*t.values(), strict=True)],
            dtype=bool,
        )

    def images(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        """Column ``name`` (``"x"`` or ``"y"``) decoded to uint8 (N, H, W, 3), of ``rows`` (a boolean
        mask or positions, in any order; None: every row). Only the row groups holding those rows are
        read. Every image of a dataset must have one size."""
        return self.image_rows(name, rows).decode()

    def image_rows(self, name: str, rows: np.ndarray | None = None) -> ImageRows:
        """Column ``name`` of ``rows`` as a stream of decoded batches (:class:`ImageRows`): what an
        encoder reads when a dataset is too large to decode at once."""
        if name not in ("x", "y"):
            raise KeyError(f"{name!r} is not an image column; the image columns are 'x' and 'y'")
        wanted = np.arange(len(self)) if rows is None else positions(rows)
        if len(wanted) and (wanted.min() < 0 or wanted.max() >= len(self)):
            raise IndexError(f"rows outside 0..{len(self) - 1} of {self.folder}")
        return ImageRows(self, name, wanted)

    @functools.cached_property
    def _row_groups(self) -> list[tuple[Path, int, int]]:
        """(shard path, row group, first row) of every row group, in the dataset's order (each
        shard's footer read once per opened dataset)."""
        groups, start = [], 0
        for shard in self.manifest["shards"]:
            path = self.folder / shard["file"]
            metadata = pq.ParquetFile(path).metadata
            for group in range(metadata.num_row_groups):
                groups.append((path, group, start))
                start += metadata.row_group(group).num_rows
        if start != len(self):
            raise ValueError(f"{self.folder}: the manifest says {len(self)} rows, its shards hold {start}")
        return groups

    def row(self, position: int) -> dict:
        """The row at ``position`` (0-based, in the dataset's order), reading only its row group."""
        if not 0 <= position < len(self):
            raise IndexError(f"row {position} of a dataset of {len(self)}")
        for shard in self.manifest["shards"]:
            if position < shard["rows"]:
                file = pq.ParquetFile(self.folder / shard["file"])
                for group in range(file.num_row_groups):
                    size = file.metadata.row_group(group).num_rows
                    if position < size:
                        return file.read_row_group(group).slice(position, 1).to_pylist()[0]
                    position -= size
            position -= shard["rows"]
        raise AssertionError("the manifest's row counts disagree with its shards")

    def rows(self, columns: Sequence[str] | None = None) -> Iterator[dict]:
        """Each row as a dict, streaming."""
        for batch in self.iter_batches(columns=columns):
            yield from batch


class ImageRows:
    """One image column of chosen rows, decoded a batch at a time in the rows' order.

    Reads only the Parquet row groups that hold the rows (each once when the rows come in order),
    so memory holds one batch and one row group, not the column: 1M targets at 512 x 512 would be
    786 GB decoded. :meth:`digest` names the content for caches without decoding anything.
    """

    def __init__(self, dataset: Dataset, name: str, rows: np.ndarray) -> None:
        self.dataset, self.name, self.rows = dataset, name, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"ImageRows({str(self.dataset.folder)!r}, {self.name!r}, rows={len(self)})"

    def batches(self, batch_size: int = 256) -> Iterator[np.ndarray]:
        """uint8 (b, H, W, 3) arrays of ``batch_size`` rows (the last may be shorter), in order."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        groups = self.dataset._row_groups
        starts = np.array([start for _, _, start in groups])
        group_of = np.searchsorted(starts, self.rows, side="right") - 1
        cached: tuple[int, list] | None = None  # the last row group read: rows mostly come in order
        pending: list[np.ndarray] = []
        size = None
        for row, g in zip(self.rows, group_of, strict=True):
            if cached is None or cached[0] != g:
                path, group, _ = groups[g]
                table = pq.ParquetFile(path).read_row_group(group, columns=[self.name])
                cached = (g, table.column(self.name).to_pylist())
            image = decode_image(cached[1][row - starts[g]])
            if size is None:
                size = image.shape
            elif image.shape != size:
                raise ValueError(
                    f"{self.dataset.folder}: column {self.name!r} holds images of several sizes ({size}, {image.shape})"
                )
            pending.append(image)
            if len(pending) == batch_size:
                yield np.stack(pending)
                pending = []
        if pending:
            yield np.stack(pending)

    def subset(self, rows: np.ndarray | Sequence[int]) -> ImageRows:
        """The images at ``rows`` of this selection (positions within it, or a mask over it)."""
        return ImageRows(self.dataset, self.name, self.rows[positions(rows)])

    def decode(self) -> np.ndarray:
        """Every image at once, uint8 (N, H, W, 3): for selections that fit in memory."""
        decoded = [image for batch in self.batches(_ROW_GROUP) for image in batch]
        return np.stack(decoded) if decoded else np.zeros((0, 0, 0, 3), np.uint8)

    def digest(self) -> str:
        """sha256 of the column's name, the rows' positions and the dataset's :attr:`~Dataset.content_digest`."""
        h = hashlib.sha256(np.ascontiguousarray(self.rows, dtype=np.int64).tobytes())
        h.update(self.name.encode())
        h.update(self.dataset.content_digest.encode())
        return h.hexdigest()


def _counts(values: Sequence[Any], none: str | None = None) -> dict[str, int]:
    """Value -> count, largest first; nulls left out, or counted under ``none``."""
    out: dict[str, int] = {}
    for v in values:
        if v is None and none is None:
            continue
        key = none if v is None else str(v)
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def _quantiles(values: Sequence[float | None]) -> dict[str, float] | None:
    known = np.array([v for v in values if v is not None], dtype=np.float64)
    if not len(known):
        return None
    qs = (0.05, 0.25, 0.5, 0.75, 0.95)
    return {f"q{int(q * 100):02d}": float(v) for q, v in zip(qs, np.quantile(known, qs), strict=True)}


def positions(rows: np.ndarray | Sequence[int]) -> np.ndarray:
    """Rows named by a boolean mask or by positions -> int64 positions."""
    rows = np.asarray(rows)
    return np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64)


def compose(folder: str | Path, parts: Sequence[str | Path], *, info: Mapping[str, Any] | None = None) -> Dataset:
    """A dataset at ``folder`` made of the shards of the datasets ``parts``, in order, by their paths
    relative to ``folder`` (nothing is copied): the parts of a generation run, or a union of datasets.
    Only its ``manifest.json`` is written, atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shards, rows = [], 0
    for part in map(Path, parts):
        for shard in _read_manifest(part)["shards"]:
            shards.append({**shard, "file": os.path.relpath(part / shard["file"], folder)})
            rows += shard["rows"]
    atomic_write_json(
        _manifest_path(folder), {"format": dict(FORMAT), "rows": rows, "shards": shards, "info": dict(info or {})}
    )
    return Dataset(folder)


def open_dataset(folder: str | Path) -> Dataset:
    """Open what :class:`DatasetWriter` wrote (or a user wrote in the same format)."""
    return Dataset(folder)


def _check_columns(columns: Iterable[str] | None) -> None:
    unknown = sorted(set(columns or ()) - set(COLUMNS))
    if unknown:
        raise KeyError(f"no such column(s) {unknown}; a dataset has {list(COLUMNS)}")


_SHARD = re.compile(r"^shard-(\d{5})\.parquet$")
_ROW_GROUP = 64
"""Rows per Parquet row group: what reading one row (a review) or streaming decodes at once."""


class DatasetWriter:
    """Append rows to a dataset folder, a shard of ``rows_per_shard`` at a time; resumable.

    Use as a context manager: on leaving it (also by an exception or a kill signal that Python
    sees) the rows already added are written, so nothing added is lost. Opening a folder a killed
    writer left resumes it: :meth:`written_ids` says which rows exist, and a shard file the
    manifest does not list (renamed in just before the kill) is removed, its rows to be made again.
    """

    def __init__(self, folder: str | Path, *, rows_per_shard: int = 1024, info: Mapping[str, Any] | None = None):
        if rows_per_shard < 1:
            raise ValueError(f"rows_per_shard must be at least 1, got {rows_per_shard}")
        self.folder = Path(folder)
        self.rows_per_shard = rows_per_shard
        self.folder.mkdir(parents=True, exist_ok=True)
        if _manifest_path(self.folder).is_file():
            self.manifest = _read_manifest(self.folder)
            if info is not None and self.manifest.get("info") != json.loads(json.dumps(dict(info))):
                raise ValueError(
                    f"{self.folder} was written with info {self.manifest.get('info')!r}, not {dict(info)!r}: "
                    "delete it to start again, or write elsewhere"
                )
        else:
            self.manifest = {"format": dict(FORMAT), "rows": 0, "shards": [], "info": dict(info or {})}
            self._write_manifest()
        listed = {s["file"] for s in self.manifest["shards"]}
        for path in self.folder.iterdir():
            if _SHARD.match(path.name) and path.name not in listed:
                logger.warning("removing %s: written after the manifest's last update (its rows are made again)", path)
                path.unlink()
        self._ids = set(Dataset(self.folder).column("id")) if listed else set()
        self._pending: list[dict] = []

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def written_ids(self) -> set[str]:
        """The ids of every row written or added so far: a resumed run skips them."""
        return set(self._ids)

    def add(self, row: Mapping[str, Any]) -> None:
        """One row: the required COLUMNS, any optional ones; images as uint8 (H, W, 3), PIL, or cells."""
        missing = [n for n, (_, required, _) in COLUMNS.items() if required and row.get(n) is None]
        if missing:
            raise ValueError(f"row {row.get('id')!r} lacks the required column(s) {missing}")
        _check_columns(row)
        if row["id"] in self._ids:
            raise ValueError(f"row id {row['id']!r} is already in {self.folder}")
        cells = {name: row.get(name) for name in COLUMNS}
        for name in ("x", "y"):
            if not isinstance(cells[name], Mapping):
                cells[name] = encode_image(cells[name])
        self._ids.add(row["id"])
        self._pending.append(cells)
        if len(self._pending) >= self.rows_per_shard:
            self.flush()

    def add_many(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            self.add(row)

    def flush(self) -> None:
        """Write the rows added since the last shard as a new shard, then list it in the manifest."""
        if not self._pending:
            return
        name = f"shard-{len(self.manifest['shards']):05d}.parquet"
        table = pa.Table.from_pylist(self._pending, schema=SCHEMA)
        atomic_write(self.folder / name, lambda tmp: pq.write_table(table, tmp, row_group_size=_ROW_GROUP))
        self.manifest["shards"].append({"file": name, "rows": table.num_rows})
        self.manifest["rows"] += table.num_rows
        self._write_manifest()
        self._pending = []

    def close(self) -> Dataset:
        self.flush()
        return Dataset(self.folder)

    def _write_manifest(self) -> None:
        atomic_write_json(_manifest_path(self.folder), self.manifest)
