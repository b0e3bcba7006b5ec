"""Downloads: resume after a dropped connection, conditional re-validation, local mirrors,
clear errors for missing files and unreachable hosts."""
from __future__ import annotations

import gzip
import hashlib
import socket

import pytest

from warehouse.download import CorruptRawFile, DownloadError, TransientDownloadError, fetch, lookup
from warehouse.store import Warehouse

META = "amazon_v2/metaFiles2/meta_Magazine_Subscriptions.json.gz"


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_interrupted_download_resumes_byte_identical(tmp_path, server, mirror):
    wh = Warehouse(tmp_path / "home")
    dest = wh.raw_dir / "meta.json.gz"
    server.cut_after[META] = 50_000
    with pytest.raises(TransientDownloadError, match="resumes"):
        fetch(wh, f"{server.url}/{META}", dest, progress=False)
    assert not dest.exists()
    assert dest.with_name("meta.json.gz.part").stat().st_size == 50_000

    result = fetch(wh, f"{server.url}/{META}", dest, progress=False)
    assert result.status == "resumed"
    assert result.bytes_transferred == (mirror / META).stat().st_size - 50_000
    assert sha(dest) == sha(mirror / META) == result.record.sha256
    assert server.log[-1][1] == 206
    assert not dest.with_name("meta.json.gz.part").exists()


def test_unchanged_file_is_not_downloaded_again(tmp_path, server, mirror):
    wh = Warehouse(tmp_path / "home")
    dest = wh.raw_dir / "meta.json.gz"
    first = fetch(wh, f"{server.url}/{META}", dest, progress=False)
    assert first.status == "downloaded" and first.record.etag
    second = fetch(wh, f"{server.url}/{META}", dest, progress=False)
    assert second.status == "unchanged"
    assert server.log[-1] == (META, 304, 0)
    assert lookup(wh, f"{server.url}/{META}") == first.record


def test_changed_file_on_server_is_downloaded_again(tmp_path, server, mirror):
    wh = Warehouse(tmp_path / "home")
    dest = wh.raw_dir / "meta.json.gz"
    fetch(wh, f"{server.url}/{META}", dest, progress=False)
    new = gzip.compress(b'{"asin": "new content"}\n')
    (mirror / META).write_bytes(new)
    result = fetch(wh, f"{server.url}/{META}", dest, progress=False)
    assert result.status == "downloaded"
    assert dest.read_bytes() == new
    assert lookup(wh, f"{server.url}/{META}").sha256 == hashlib.sha256(new).hexdigest()


@pytest.mark.parametrize("scheme", ["file://", ""])
def test_local_directory_mirror(tmp_path, mirror, scheme):
    wh = Warehouse(tmp_path / "home")
    dest = wh.raw_dir / "meta.json.gz"
    url = f"{scheme}{mirror / META}"
    assert fetch(wh, url, dest, progress=False).status == "downloaded"
    assert sha(dest) == sha(mirror / META)
    assert fetch(wh, url, dest, progress=False).status == "unchanged"


def test_missing_file_is_a_clear_final_error(tmp_path, server):
    wh = Warehouse(tmp_path / "home")
    with pytest.raises(DownloadError, match="404.*category name") as info:
        fetch(wh, f"{server.url}/amazon_v2/nope.json.gz", wh.raw_dir / "x", progress=False)
    assert not isinstance(info.value, TransientDownloadError)


def test_unreachable_host_names_the_url_and_the_mirror_variables(tmp_path):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    wh = Warehouse(tmp_path / "home")
    url = f"http://127.0.0.1:{port}/amazon_v2/x.json.gz"
    with pytest.raises(TransientDownloadError, match="ANT_AMAZON_2018_URL") as info:
        fetch(wh, url, wh.raw_dir / "x", timeout_s=5, progress=False)
    assert url in str(info.value)


@pytest.mark.parametrize("path", [META, "amazon_2023/raw/review_categories/Gift_Cards.jsonl.gz"])
@pytest.mark.parametrize("encoding", ["gzip", "gzip+again"])
def test_gzip_content_coding_is_undone_exactly_once(tmp_path, server, mirror, path, encoding):
    """A mirror labelling a stored .gz `Content-Encoding: gzip` sends the file itself; a proxy
    that compresses it once more sends gzip(gzip). Either way the stored file is the .gz."""
    wh = Warehouse(tmp_path / "home")
    server.content_encodings[path] = encoding
    dest = wh.raw_dir / path.rsplit("/", 1)[1]
    result = fetch(wh, f"{server.url}/{path}", dest, progress=False)
    assert sha(dest) == sha(mirror / path) == result.record.sha256


def test_a_file_compressed_twice_is_refused_and_not_recorded(tmp_path, server, mirror):
    """Compressed twice on the mirror itself (no content coding to undo): one error naming the
    URL and the cause; no file and no record left behind for the next run to reuse."""
    wh = Warehouse(tmp_path / "home")
    (mirror / META).write_bytes(gzip.compress((mirror / META).read_bytes()))
    dest = wh.raw_dir / "meta.json.gz"
    url = f"{server.url}/{META}"
    with pytest.raises(CorruptRawFile, match=rf"{url}: .*compressed twice.*Nothing was kept"):
        fetch(wh, url, dest, progress=False)
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()
    assert lookup(wh, url) is None
