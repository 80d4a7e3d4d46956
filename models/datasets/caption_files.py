"""Readers for the caption files of public datasets, yielding ``(image_name, caption)`` pairs.

Formats, chosen by file name (or ``fmt``):
  ``flickr8k-csv``   Flickr8k ``captions.txt``: CSV with header ``image,caption``; quoted fields
                     may hold commas, quotes and newlines; a caption with unquoted commas is
                     re-joined (the caption is the last column);
  ``flickr8k-token`` ``Flickr8k.token.txt``: ``name#n<TAB>caption``;
  ``coco``           COCO captions JSON (``images`` with ``id``/``file_name``, ``annotations``
                     with ``image_id``/``caption``).

Blank lines are ignored. A malformed line raises :class:`CaptionFileError` naming the file and
line (for COCO, the annotation's index), unless ``skip_bad_lines``: then it is skipped and
reported in ``CaptionFile.skipped``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import posixpath

from models import storage


class CaptionFileError(ValueError):
    """A caption file line that cannot be read."""


@dataclasses.dataclass
class CaptionFile:
    pairs: list[tuple[str, str]]
    skipped: list[str]  # "FILE:LINE: reason" for every skipped line


def detect_format(uri: str) -> str:
    name = posixpath.basename(uri).lower()
    if name.endswith(".json"):
        return "coco"
    if ".token" in name or name.endswith(".tsv"):
        return "flickr8k-token"
    return "flickr8k-csv"


def _flickr8k_csv(uri: str, text: str):
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        return
    if [field.strip().lower() for field in header[:2]] != ["image", "caption"]:
        yield reader.line_num, None, f"expected the header 'image,caption', got {header!r}"
    for row in reader:
        line = reader.line_num
        if not row or not any(field.strip() for field in row):
            continue
        if len(row) < 2:
            yield line, None, "expected 'image,caption'"
            continue
        image, caption = row[0].strip(), ",".join(row[1:]).strip()
        yield line, (image, caption), None


def _flickr8k_token(uri: str, text: str):
    for line, row in enumerate(text.splitlines(), start=1):
        if not row.strip():
            continue
        key, tab, caption = row.partition("\t")
        image, hash_sign, number = key.strip().rpartition("#")
        if not tab or not hash_sign or not number.isdigit():
            yield line, None, "expected 'name#n<TAB>caption'"
            continue
        yield line, (image, caption.strip()), None


def _coco(uri: str, text: str):
    try:
        data = json.loads(text)
        names = {image["id"]: image["file_name"] for image in data["images"]}
        annotations = data["annotations"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise CaptionFileError(f"{uri}: not a COCO captions file ({error})") from error
    for index, annotation in enumerate(annotations):
        image_id = annotation.get("image_id") if isinstance(annotation, dict) else None
        if image_id not in names or not isinstance(annotation.get("caption"), str):
            yield f"annotation {index}", None, f"unknown image_id {image_id!r} or no caption"
            continue
        yield f"annotation {index}", (names[image_id], annotation["caption"].strip()), None


_READERS = {"flickr8k-csv": _flickr8k_csv, "flickr8k-token": _flickr8k_token, "coco": _coco}


def read_caption_file(
    uri: str, *, fmt: str | None = None, skip_bad_lines: bool = False
) -> CaptionFile:
    fmt = fmt or detect_format(uri)
    if fmt not in _READERS:
        raise ValueError(f"unknown caption format {fmt!r}; one of {sorted(_READERS)}")
    text = storage.read_bytes(uri).decode("utf-8-sig")
    pairs, skipped = [], []
    for line, pair, problem in _READERS[fmt](uri, text):
        if pair is not None and (not pair[0] or not pair[1]):
            problem = "empty image name or caption"
        if problem is None:
            pairs.append(pair)
            continue
        where = f"{uri}:{line}: {problem}"
        if not skip_bad_lines:
            raise CaptionFileError(where + " (use --skip-bad-lines to skip such lines)")
        skipped.append(where)
    return CaptionFile(pairs, skipped)
