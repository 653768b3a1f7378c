"""The steps of `earthvl annotate gaia` that need no language model: reading, cleaning, de-duplication, geocoding,
the schema, splitting and writing."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from gaia_scrape_world import encoded, scene

from earthvl.builders.gaia import layout
from earthvl.builders.gaia.annotate import clean, dedup, geocode, schema
from earthvl.builders.gaia.annotate.records import Record, column_mapping, load_records
from earthvl.builders.gaia.annotate.report import AnnotationReport
from earthvl.builders.gaia.annotate.write import write_splits
from earthvl.errors import EarthvlError


def test_clean_extracts_the_article_from_html_and_normalises_text():
    html = ("<html><body><nav>Home | About | Contact</nav><article><h1>Floods</h1><p>Storm Daniel flooded the "
            "Thessaly plain.</p><p>Sentinel-2   saw it.</p></article><footer>Copyright cookies</footer></body></html>")
    assert clean.looks_like_html(html) and not clean.looks_like_html("a < b and c > d")
    text = clean.clean_article(html)
    assert "Storm Daniel flooded the Thessaly plain." in text and "Sentinel-2 saw it." in text
    assert "Contact" not in text and "cookies" not in text
    assert clean.clean_article("  Ca\u0301diz\x00  dust \n\n\n\n over  sea ") == "Cádiz dust\n\nover sea"
    assert clean.article_problem("", 5).startswith("empty article")
    assert clean.article_problem("three short words", 5) == "short article: 3 words (fewer than min_words=5)"
    assert clean.article_problem("one two three four five", 5) is None


def test_an_overlong_article_is_cut_to_the_token_bound_and_says_so():
    text = "word " * 1_000  # 5,000 characters, ~1,250 estimated tokens
    assert clean.cut_article(text, 1_250) == (text, None)
    cut, reason = clean.cut_article(text, 100)
    assert cut == text[:400] and clean.estimated_tokens(cut) == 100
    assert reason == "long article: 5,000 characters cut to 400 (max_article_tokens=100)"


def test_records_read_csv_with_a_column_mapping_and_report_what_they_ignore(tmp_path):
    path = tmp_path / "scraped.csv"
    path.write_text("img,body,when,lat,lon\nhttp://x.org/a.png,text,2024-02-30,10,\n"
                    "b.png,more,2024-03-01,95,10\n,none,,,\nhttp://x.org/c.png,c,2024-06-01T10:00:00,1,2\n")
    records, refused, ignored = load_records(path, column_mapping(["image_src=img", "article=body", "date=when"]))
    assert [r.id for r in records] == [1, 2, 4] and refused == [{"id": 3, "row": 3, "reason": "no image_src (an image URL or local path)"}]
    assert records[1].image_src == str(tmp_path / "b.png") and not records[1].is_url
    assert (records[0].date, records[0].lat) == (None, None)
    assert (records[2].date, records[2].lat, records[2].lon) == ("2024-06-01", 1.0, 2.0)
    reasons = [(entry["id"], entry["reason"].split(" ")[0]) for entry in ignored]
    assert reasons == [(1, "only"), (1, "date"), (2, "lat"), (2, "only")]
    with pytest.raises(EarthvlError, match="OURS=THEIRS"):
        column_mapping(["body"])
    with pytest.raises(EarthvlError, match="unknown format"):
        load_records(tmp_path / "scraped.txt")


def test_hostile_records_are_refused_or_flagged_and_the_report_can_be_written(tmp_path):
    import os

    folder = tmp_path / "scrape"
    (folder / "img").mkdir(parents=True)
    (folder / "img" / "ok.png").write_bytes(encoded(scene(1)))
    (tmp_path / "private.png").write_bytes(encoded(scene(2)))
    os.symlink(tmp_path / "private.png", folder / "img" / "link.png")
    rows = [{"id": 1, "image_src": "img/ok.png", "article": "a lone \ud800 surrogate", "credits": "\udfff"},
            {"id": "\ud800", "image_src": "img/ok.png"}, {"id": "../../x", "image_src": "img/ok.png"},
            {"id": 4, "image_src": "../private.png"}, {"id": 5, "image_src": str(tmp_path / "private.png")},
            {"id": 6, "image_src": "img/link.png"}]
    path = folder / "scraped.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    records, refused, ignored = load_records(path)
    assert [(r.id, r.article, r.credits) for r in records] == [(1, "a lone \ufffd surrogate", "\ufffd")]
    assert [(e["id"], e["reason"]) for e in ignored] == [
        (1, "article holds lone surrogates (not Unicode): replaced by U+FFFD"),
        (1, "credits holds lone surrogates (not Unicode): replaced by U+FFFD"),
    ]
    reasons = {entry["id"]: entry["reason"] for entry in refused}
    assert reasons["\\ud800"] == "id is not valid Unicode (a lone surrogate)"
    assert reasons["../../x"] == "id is not a plain file name"
    assert all(f"is not inside the records' folder {folder}" in reasons[i] for i in (4, 5, 6))
    report = AnnotationReport(str(path))
    for entry in refused:
        report.drop("read", entry["id"], entry["reason"])
    report.save(tmp_path)  # JSON in UTF-8: no lone surrogate left in it
    path.write_text(json.dumps(rows[0]) + "\n" + json.dumps(rows[2]) + "\n" + json.dumps(rows[3])[:-9] + "\n")
    with pytest.raises(EarthvlError, match=f"records file {path}, line 3: not JSON"):
        load_records(path)


def test_the_annotation_folder_must_be_apart_from_the_records_and_no_link(tmp_path):
    import os

    from earthvl.builders.gaia.annotate.options import AnnotateGaiaArguments
    from earthvl.builders.gaia.annotate.pipeline import annotate_gaia
    from earthvl.llm.options import BackendArguments

    records = tmp_path / "scraped.jsonl"
    records.write_text('{"image_src": "a.png"}\n')
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    backend = BackendArguments(backend="openai", model="m", base_url="http://127.0.0.1:9/v1")
    for out, message in ((tmp_path, "holds --records"), (tmp_path / "link", "is a symbolic link")):
        with pytest.raises(EarthvlError, match=message):
            annotate_gaia(AnnotateGaiaArguments(records=str(records), out=str(out)), backend)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real", "scraped.jsonl"]


def _record(record_id, text, image_src="http://x.org/a.png"):
    return Record(id=record_id, image_src=image_src, text=text)


def test_duplicates_keep_the_richest_article_and_name_it():
    report = AnnotationReport("r")
    records = [_record(1, "short"), _record(2, "a longer article"), _record(3, "other", "http://x.org/b.png"),
               _record(4, "a longer article too", "HTTP://X.org/a.png?utm_source=rss#x")]
    kept = dedup.drop_duplicates(records, lambda r: dedup.canonical_url(r.image_src), report, "same_url", "same URL")
    assert [r.id for r in kept] == [3, 4]
    assert [(d["id"], d["duplicate_of"]) for d in report.dropped] == [(1, 4), (2, 4)]
    assert report.steps["dedup"] == {"dropped": 2, "dropped_same_url": 2}


def test_near_duplicates_by_perceptual_hash(tmp_path):
    files = {1: encoded(scene(1)), 2: encoded(scene(1).resize((80, 64)).convert("RGB"), "JPEG", quality=70),
             3: encoded(scene(2))}
    records = []
    for record_id, data in files.items():
        (tmp_path / f"{record_id}.img").write_bytes(data)
        record = _record(record_id, "word " * record_id)
        record.image_file = tmp_path / f"{record_id}.img"
        records.append(record)
    report = AnnotationReport("r")
    hashes = dedup.hash_images(records, report, max_pixels=10**6)
    kept = dedup.drop_near_duplicates(records, hashes, report, dedup.DEFAULT_MAX_DISTANCE)
    assert [r.id for r in kept] == [2, 3]  # 2 has the longer article
    assert report.dropped[0]["id"] == 1 and report.dropped[0]["duplicate_of"] == 2
    assert dedup.drop_near_duplicates(records, hashes, AnnotationReport("r"), -1) == records


def test_the_schema_validates_answers_and_bounds_strings_for_local_models():
    valid = {"tag": ["a", "b", "c"], "location": "Athens, Greece", "modality": ["Optical"], "satellite": None,
             "sensor": None, "resolution": "Very High", "captions": ["The image showcases: X."] * 5}
    answer = schema.parse_answer(json.dumps(valid), schema.RSImage)
    assert schema.gaia_fields(answer)["modalities"] == ["Optical"] and schema.gaia_fields(answer)["resolution"] == "Very High"
    for bad, where in [({**valid, "tag": ["a"]}, "tag"), ({**valid, "resolution": "Ultra"}, "resolution"),
                       ({**valid, "captions": ["No opening."] * 5}, "captions"), ({**valid, "extra": 1}, "extra")]:
        with pytest.raises(schema.SchemaViolation, match=where):
            schema.parse_answer(json.dumps(bad), schema.RSImage)
    with pytest.raises(schema.SchemaViolation, match="is_remote_sensing"):
        schema.parse_answer(json.dumps(valid), schema.RSImageFiltered)
    with pytest.raises(schema.SchemaViolation):
        schema.parse_answer("not json", schema.RSImage)
    bounded = schema.json_schema(schema.RSImageFiltered, max_chars=30)
    assert bounded["required"] == list(bounded["properties"]) and bounded["additionalProperties"] is False
    assert bounded["properties"]["location"]["anyOf"][0]["maxLength"] == 30
    assert bounded["properties"]["captions"]["items"]["pattern"] == r"^The\ image\ showcases: .{1,9}$"
    assert "$defs" not in json.dumps(bounded) and "maxLength" not in json.dumps(schema.json_schema(schema.RSImage))


def test_gazetteer_finds_a_place_or_its_broader_parts(tmp_path):
    path = tmp_path / "places.csv"
    path.write_text('name,lat,lon\n"Athens, Greece",37.98,23.73\nGreece,39,22\nΘεσσαλία,39.6,22.4\n')
    gazetteer = geocode.Gazetteer(path)
    assert gazetteer.locate("ATHENS,greece") == (37.98, 23.73)
    assert gazetteer.locate("Acropolis, Athens, Greece") == (37.98, 23.73)
    assert gazetteer.locate("Meteora, Greece") == (39.0, 22.0)
    assert gazetteer.locate("θεσσαλία") == (39.6, 22.4) and gazetteer.locate("Mars") is None
    (tmp_path / "bad.csv").write_text("name,lat,lon\nNowhere,100,0\n")
    with pytest.raises(EarthvlError, match="entry 1"):
        geocode.Gazetteer(tmp_path / "bad.csv")


class _Nominatim(BaseHTTPRequestHandler):
    """Nominatim's search protocol: /search?q=...&format=json -> a list of places with string lat/lon."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        query = parse_qs(urlsplit(self.path).query)
        self.server.queries.append((urlsplit(self.path).path, query["q"][0], query["format"][0], self.headers["User-Agent"]))
        places = {"Tarragona, Spain": [{"lat": "41.1189", "lon": "1.2445", "display_name": "Tarragona"}]}
        if query["q"][0] == "Broken":
            self.send_response(500)
            self.end_headers()
            return
        body = json.dumps(places.get(query["q"][0], [])).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_online_geocoding_speaks_nominatim_through_geopy_and_caches(tmp_path):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Nominatim)
    httpd.queries = []
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        online = geocode.OnlineGeocoder(domain=f"127.0.0.1:{httpd.server_address[1]}", scheme="http",
                                        user_agent="earthvl-test", min_delay=0.0)
        records = [_record(i, "t") for i in range(4)]
        for record, place in zip(records, ["Tarragona, Spain", "Atlantis", "Broken", None]):
            record.fields = {"location": place}
        report = AnnotationReport("r")
        geocode.geocode(records, online, report, tmp_path)
        assert (records[0].lat, records[0].lon) == (41.1189, 1.2445)
        assert [r.lat for r in records[1:]] == [None, None, None]
        assert [f["id"] for f in report.flagged] == [1, 2, 3] and "failed" in report.flagged[1]["reason"]
        assert httpd.queries[0] == ("/search", "Tarragona, Spain", "json", "earthvl-test")
        geocode.geocode(records[:2], online, AnnotationReport("r"), tmp_path)
        assert len(httpd.queries) == 3  # the second run asked nothing: known and unknown places are cached
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_without_a_geocoder_coordinates_stay_null_and_the_report_says_so(tmp_path):
    record = _record(1, "t")
    record.fields = {"location": "Athens, Greece"}
    report = AnnotationReport("r")
    geocode.geocode([record], None, report, tmp_path)
    assert record.lat is None and report.steps["geocode"] == {"no_geocoder": 1}
    assert "no geocoder" in report.notes["geocode_note"]


