"""A scraped-records world for `earthvl annotate gaia`: images served by `fake_http.FakeServer`, a records file with
planted duplicates and failures (what the report must say about each is in `PLANTED`), a gazetteer, and
`ScriptedChatServer`, an OpenAI-compatible endpoint that answers the pipeline's structured requests from what they
say, misbehaves for marked articles, counts requests and can hold them (to kill a run mid-way)."""

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

PLACES = {
    "Athens, Greece": (37.98, 23.73),
    "Thessaly, Greece": (39.6, 22.4),
    "Lake Ladoga, Russia": (60.8, 31.5),
    "Nile Delta, Egypt": (30.9, 31.0),
    "Tarragona, Spain": (41.12, 1.25),
    "Mississippi River, United States": (38.2, -90.1),
    "Okavango Delta, Botswana": (-19.3, 22.9),
    "Θεσσαλία, Ελλάδα": (39.6, 22.4),
}
INVALID_ONCE = "MARKER-INVALID-ONCE"
INVALID_ALWAYS = "MARKER-INVALID-ALWAYS"
CHART = "MARKER-CHART"
NOT_REMOTE_SENSING = "MARKER-NOT-RS"
WORDS = "river flood plain delta sediment smoke plume cloud coast field forest city lake ice snow".split()


def scene(seed, size=(96, 80)):
    """A distinct picture: smooth random blobs, upscaled (perceptual hashes of two seeds differ in ~half the bits)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def encoded(image, fmt="PNG", **options):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def article(place, words=40, extra=""):
    rng = np.random.default_rng(len(place) + words)
    filler = " ".join(rng.choice(WORDS, size=words))
    return f"A Sentinel-2 view near {place}. {filler}. {extra}".strip()


# id -> (what the report says: step and duplicate_of, or None when the record is kept)
PLANTED = {
    1: None, 2: ("dedup", 8), 3: None, 4: None, 5: None, 6: None,
    7: ("dedup", 1),    # the same image URL as 1, spelled differently, shorter article
    8: None,            # the same image URL as 2 with a longer article: 8 stays, 2 goes
    9: ("dedup", 3),    # byte-identical to 3 under another URL
    10: ("dedup", 4),   # 4 re-encoded as JPEG and rescaled
    11: None,           # HTML-only article
    12: None,           # 20,000 words: summarised
    13: None,           # unicode
    14: ("images", None),  # 404
    15: ("images", None),  # local file that does not exist
    16: None,           # local image
    17: ("read", None),    # no image_src
    18: None,           # empty article: flagged
    19: None,           # first answer violates the schema, the retry is valid
    20: ("annotate", None),  # every answer violates the schema
}


def build_world(root, server):
    """Write the images (served by `server`), `records.jsonl` and `gazetteer.csv` into `root`."""
    def serve(name, data, content_type="image/png"):
        return server.add(f"/img/{name}", body=data, content_type=content_type)

    pictures = {seed: scene(seed) for seed in range(1, 14)}
    urls = {seed: serve(f"{seed}.png", encoded(pictures[seed])) for seed in pictures}
    local = root / "local"
    local.mkdir()
    (local / "16.png").write_bytes(encoded(scene(16)))
    near = pictures[4].resize((86, 72), Image.Resampling.LANCZOS).convert("RGB")
    host = f"127.0.0.1:{server.port}"
    html = ("<html><head><title>Nile</title></head><body><nav>Home | News | Contact | Login</nav><article>"
            "<h1>Nile Delta farmland</h1><p>" + article("Nile Delta, Egypt", 30) + "</p><p>"
            + article("Nile Delta, Egypt", 25) + "</p></article><footer>Copyright cookies privacy</footer></body></html>")
    rows = [
        {"id": 1, "image_src": urls[1], "article": article("Athens, Greece", 60), "image_alt": "Athens", "date": "2023-07-02"},
        {"id": 2, "image_src": urls[2], "article": article("Thessaly, Greece", 30), "image_alt": "Flood"},
        {"id": 3, "image_src": urls[3], "article": article("Lake Ladoga, Russia", 50), "date": "2022-01-15"},
        {"id": 4, "image_src": urls[4], "article": article("Tarragona, Spain", 55), "credits": "ESA"},
        {"id": 5, "image_src": urls[5], "article": article("Mississippi River, United States", 45), "lat": 38.5, "lon": -90.2},
        {"id": 6, "image_src": urls[6], "article": article("Okavango Delta, Botswana", 40), "date": "2021-12-01"},
        {"id": 7, "image_src": f"HTTP://{host}/img/1.png?utm_source=feed#top", "article": article("Athens, Greece", 25)},
        {"id": 8, "image_src": urls[2] + "?utm_medium=social", "article": article("Thessaly, Greece", 90)},
        {"id": 9, "image_src": serve("copy-of-3.png", encoded(pictures[3])), "article": article("Lake Ladoga, Russia", 20)},
        {"id": 10, "image_src": serve("4.jpg", encoded(near, "JPEG", quality=80), "image/jpeg"),
         "article": article("Tarragona, Spain", 25)},
        {"id": 11, "image_src": urls[11], "article": html},
        {"id": 12, "image_src": urls[12], "article": article("Athens, Greece", 20_000)},
        {"id": 13, "image_src": urls[13], "article": "Η πλημμύρα στη Θεσσαλία, Ελλάδα, όπως τη βλέπει το Sentinel-2: "
         + "νερό, λάσπη και χωράφια κάτω από τα σύννεφα. " * 4, "image_alt": "Θεσσαλία — 洪水"},
        {"id": 14, "image_src": server.url("/img/missing.png"), "article": article("Athens, Greece")},
        {"id": 15, "image_src": "local/absent.png", "article": article("Athens, Greece")},
        {"id": 16, "image_src": "local/16.png", "article": article("Tarragona, Spain", 35)},
        {"id": 17, "image_src": None, "article": article("Athens, Greece")},
        {"id": 18, "image_src": urls[8], "article": ""},
        {"id": 19, "image_src": urls[9], "article": article("Thessaly, Greece", 40, INVALID_ONCE)},
        {"id": 20, "image_src": urls[10], "article": article("Okavango Delta, Botswana", 40, INVALID_ALWAYS)},
    ]
    records = root / "records.jsonl"
    records.write_text("\n".join(json.dumps(row, ensure_ascii=False) for row in rows) + "\n", encoding="utf-8")
    gazetteer = root / "gazetteer.csv"
    gazetteer.write_text("name,lat,lon\n" + "".join(f'"{n}",{a},{o}\n' for n, (a, o) in PLACES.items()), encoding="utf-8")
    return records, gazetteer


def _user_text(request):
    parts = []
    for message in request["messages"]:
        content = message["content"]
        if message["role"] != "user":
            continue
        parts += [content] if isinstance(content, str) else [p.get("text", "") for p in content if p["type"] == "text"]
    return "\n".join(parts)


def scripted_answer(request, seen):
    """What a well-behaved model would answer to the pipeline's request (`seen`: earlier requests per text)."""
    text = _user_text(request)
    schema = request["response_format"]["json_schema"]
    if INVALID_ALWAYS in text or (INVALID_ONCE in text and seen == 0):
        return '{"captions": ["not five", "and no opening"]}'
    if schema["name"] == "Summary":
        return json.dumps({"summary": f"Summary: {text[:200]}"})
    place = next((name for name in PLACES if name in text), None)
    answer = {
        "tag": ["floods", "rivers", "land"], "location": place, "modality": ["Optical"],
        "satellite": ["Sentinel-2"], "sensor": ["MultiSpectral Instrument (MSI)"], "resolution": "High",
        "captions": [f"The image showcases: Scene {i} near {place or 'an unnamed place'}." for i in range(5)],
    }
    if "is_chart" in schema["schema"]["properties"]:
        answer |= {"is_remote_sensing": NOT_REMOTE_SENSING not in text, "is_chart": CHART in text}
    return json.dumps(answer, ensure_ascii=False)


