"""Hostile and odd uploads against the real server over real HTTP (uvicorn in its own process).

Each gets its documented status and error code; none gets a 500; the server stays healthy; and
byte-level abuse (huge, chunked, slow, stalled, aborted bodies) is driven over raw sockets so the
client cannot tidy it up first.
"""

from __future__ import annotations

import io
import socket
import time
import zlib

import httpx
import numpy as np
import pytest
from conftest import EXAMPLES, app_process
from PIL import Image

LIMIT = 2_000_000  # FER_MAX_UPLOAD_BYTES for this server
BODY_TIMEOUT = 2  # FER_BODY_TIMEOUT: seconds a body may stall


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with app_process(
        tmp_path_factory.mktemp("hostile"),
        FER_UI="false",
        FER_MAX_UPLOAD_BYTES=str(LIMIT),
        FER_BODY_TIMEOUT=str(BODY_TIMEOUT),
    ) as url:
        yield url


def test_uploads_are_never_written_to_disk(shipped_service, monkeypatch):
    # Starlette spools multipart files over 1 MiB into a SpooledTemporaryFile, which rolls over to
    # an (already unlinked, so invisible) temporary file on disk. Spy on the real class: record
    # whether any upload rolled over.
    import starlette.formparsers
    from fastapi.testclient import TestClient

    from fer.config import Settings
    from fer.serving.app import create_app

    rolled = []

    class Spy(starlette.formparsers.SpooledTemporaryFile):
        def rollover(self):
            rolled.append(True)
            super().rollover()

    monkeypatch.setattr(starlette.formparsers, "SpooledTemporaryFile", Spy)
    noise = np.random.default_rng(0).integers(0, 256, (800, 800, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), "PNG")
    assert 1_100_000 < len(data) < LIMIT  # over Starlette's 1 MiB threshold
    with TestClient(create_app(Settings(ui=False, max_upload_bytes=LIMIT), service=shipped_service)) as c:
        r = c.post("/predict", files={"file": ("noise.png", data, "image/png")})
    assert r.status_code == 422 and r.json()["error"] == "no_face"  # decoded, no face
    assert rolled == []


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


ASTRONAUT = Image.open(EXAMPLES / "astronaut.jpg").convert("RGB")
FACE_BOX = (158, 32, 289, 197)  # around the astronaut's face


def many_faces() -> bytes:
    face = np.asarray(ASTRONAUT.crop(FACE_BOX))
    return encode(Image.fromarray(np.tile(face, (7, 8, 1))), "JPEG", quality=85)  # 56 faces


def animated_gif() -> bytes:
    frames = [ASTRONAUT.quantize(64), Image.new("RGB", ASTRONAUT.size, (0, 0, 0)).quantize(2)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)


def exif_rotated() -> bytes:
    # A phone stores the sensor's pixels sideways plus an Orientation tag (6: rotate 90 CW to view).
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(ASTRONAUT.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif.tobytes())


def rgba_transparent() -> bytes:
    im = ASTRONAUT.convert("RGBA")
    alpha = np.full(im.size[::-1], 255, np.uint8)
    alpha[:, :60] = 0  # a transparent strip, as a cut-out sticker has
    im.putalpha(Image.fromarray(alpha))
    return encode(im, "PNG")


def bomb_png() -> bytes:
    # A real 1x1 PNG whose header is rewritten to claim 30000x30000 (900 Mpx): refused from the
    # header, before any decoding allocates.
    data = bytearray(encode(Image.new("L", (1, 1)), "PNG"))
    data[16:24] = (30000).to_bytes(4, "big") * 2
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # IHDR's checksum, so it is a valid PNG
    return bytes(data)


JPEG = (EXAMPLES / "astronaut.jpg").read_bytes()
PNG = encode(ASTRONAUT, "PNG")