def test_split_writes_gaia_files_with_upstream_fields(tmp_path):
    records = []
    for i in range(20):
        record = _record(i, "t")
        record.lat, record.lon, record.date = (10.0 + i, 20.0, "2024-01-05") if i % 3 else (None, None, None)
        record.fields = {"captions": ["The image showcases: A."] * 5, "location": "x", "tag": ["a", "b", "c"],
                         "modalities": None, "satellite": None, "sensor": None, "resolution": "Low"}
        records.append(record)
    report = AnnotationReport("r")
    sizes = write_splits(records, tmp_path, report)
    assert sizes == {"train": 14, "validation": 2, "test": 4}
    rows = json.loads((tmp_path / "train_data.json").read_text())
    assert list(rows[0]) == list(layout.FIELDS)
    assert report.steps["split"]["without_coordinates"] == 7


def test_the_images_folder_is_never_written_or_emptied_through_a_link_nor_a_subfolder_deleted(tmp_path):
    from earthvl.builders.gaia.annotate.write import remove_stray_images, write_images

    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "9.png").write_bytes(b"not ours")
    out = tmp_path / "out"
    out.mkdir()
    (out / "images").symlink_to(tmp_path / "elsewhere")
    record = _record(1, "t", str(tmp_path / "1.png"))
    record.image_file = tmp_path / "1.png"
    record.image_file.write_bytes(encoded(scene(1)))
    with pytest.raises(EarthvlError, match="images is not a folder of its own"):
        write_images([record], out)
    with pytest.raises(EarthvlError, match="images is not a folder of its own"):
        remove_stray_images(out, set())
    assert [p.name for p in (tmp_path / "elsewhere").iterdir()] == ["9.png"]
    (out / "images").unlink()
    (out / "images" / "mine").mkdir(parents=True)
    with pytest.raises(EarthvlError, match="mine is a folder, which annotate gaia does not write"):
        remove_stray_images(out, write_images([record], out))
    assert (out / "images" / "mine").is_dir() and (out / "images" / "1.png").read_bytes() == encoded(scene(1))