class ScriptedChatServer:
    """An OpenAI-compatible `/v1/chat/completions` on loopback answering with `scripted_answer`; `requests` counts
    what it received, `hold_after(n)` keeps every request after the n-th waiting until `release()`."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0
        self.by_schema = {}
        self.per_text = {}
        self.held = threading.Event()
        self.held.set()
        self.hold_from = None
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _ChatHandler)
        self.httpd.chat = self
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True).start()

    def hold_after(self, count):
        self.hold_from = count
        self.held.clear()

    def release(self):
        self.held.set()

    def close(self):
        self.release()
        self.httpd.shutdown()
        self.httpd.server_close()


class _ChatHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        chat = self.server.chat
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = _user_text(request)
        name = request["response_format"]["json_schema"]["name"]
        with chat.lock:
            chat.requests += 1
            nth = chat.requests
            chat.by_schema[name] = chat.by_schema.get(name, 0) + 1
            seen = chat.per_text.get(text, 0)
            chat.per_text[text] = seen + 1
        if chat.hold_from is not None and nth > chat.hold_from:
            chat.held.wait(60)
        answer = scripted_answer(request, seen)
        body = json.dumps({
            "id": f"chatcmpl-{nth}", "object": "chat.completion", "created": 0, "model": request["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(text) // 4, "completion_tokens": len(answer) // 4,
                      "total_tokens": len(text) // 4 + len(answer) // 4},
        }).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