# name: (filename, bytes, status, error code or None for a success)
CORPUS = {
    "empty file": ("a.jpg", b"", 400, "empty_upload"),
    "text with .jpg": ("notes.jpg", b"hello, this is not a picture\n" * 20, 415, "unsupported_media_type"),
    "pdf with .png": (
        "scan.png",
        b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n",
        415,
        "unsupported_media_type",
    ),
    "truncated jpeg": ("cut.jpg", JPEG[: len(JPEG) // 2], 400, "invalid_image"),
    "truncated png": ("cut.png", PNG[: len(PNG) // 2], 400, "invalid_image"),
    "decompression bomb": ("bomb.png", bomb_png(), 413, "image_too_large"),
    "animated gif": ("anim.gif", animated_gif(), 200, None),
    "cmyk jpeg": ("cmyk.jpg", encode(ASTRONAUT.convert("CMYK"), "JPEG"), 200, None),
    "16-bit png": (
        "deep.png",
        encode(Image.fromarray(np.asarray(ASTRONAUT.convert("L")).astype(np.uint16) * 257), "PNG"),
        200,
        None,
    ),
    "palette png": ("pal.png", encode(ASTRONAUT.quantize(128), "PNG"), 200, None),
    "rgba transparent png": ("sticker.png", rgba_transparent(), 200, None),
    "exif-rotated phone photo": ("phone.jpg", exif_rotated(), 200, None),
    "grayscale 48x48 crop": (
        "crop.png",
        encode(ASTRONAUT.crop(FACE_BOX).convert("L").resize((48, 48)), "PNG"),
        200,
        None,
    ),
    "56 faces": ("crowd.jpg", many_faces(), 200, None),
    "no face": ("sky.png", encode(Image.new("RGB", (320, 240), (90, 140, 200)), "PNG"), 422, "no_face"),
    "wrong extension, real jpeg": ("photo.png", JPEG, 200, None),
}


@pytest.mark.parametrize("name", CORPUS)
def test_corpus_over_http(server, name):
    filename, data, status, code = CORPUS[name]
    r = httpx.post(f"{server}/predict", files={"file": (filename, data, "application/octet-stream")}, timeout=60)
    assert r.status_code == status, f"{name}: {r.status_code} {r.text[:300]}"
    body = r.json()
    if code:
        assert body["error"] == code and len(body["detail"]) > 10, body
    else:
        assert body["emotion"] in {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}
        assert 0 < body["confidence"] <= 1
    if name == "56 faces":
        assert 50 <= body["face_count"] <= 64 and len(body["faces"]) == body["face_count"]
    if name == "exif-rotated phone photo":
        assert (body["image"]["width"], body["image"]["height"]) == (512, 512) and body["face_count"] == 1
    if name == "grayscale 48x48 crop":
        assert body["whole_image"] is True
    if name == "16-bit png":  # scaled, not clipped to white: the same face and mood as the 8-bit photo
        assert body["face_count"] == 1 and body["emotion"] == "happy"


def test_wrong_field_name_and_wrong_body_kinds(server):
    r = httpx.post(f"{server}/predict", files={"image": ("a.jpg", JPEG, "image/jpeg")})
    assert r.status_code == 400 and r.json()["error"] == "missing_file" and "'file'" in r.json()["detail"]
    r = httpx.post(f"{server}/predict", json={"file": "aGVsbG8="})
    assert r.status_code == 400 and r.json()["error"] == "missing_file"
    r = httpx.post(f"{server}/predict", content=b"\xff\xd8 raw bytes", headers={"content-type": "image/jpeg"})
    assert r.status_code == 400
    r = httpx.get(f"{server}/predict")
    assert r.status_code == 405


def raw_request(
    url: str, head: str, chunks=(), delay: float = 0.0, close_early: bool = False, timeout: float = 30
) -> bytes:
    """Send a hand-written request over a socket; returns the raw response ('' if none)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(head.encode())
        for chunk in chunks:
            if delay:
                time.sleep(delay)
            try:
                s.sendall(chunk)
            except OSError:
                break  # the server answered and closed early: read its answer
        if close_early:
            return b""
        out = b""
        try:
            while data := s.recv(65536):
                out += data
        except (TimeoutError, ConnectionResetError):
            pass
        return out


def multipart(data: bytes, boundary: str = "fer-test-boundary") -> tuple[bytes, bytes, str]:
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head, data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_declared_oversize_body_is_refused_before_it_is_read(server):
    # The client declares 50 MB but sends only a few bytes: the 413 comes back at once, so the
    # server decided from the header without waiting for (or buffering) the body.
    start = time.perf_counter()
    resp = raw_request(
        server,
        f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: {50_000_000}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n\r\n",
        [b"--b\r\n"],
        timeout=10,
    )
    assert resp.startswith(b"HTTP/1.1 413") and b"upload_too_large" in resp
    assert time.perf_counter() - start < BODY_TIMEOUT  # not a timeout in disguise


def test_chunked_body_over_the_limit_is_cut_off(server):
    head, tail, ctype = multipart(b"\xff" * (LIMIT + 200_000))
    body = head + tail
    pieces = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    chunks = [f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces] + [b"0\r\n\r\n"]
    resp = raw_request(
        server,
        f"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: {ctype}\r\n\r\n",
        chunks,
    )
    assert resp.startswith(b"HTTP/1.1 413") and b"upload_too_large" in resp


def test_slow_upload_within_the_timeout_succeeds(server):
    head, tail, ctype = multipart(JPEG)
    body = head + tail
    pieces = [body[i : i + len(body) // 5 + 1] for i in range(0, len(body), len(body) // 5 + 1)]
    resp = raw_request(
        server,
        f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        f"Content-Type: {ctype}\r\nConnection: close\r\n\r\n",
        pieces,
        delay=0.4,
    )
    assert resp.startswith(b"HTTP/1.1 200") and b'"emotion"' in resp


def test_stalled_upload_times_out_with_408(server):
    head, tail, ctype = multipart(JPEG)
    body = head + tail
    start = time.perf_counter()
    resp = raw_request(
        server,
        f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nContent-Type: {ctype}\r\n\r\n",
        [body[: len(body) // 2]],
        timeout=BODY_TIMEOUT + 20,
    )
    assert resp.startswith(b"HTTP/1.1 408") and b"body_timeout" in resp
    assert BODY_TIMEOUT <= time.perf_counter() - start < BODY_TIMEOUT + 10


def test_aborted_uploads_leave_the_server_healthy(server):
    head, tail, ctype = multipart(JPEG)
    body = head + tail
    for _ in range(5):
        raw_request(
            server,
            f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nContent-Type: {ctype}\r\n\r\n",
            [body[: len(body) // 3]],
            close_early=True,
        )
    assert httpx.post(f"{server}/predict", files={"file": ("a.jpg", JPEG, "image/jpeg")}).status_code == 200


def test_server_never_answered_500_and_stays_healthy(server):
    # Runs last in this module: after the whole corpus and the socket abuse.
    assert httpx.get(f"{server}/health").status_code == 200
    assert httpx.get(f"{server}/ready").status_code == 200
    metrics = httpx.get(f"{server}/metrics").text
    assert 'status="5' not in metrics.replace('status="503"', ""), "a request was answered 5xx"
    assert 'status="503"' not in metrics
    assert httpx.post(f"{server}/predict", files={"file": ("a.jpg", JPEG, "image/jpeg")}).json()["emotion"] == "happy"


def test_stall_timer_stops_once_the_body_is_in(tmp_path):
    # Over real HTTP (uvicorn): a handler slower than FER_BODY_TIMEOUT must not be cut off. The
    # timer is 1 ms and a forced model reload (an empty body, then ~50 ms of loading) outlasts it
    # many times over; after the body a receive() only waits for a disconnect and has no timer.
    token = "test-only-admin-token-stall-check"
    with app_process(tmp_path, FER_UI="false", FER_BODY_TIMEOUT="0.001", FER_ADMIN_TOKEN=token) as url:
        r = httpx.post(f"{url}/admin/reload?force=true", headers={"authorization": f"Bearer {token}"}, timeout=60)
        assert r.status_code == 200 and r.json()["status"] == "reloaded", r.text