def test_images_go_to_the_model_as_they_are_or_downscaled(tmp_path):
    import base64
    import io

    from PIL import Image

    from earthvl.builders.gaia.annotate.extract import image_for_model
    from earthvl.images import BadImage

    small, large, broken = tmp_path / "small.png", tmp_path / "large.png", tmp_path / "broken.png"
    small.write_bytes(encoded(scene(1)))
    large.write_bytes(encoded(scene(2, (300, 200))))
    broken.write_bytes(b"\x89PNG not really")
    assert image_for_model(small, 128, 10**6) == "data:image/png;base64," + base64.b64encode(small.read_bytes()).decode()
    url = image_for_model(large, 150, 10**6)
    assert url.startswith("data:image/jpeg;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size == (150, 100)
    with pytest.raises(BadImage, match="over the limit"):
        image_for_model(large, 150, 1000)
    with pytest.raises(BadImage):
        image_for_model(broken, 150, 10**6)


def test_prompts_are_data_with_provenance_and_a_version(tmp_path):
    from earthvl.builders.gaia.annotate.prompts import load_prompt

    for name in ("summary", "annotate"):
        prompt = load_prompt(name)
        assert prompt.version and "Orion-AI-Lab/GAIA" in prompt.provenance and "{article}" in prompt.user
    assert "The image showcases:" in load_prompt("annotate").system
    (tmp_path / "annotate.json").write_text(json.dumps({**load_prompt("annotate").__dict__, "user": "{place}"}))
    with pytest.raises(EarthvlError, match="may use only"):
        load_prompt("annotate", tmp_path)
    with pytest.raises(EarthvlError, match="summary.json cannot be read"):
        load_prompt("summary", tmp_path)


def test_records_read_parquet_and_datasets_folders(tmp_path):
    from datasets import Dataset

    rows = {"id": [7, 8], "image_src": ["http://x.org/7.png", "http://x.org/8.png"], "article": ["a", None],
            "lat": [1.5, None], "lon": [2.5, None]}
    Dataset.from_dict(rows).to_parquet(tmp_path / "r.parquet")
    Dataset.from_dict(rows).save_to_disk(tmp_path / "saved")
    for source in (tmp_path / "r.parquet", tmp_path / "saved"):
        records, refused, ignored = load_records(source)
        assert [(r.id, r.article, r.lat, r.lon) for r in records] == [(7, "a", 1.5, 2.5), (8, "", None, None)]
        assert refused == ignored == []
    with pytest.raises(EarthvlError, match="not a `datasets` folder"):
        load_records(tmp_path)
