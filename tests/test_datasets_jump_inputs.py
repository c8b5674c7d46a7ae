"""The JUMP input layer: URLs and roots, TIFF fetching with retries, load data, metadata, preprocessing."""

from __future__ import annotations

import gzip
import io

import numpy as np
import polars as pl
import pytest
import tifffile

from benchmark.constants import CHANNELS
from benchmark.errors import DataError
from benchmark.datasets.jump.fetch import (ImageReadError, LocalRoot, MissingObjectError, PathTraversalError,
                                           TransientError, fetch_image, open_root, url_to_key)
from benchmark.datasets.jump.loaddata import parse_load_data
from benchmark.datasets.jump.metadata import JumpMetadata, load_metadata, normalize_well, select_plates
from benchmark.datasets.jump.preprocess import centre_crop, clip_value, downsample_half, preprocess_channel, to_uint8

KEY = "cpg0016-jump/source_3/images/B/images/P__2021-Measurement 1/Images/r01c01f01p01-ch1sk1fk1fl1.tiff"


def _tiff(shape=(8, 8)) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.arange(np.prod(shape), dtype=np.uint16).reshape(shape))
    return buf.getvalue()


# --- URLs and roots ------------------------------------------------------------------------------

@pytest.mark.parametrize("url", [f"s3://cellpainting-gallery/{KEY}",
                                 f"https://cellpainting-gallery.s3.amazonaws.com/{KEY.replace(' ', '%20')}",
                                 f"https://s3.us-east-1.amazonaws.com/cellpainting-gallery/{KEY}"])
def test_url_forms_map_to_the_same_key(url):
    assert url_to_key(url, "x") == KEY


@pytest.mark.parametrize("url", ["s3://cellpainting-gallery/cpg0016-jump/../../etc/passwd",
                                 "https://cellpainting-gallery.s3.amazonaws.com/a/%2E%2E/%2E%2E/b",
                                 "s3://other-bucket/cpg0016-jump/x.tif", "/etc/passwd", "file:///etc/passwd"])
def test_urls_outside_the_bucket_are_refused(url):
    with pytest.raises(PathTraversalError, match=r"load_data.csv row 7: refused .*outside"):
        url_to_key(url, "load_data.csv row 7")


def test_local_root_refuses_a_symlink_out_of_the_root(tmp_path):
    (tmp_path / "secret.tif").write_bytes(_tiff())
    root = tmp_path / "bucket"
    (root / "cpg0016-jump").mkdir(parents=True)
    (root / "cpg0016-jump" / "link.tif").symlink_to(tmp_path / "secret.tif")
    with pytest.raises(PathTraversalError, match="outside --root"):
        LocalRoot(root).read("cpg0016-jump/link.tif")


def test_open_root_errors(tmp_path):
    with pytest.raises(DataError, match="is not a folder"):
        open_root(str(tmp_path / "nope"))
    with pytest.raises(DataError, match="only s3:// URLs and local folders"):
        open_root("gs://bucket")
    assert open_root("s3://cellpainting-gallery").description == "s3://cellpainting-gallery"


class FlakyRoot:
    """A remote-like root: fails ``failures`` times with the given error, then serves ``data``."""

    description = "s3://fake"

    def __init__(self, data: bytes, failures: int, error: type[Exception]):
        self.data, self.failures, self.error, self.calls = data, failures, error, 0

    def read(self, key):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error(f"{key}: boom")
        return self.data

    def size(self, key):
        return len(self.data)


def test_fetch_retries_network_errors_then_succeeds():
    root = FlakyRoot(_tiff(), failures=2, error=TransientError)
    assert fetch_image(root, "k", attempts=3, backoff_s=0).pixels.shape == (8, 8)
    assert root.calls == 3


def test_fetch_reraises_network_errors_after_the_last_attempt():
    root = FlakyRoot(_tiff(), failures=5, error=TransientError)
    with pytest.raises(TransientError):
        fetch_image(root, "k", attempts=2, backoff_s=0)


