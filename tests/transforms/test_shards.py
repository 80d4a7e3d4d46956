"""Tar shards, pure parts: members read one at a time, image members only, and every way a
shard can end short is a fault, never a quiet end; the member URI notation and WebDataset's
keys; WebDataset's brace notation."""

import io
import tarfile

import pytest

from transforms.match import expand_braces, split_inputs
from transforms.shards import (
    DamagedShard,
    member_key,
    member_uri,
    read_members,
    split_member_uri,
    webdataset_key,
)


def tar_of(members: dict[str, bytes]) -> bytes:
    """A tar (as WebDataset's TarWriter writes one, with Python's tarfile) of ``members``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


SAMPLES = {
    "000000.jpg": b"a" * 3000,
    "000000.txt": b"a caption",
    "000000.json": b"{}",
    "part/000001.seg.PNG": b"b" * 700,
    "000002.cls": b"3",
}


def test_image_members_are_read_in_order_and_the_rest_passed_over():
    assert list(read_members(io.BytesIO(tar_of(SAMPLES)))) == [
        ("000000.jpg", b"a" * 3000),
        ("part/000001.seg.PNG", b"b" * 700),
    ]


class Reads(io.BytesIO):
    """A stream that records the size of every read: a shard is never read whole."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.sizes = []

    def read(self, size=-1):
        self.sizes.append(size)
        return super().read(size)


def test_a_shard_is_streamed_a_record_or_a_member_at_a_time():
    members = {f"{n:06d}.jpg": bytes([n]) * 3000 for n in range(100)}
    stream = Reads(tar_of(members))
    read = read_members(stream)
    assert next(read) == ("000000.jpg", members["000000.jpg"])
    assert stream.tell() <= 2 * tarfile.RECORDSIZE  # the rest of the 300 KB not yet read
    assert dict(read) == {name: data for name, data in members.items() if name != "000000.jpg"}
    assert 0 < max(stream.sizes) <= tarfile.RECORDSIZE


def test_a_shard_cut_anywhere_is_damaged_never_quietly_short():
    """tarfile alone ends quietly where a shard is cut at a member's end: members lost. Cut
    before its first end-of-archive block, a shard is damaged; after it, whole."""
    whole = tar_of(SAMPLES)
    with tarfile.open(fileobj=io.BytesIO(whole), mode="r|") as tar:
        list(tar)
        end = tar.offset  # where the end-of-archive blocks start
    assert end == 8192 and len(whole) == 10240
    for cut in range(0, len(whole) + 1, 64):
        read = []
        if cut < end + 512:
            with pytest.raises(DamagedShard, match="^a truncated or damaged tar shard: "):
                read.extend(read_members(io.BytesIO(whole[:cut])))
            assert len(read) <= 2, cut
        else:
            assert [name for name, _ in read_members(io.BytesIO(whole[:cut]))] == [
                "000000.jpg",
                "part/000001.seg.PNG",
            ]


def test_what_went_wrong_and_where_is_said():
    whole = tar_of(SAMPLES)
    with pytest.raises(DamagedShard) as cut:
        list(read_members(io.BytesIO(whole[:3584])))  # at the end of the first member
    assert str(cut.value) == (
        "a truncated or damaged tar shard: it ends before tar's end-of-archive block, "
        "after 1 image members (the last read whole: 000000.jpg)"
    )
    with pytest.raises(DamagedShard, match="invalid header, at once"):
        list(read_members(io.BytesIO(b"not a tar" * 200)))
    spliced = whole[:3584] + b"x" * 512 + whole[3584:]  # a header overwritten
    with pytest.raises(DamagedShard, match="neither a member nor the end of the archive, after 1"):
        list(read_members(io.BytesIO(spliced)))


def test_member_uris_and_keys():
    uri = member_uri("gs://b/shards/00007.tar", "part/000070011.seg.png")
    assert uri == "gs://b/shards/00007.tar#part/000070011.seg.png"
    assert split_member_uri(uri) == ("gs://b/shards/00007.tar", "part/000070011.seg.png")
    assert member_key(uri) == "part/000070011"  # WebDataset's __key__
    assert split_member_uri("photos/a#1.jpg") is None and member_key("photos/a.jpg") is None
    assert webdataset_key("README") is None


def test_braces_as_webdataset_writes_them():
    assert expand_braces("gs://b/{00008..00011}.tar") == [
        "gs://b/00008.tar",
        "gs://b/00009.tar",
        "gs://b/00010.tar",
        "gs://b/00011.tar",
    ]
    assert expand_braces("s/{a,b}-{1..2}.tar") == [
        "s/a-1.tar",
        "s/a-2.tar",
        "s/b-1.tar",
        "s/b-2.tar",
    ]
    assert expand_braces("photos/{draft}.jpg") == ["photos/{draft}.jpg"]
    assert split_inputs("a.jpg,s/{a,b}.tar,c/") == ["a.jpg", "s/{a,b}.tar", "c/"]


def test_a_local_file_named_with_braces_is_taken_as_named(tmp_path):
    odd = tmp_path / "{1..2}.tar"
    odd.write_bytes(b"")
    assert expand_braces(str(odd)) == [str(odd)]
