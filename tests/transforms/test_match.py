"""transforms.match's own gs:// listing against fake-gcs-server: it matches what Beam's match
does, and gives each object's identity as Beam's does and its CRC-32C beside it."""

import pytest
from apache_beam.io.filesystems import FileSystems

from models import storage
from transforms.content import content_hash, gcs_content_hash
from transforms.match import Listed, as_pattern, identity, list_objects

NAMES = (
    "photos/a.jpg",
    "photos/b.png",
    "photos/c.jpg.txt",
    "photos/2024/d.jpg",
    "photos/2024/june/e.jpg",
    "photos.jpg",
    "other/f.jpg",
    "shards/00000.tar",
)


@pytest.fixture
def bucket(new_bucket) -> str:
    root = f"gs://{new_bucket('listing')}"
    for name in NAMES:
        storage.write_text(f"{root}/{name}", f"the bytes of {name}")
    return root


def uris(pattern: str, must_match: bool = False) -> list[str]:
    return [uri for uri, _ in list_objects(pattern, must_match)]


def test_globs_match_as_beams_match_does(bucket):
    assert uris(f"{bucket}/photos/*.jpg") == [f"{bucket}/photos/a.jpg"]  # * stops at /
    assert uris(f"{bucket}/photos/**.jpg") == [
        f"{bucket}/photos/2024/d.jpg",
        f"{bucket}/photos/2024/june/e.jpg",
        f"{bucket}/photos/a.jpg",
    ]
    assert uris(f"{bucket}/photos/?.??g") == [f"{bucket}/photos/a.jpg", f"{bucket}/photos/b.png"]
    assert uris(f"{bucket}/nothing/**") == []  # a glob may match nothing
    for pattern in (
        "photos/*.jpg",
        "photos/**.jpg",
        "photos/**",
        "photos/?.*",
        "photos/[ab].*",
        "photos/[!a]*",
        "photo*",
        "*/**/*.jpg",
        "**",
    ):
        beams = FileSystems.match([f"{bucket}/{pattern}"])[0].metadata_list
        assert uris(f"{bucket}/{pattern}") == sorted(m.path for m in beams), pattern


def test_a_folder_is_matched_below_it_and_a_named_object_must_be_there(bucket):
    folder = as_pattern(f"{bucket}/photos/")
    assert uris(folder) == [f"{bucket}/{name}" for name in sorted(NAMES[:5])]
    assert uris(f"{bucket}/photos.jpg", must_match=True) == [f"{bucket}/photos.jpg"]
    for missing in (f"{bucket}/photos/gone.jpg", f"{bucket}/photos"):  # a folder is no object
        assert uris(missing) == []
        with pytest.raises(FileNotFoundError, match=missing):
            list_objects(missing, must_match=True)


def test_each_object_carries_beams_identity_and_its_crc32c(bucket):
    listed = dict(list_objects(f"{bucket}/**", must_match=True))
    beams = {m.path: identity(m) for m in FileSystems.match([f"{bucket}/**"])[0].metadata_list}
    assert set(listed) == set(beams)
    shard = f"{bucket}/shards/00000.tar"
    assert listed.pop(shard) == beams[shard]  # a tar's checksum is no image's content
    for uri, payload in listed.items():
        assert isinstance(payload, Listed) and payload.identity == beams[uri]
        data = storage.read_bytes(uri)
        assert gcs_content_hash(payload.crc32c, payload.size) == content_hash(data)