def test_truncated_download_is_retried_then_reported_with_its_key():
    data = _tiff()
    root = FlakyRoot(data[: len(data) // 3], failures=0, error=TransientError)
    with pytest.raises(ImageReadError, match=r"some/key.tif: unreadable TIFF") as info:
        fetch_image(root, "some/key.tif", attempts=3, backoff_s=0)
    assert root.calls == 3 and info.value.key == "some/key.tif"


def test_missing_object_is_not_retried():
    root = FlakyRoot(b"", failures=9, error=MissingObjectError)
    with pytest.raises(ImageReadError, match="missing"):
        fetch_image(root, "k", attempts=3, backoff_s=0)
    assert root.calls == 1


def test_multi_channel_tiff_is_refused():
    root = FlakyRoot(_tiff((3, 4, 4)), failures=0, error=TransientError)
    with pytest.raises(ImageReadError, match="expected a 2-D single-channel TIFF"):
        fetch_image(root, "k", attempts=1, backoff_s=0)


# --- load data ----------------------------------------------------------------------------------

def _load_data(url_form: bool, drop: str | None = None, site: str = "1") -> bytes:
    row = {"Metadata_Plate": "00123", "Metadata_Well": "a1", "Metadata_Site": site}
    for ch in CHANNELS:
        if url_form:
            row[f"URL_Orig{ch}"] = f"s3://cellpainting-gallery/cpg0016-jump/s/images/b/{ch}.tif"
        else:
            row[f"PathName_Orig{ch}"] = "s3://cellpainting-gallery/cpg0016-jump/s/images/b/"
            row[f"FileName_Orig{ch}"] = f"{ch}.tif"
    if drop:
        row = {k: v for k, v in row.items() if not k.endswith(drop)}
    buf = io.BytesIO()
    pl.DataFrame([row]).write_csv(buf)
    return buf.getvalue()


@pytest.mark.parametrize("url_form", [True, False])
def test_both_load_data_forms_give_the_same_keys(url_form):
    table = parse_load_data(_load_data(url_form), "ld.csv")
    assert table["well"].to_list() == ["A01"] and table["site"].to_list() == [1]
    assert table["key_DNA"].to_list() == ["cpg0016-jump/s/images/b/DNA.tif"]


def test_gzipped_load_data_is_read():
    assert len(parse_load_data(gzip.compress(_load_data(True)), "ld.csv.gz")) == 1


def test_load_data_without_a_channel_column_names_the_file_and_column():
    with pytest.raises(DataError, match=r"plates/P1/load_data.csv lacks column\(s\) URL_OrigMito "
                                        r"\(or FileName_OrigMito \+ PathName_OrigMito\)"):
        parse_load_data(_load_data(True, drop="OrigMito"), "plates/P1/load_data.csv")


def test_load_data_with_a_bad_site_is_refused():
    with pytest.raises(DataError, match="Metadata_Site must be a whole number, found 'x'"):
        parse_load_data(_load_data(True, site="x"), "ld.csv")


def test_load_data_with_an_escaping_url_is_refused():
    data = _load_data(True).replace(b"cpg0016-jump/s/images/b/RNA.tif", b"cpg0016-jump/../../RNA.tif")
    with pytest.raises(PathTraversalError, match=r"ld.csv row 2 column RNA: refused"):
        parse_load_data(data, "ld.csv")


def test_unreadable_load_data():
    with pytest.raises(DataError, match="not a readable load-data table"):
        parse_load_data(b"\x1f\x8b garbage", "ld.csv.gz")


# --- metadata -----------------------------------------------------------------------------------

def _write(path, text: str, gz: bool = True):
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())


def test_metadata_missing_column_names_file_and_column(tmp_path):
    _write(tmp_path / "plate.csv.gz", "Metadata_Source,Metadata_Batch,Metadata_Plate\ns,b,p\n")
    _write(tmp_path / "well.csv.gz", "Metadata_Source,Metadata_Plate,Metadata_Well,Metadata_JCP2022\n")
    with pytest.raises(DataError, match=r"plate.csv.gz lacks column\(s\) Metadata_PlateType"):
        load_metadata(tmp_path)


def test_metadata_corrupt_gzip_and_missing_file(tmp_path):
    (tmp_path / "plate.csv.gz").write_bytes(b"\x1f\x8b\x08not really gzip")
    with pytest.raises(DataError, match="plate.csv.gz is not a readable CSV"):
        load_metadata(tmp_path)
    (tmp_path / "plate.csv.gz").unlink()
    with pytest.raises(DataError, match=r"plate.csv.gz is missing; it comes from https://raw.githubusercontent"):
        load_metadata(tmp_path)


def test_select_plates_reads_ids_as_strings_and_lists_valid_sources(tmp_path):
    _write(tmp_path / "plate.csv.gz", "Metadata_Source,Metadata_Batch,Metadata_Plate,Metadata_PlateType\n"
                                      "source_3,CP_33_all_Phenix1,001,COMPOUND\nsource_3,B_1,002,COMPOUND\n"
                                      "source_3,B_1,003,ORF\n")
    _write(tmp_path / "well.csv.gz", "Metadata_Source,Metadata_Plate,Metadata_Well,Metadata_JCP2022\n")
    meta = load_metadata(tmp_path)
    assert isinstance(meta, JumpMetadata) and meta.microscopes is None
    plates = select_plates(meta, ["source_3"], {"source_3": ("CP_33_all_Phenix1",)})
    assert plates["plate_id"].to_list() == ["source_3_B_1_002"]
    assert len(select_plates(meta, ["source_3"], {})) == 2
    with pytest.raises(DataError, match="source_9 are not in plate.csv.gz; valid sources: source_3"):
        select_plates(meta, ["source_9"], {})


def test_normalize_well():
    assert [normalize_well(w) for w in ("a1", "A01", "P24", "p024")] == ["A01", "A01", "P24", "P24"]


# --- preprocessing ------------------------------------------------------------------------------

def test_clip_value_is_the_smallest_of_the_top_pixels():
    image = np.arange(20_000, dtype=np.uint16)  # top 0.01 % = 2 pixels: 19998, 19999
    assert clip_value(image) == 19998
    assert clip_value(np.arange(10, dtype=np.uint16)) == 9  # at least one pixel


def test_uint8_mapping_and_saturation():
    out = to_uint8(np.array([0, 50, 100, 400], dtype=np.uint16), clip=100)
    assert out.tolist() == [0, 128, 255, 255] and out.dtype == np.uint8
    assert to_uint8(np.zeros(4, dtype=np.uint16), clip=0).tolist() == [0, 0, 0, 0]


def test_downsample_crop_and_pipeline():
    image = np.arange(100, dtype=np.uint16).reshape(10, 10)
    assert downsample_half(image).tolist()[0] == [0, 2, 4, 6, 8]
    assert centre_crop(np.arange(36).reshape(6, 6), 2).tolist() == [[14, 15], [20, 21]]
    with pytest.raises(ValueError, match="smaller than the crop 8x8"):
        centre_crop(np.zeros((6, 6)), 8)
    out = preprocess_channel(np.random.default_rng(0).integers(0, 60000, (80, 80)).astype(np.uint16), 32)
    assert out.shape == (32, 32) and out.dtype == np.uint8


# --- S3 root (no network: botocore's Stubber answers) --------------------------------------------

def test_s3_root_reads_anonymously_under_its_prefix_and_maps_errors():
    from botocore import UNSIGNED
    from botocore.stub import Stubber

    root = open_root("s3://cellpainting-gallery/mirror", max_connections=4)
    client = root._client()
    assert client.meta.config.signature_version is UNSIGNED
    stub = Stubber(client)
    stub.add_response("get_object", {"Body": io.BytesIO(_tiff()), "ContentLength": 10},
                      {"Bucket": "cellpainting-gallery", "Key": f"mirror/{KEY}"})
    stub.add_client_error("get_object", service_error_code="NoSuchKey", http_status_code=404)
    stub.add_client_error("get_object", service_error_code="SlowDown", http_status_code=503)
    with stub:
        assert fetch_image(root, KEY, attempts=1).pixels.shape == (8, 8)
        with pytest.raises(ImageReadError, match="missing"):
            fetch_image(root, KEY, attempts=3, backoff_s=0)
        with pytest.raises(TransientError, match="SlowDown"):
            root.read(KEY)
    with pytest.raises(PathTraversalError):
        root.read("cpg0016-jump/../x")
