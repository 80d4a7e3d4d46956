import json

import pytest

from models.datasets.caption_files import CaptionFileError, detect_format, read_caption_file

CSV = (
    "\ufeffimage,caption\n"
    '1000.jpg,"A dog, running fast, on grass ."\n'
    '1000.jpg,"She said ""hello"" to the café owner"\n'
    "\n"
    "1001.jpg,A child climbing, unquoted comma\n"
    '1002.jpg,"A caption that spans\ntwo lines"\n'
    "broken-line-without-caption\n"
    "1003.jpg,Ünïcödé naïve résumé\n"
)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_flickr8k_csv_quotes_commas_unicode_and_blank_lines(tmp_path):
    path = write(tmp_path, "captions.txt", CSV)
    with pytest.raises(CaptionFileError, match=r"captions.txt:8: expected 'image,caption'"):
        read_caption_file(path)
    result = read_caption_file(path, skip_bad_lines=True)
    assert result.pairs == [
        ("1000.jpg", "A dog, running fast, on grass ."),
        ("1000.jpg", 'She said "hello" to the café owner'),
        ("1001.jpg", "A child climbing, unquoted comma"),
        ("1002.jpg", "A caption that spans\ntwo lines"),
        ("1003.jpg", "Ünïcödé naïve résumé"),
    ]
    assert len(result.skipped) == 1 and "captions.txt:8" in result.skipped[0]


def test_flickr8k_token_file(tmp_path):
    path = write(
        tmp_path,
        "Flickr8k.token.txt",
        "1000.jpg#0\tA dog runs .\n1000.jpg#1\tA dog, fast .\n\nno-tab-here\n1001.jpg#x\tbad\n",
    )
    with pytest.raises(CaptionFileError, match=r"token.txt:4"):
        read_caption_file(path)
    result = read_caption_file(path, skip_bad_lines=True)
    assert result.pairs == [("1000.jpg", "A dog runs ."), ("1000.jpg", "A dog, fast .")]
    assert [s.split(": ")[0].rsplit(":", 1)[1] for s in result.skipped] == ["4", "5"]


def test_coco_json(tmp_path):
    data = {
        "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
        "annotations": [
            {"image_id": 1, "caption": " A cat. "},
            {"image_id": 2, "caption": "Two dogs"},
            {"image_id": 9, "caption": "orphan"},
        ],
    }
    path = write(tmp_path, "captions_train2014.json", json.dumps(data))
    with pytest.raises(CaptionFileError, match="annotation 2"):
        read_caption_file(path)
    result = read_caption_file(path, skip_bad_lines=True)
    assert result.pairs == [("a.jpg", "A cat."), ("b.jpg", "Two dogs")]
    bad = write(tmp_path, "bad.json", "{not json")
    with pytest.raises(CaptionFileError, match="not a COCO captions file"):
        read_caption_file(bad, skip_bad_lines=True)


def test_format_detection_and_empty_fields(tmp_path):
    assert detect_format("gs://b/captions_val2017.json") == "coco"
    assert detect_format("/x/Flickr8k.token.txt") == "flickr8k-token"
    assert detect_format("captions.txt") == "flickr8k-csv"
    path = write(tmp_path, "captions.txt", "image,caption\n,orphan caption\n2.jpg,\n")
    result = read_caption_file(path, skip_bad_lines=True)
    assert result.pairs == [] and len(result.skipped) == 2
