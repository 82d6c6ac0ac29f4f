"""Photos from the street: a patrol report's photo and a resolve's "after" photo (README "Photos").

`clean_photo(data)` checks a file is a JPEG, PNG or WebP image within the size limit and removes the metadata a
case does not need (EXIF with its GPS position and camera serial, XMP, IPTC, comments, text chunks), keeping
what a viewer needs to draw it (JFIF, colour profile, Adobe marker). It works on the container's own structure
(segments, chunks) and never re-encodes: the picture is the one taken.

A stored photo has an id and a sidecar record (`PhotoMeta`): who uploaded it, for which case (an after photo)
or which patrol report (a report photo, linked to its event once sent). Its URL, the one written into
`photo_url`, is always this server's `/photos/<id>.<ext>`: the file is served through the web server, which
applies the case's access rules (pipeline.web.auth) to it, whichever store holds the bytes.

Stores: `LocalPhotoStore` (a directory, `CITYOPS_PHOTO_DIR`, default var/photos) and `S3PhotoStore` (any
S3-compatible object store: `CITYOPS_PHOTO_S3_ENDPOINT`, `CITYOPS_PHOTO_S3_BUCKET`, `CITYOPS_PHOTO_S3_REGION`,
credentials in `CITYOPS_PHOTO_S3_ACCESS_KEY` / `CITYOPS_PHOTO_S3_SECRET_KEY`), signed with AWS Signature V4,
path-style URLs.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import struct
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson

from pipeline.config import environ

MAX_PHOTO_BYTES = 8 * 1024 * 1024
PHOTO_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
CONTENT_TYPES = {v: k for k, v in EXTENSIONS.items()}


class PhotoError(ValueError):
    """A file that is not an acceptable photo; the message says why (the API's 400 reason)."""


@dataclass(frozen=True)
class CleanPhoto:
    content_type: str
    data: bytes
    removed: tuple[str, ...]      # what was taken out, e.g. ("EXIF", "XMP")


# -- metadata stripping -----------------------------------------------------------------------------------

# JPEG markers kept: APP0 (JFIF), APP2 (ICC colour profile), APP14 (Adobe colour transform). Dropped: APP1
# (EXIF with GPS, or XMP), APP3-APP13 and APP15 (maker data, IPTC/Photoshop) and COM (comments).
_JPEG_KEEP_APP = {0xE0, 0xE2, 0xEE}
_PNG_DROP = {b"eXIf", b"tEXt", b"zTXt", b"iTXt", b"tIME"}
_WEBP_DROP = {b"EXIF", b"XMP "}


def sniff(data: bytes) -> str | None:
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def clean_photo(data: bytes, max_bytes: int = MAX_PHOTO_BYTES) -> CleanPhoto:
    """The photo without location and other metadata; PhotoError when it is not a JPEG, PNG or WebP image of
    at most `max_bytes`, or its structure is broken."""
    if not data:
        raise PhotoError("photo: the file is empty")
    if len(data) > max_bytes:
        raise PhotoError(f"photo: {len(data):,} bytes is over the limit of {max_bytes:,}")
    kind = sniff(data)
    if kind == "image/jpeg":
        return _clean_jpeg(data)
    if kind == "image/png":
        return _clean_png(data)
    if kind == "image/webp":
        return _clean_webp(data)
    raise PhotoError("photo: not a JPEG, PNG or WebP image")


def _clean_jpeg(data: bytes) -> CleanPhoto:
    out = bytearray(b"\xff\xd8")
    removed: list[str] = []
    i = 2
    n = len(data)
    while True:
        if i + 4 > n or data[i] != 0xFF:
            raise PhotoError("photo: a broken JPEG (a segment header is missing)")
        marker = data[i + 1]
        if marker == 0xFF:               # fill byte
            i += 1
            continue
        if marker == 0xD9:
            raise PhotoError("photo: a JPEG without image data")
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        end = i + 2 + length
        if length < 2 or end > n:
            raise PhotoError("photo: a broken JPEG (a segment runs past the end)")
        segment = data[i:end]
        if marker == 0xDA:               # start of scan: the image data, kept as it is to the end
            out += data[i:]
            break
        if 0xE0 <= marker <= 0xEF and marker not in _JPEG_KEEP_APP or marker == 0xFE:
            payload = segment[4:16]
            removed.append("EXIF" if payload.startswith(b"Exif\x00") else "XMP" if payload.startswith(b"http")
                           else "comment" if marker == 0xFE else f"APP{marker - 0xE0}")
        else:
            out += segment
        i = end
    return CleanPhoto("image/jpeg", bytes(out), tuple(dict.fromkeys(removed)))


def _clean_png(data: bytes) -> CleanPhoto:
    out = bytearray(data[:8])
    removed: list[str] = []
    i, n = 8, len(data)
    seen_end = False
    while i < n:
        if i + 12 > n:
            raise PhotoError("photo: a broken PNG (a chunk is cut short)")
        length = struct.unpack(">I", data[i:i + 4])[0]
        ctype = data[i + 4:i + 8]
        end = i + 12 + length
        if end > n:
            raise PhotoError("photo: a broken PNG (a chunk runs past the end)")
        if ctype in _PNG_DROP:
            removed.append(ctype.decode("latin-1"))
        else:
            out += data[i:end]
        i = end
        if ctype == b"IEND":
            seen_end = True
            break
    if not seen_end:
        raise PhotoError("photo: a broken PNG (no IEND chunk)")
    return CleanPhoto("image/png", bytes(out), tuple(dict.fromkeys(removed)))


def _clean_webp(data: bytes) -> CleanPhoto:
    size = struct.unpack("<I", data[4:8])[0]
    if size + 8 > len(data) or size < 4:
        raise PhotoError("photo: a broken WebP (its RIFF size is wrong)")
    body = bytearray()
    removed: list[str] = []
    i, end = 12, 8 + size
    while i < end:
        if i + 8 > end:
            raise PhotoError("photo: a broken WebP (a chunk is cut short)")
        ctype = data[i:i + 4]
        length = struct.unpack("<I", data[i + 4:i + 8])[0]
        stop = i + 8 + length + (length & 1)
        if stop > end + (length & 1):
            raise PhotoError("photo: a broken WebP (a chunk runs past the end)")
        chunk = bytearray(data[i:min(stop, end)])
        if ctype in _WEBP_DROP:
            removed.append(ctype.decode("latin-1").strip())
        else:
            if ctype == b"VP8X" and len(chunk) >= 9:
                chunk[8] &= ~0x0C & 0xFF          # the EXIF (0x08) and XMP (0x04) flags: none any more
            body += chunk
        i = stop
    return CleanPhoto("image/webp", b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + bytes(body),
                      tuple(dict.fromkeys(removed)))


# -- the record of a stored photo ------------------------------------------------------------------------

@dataclass
class PhotoMeta:
    photo_id: str
    ext: str
    kind: str                      # after | report
    uploader: str                  # the web user's name (a team member or patrol; never a caller)
    team: str
    case_id: str = ""              # an after photo's case
    event_id: str = ""             # a report photo's event (patrol:<report id>), once the report is sent
    size: int = 0                  # bytes stored
    removed: list[str] = field(default_factory=list)
    at: str = ""

    @property
    def url(self) -> str:
        return f"/photos/{self.photo_id}.{self.ext}"

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> PhotoMeta:
        d = orjson.loads(raw)
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def photo_id_for(user: str, upload_id: str) -> str:
    """A stable id for one upload of one user: a retried upload (same `upload_id`) stores the same photo."""
    return hashlib.sha256(f"{user}\x00{upload_id}".encode()).hexdigest()[:24]


def parse_photo_url(url: str) -> tuple[str, str] | None:
    """(photo id, ext) of one of this server's photo URLs, else None."""
    m = re.fullmatch(r"/photos/([A-Za-z0-9_-]{8,64})\.(jpg|png|webp)", url or "")
    return (m.group(1), m.group(2)) if m else None


# -- stores ---------------------------------------------------------------------------------------------

class PhotoStore(Protocol):
    def put(self, name: str, data: bytes, content_type: str) -> None: ...

    def get(self, name: str) -> bytes | None: ...


class LocalPhotoStore:
    """Files in a directory (written to a temporary name, then renamed: a reader never sees half a file)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, name: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or ".." in name:
            raise PhotoError(f"photo: bad name {name!r}")
        return self.root / name[:2] / name

    def put(self, name: str, data: bytes, content_type: str) -> None:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def get(self, name: str) -> bytes | None:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            return None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


class S3PhotoStore:
    """An S3-compatible bucket (AWS, MinIO, OSS, COS...), path-style, AWS Signature Version 4."""

    def __init__(self, endpoint: str, bucket: str, access_key: str, secret_key: str, region: str = "us-east-1",
                 prefix: str = "photos/", timeout_s: float = 10.0) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.bucket = bucket
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.prefix = prefix
        self.timeout_s = timeout_s

    def signed_headers(self, method: str, path: str, body: bytes, now: datetime,
                       extra: dict[str, str] | None = None) -> dict[str, str]:
        """The headers of a signed request (Authorization included) for `path` (already URL-encoded)."""
        host = urllib.parse.urlsplit(self.endpoint).netloc
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        day = amz_date[:8]
        payload = _sha256(body)
        headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": amz_date,
                   **{k.lower(): v for k, v in (extra or {}).items()}}
        names = sorted(headers)
        canonical = "\n".join([method, path, "", *[f"{k}:{headers[k].strip()}" for k in names], "",
                               ";".join(names), payload])
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, _sha256(canonical.encode())])
        key = _hmac(_hmac(_hmac(_hmac(f"AWS4{self.secret_key}".encode(), day), self.region), "s3"), "aws4_request")
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
                                    f"SignedHeaders={';'.join(names)}, Signature={signature}")
        return headers

    def _request(self, method: str, name: str, body: bytes = b"",
                 extra: dict[str, str] | None = None) -> bytes | None:
        path = "/" + urllib.parse.quote(f"{self.bucket}/{self.prefix}{name}", safe="/-_.~")
        headers = self.signed_headers(method, path, body, datetime.now(UTC), extra)
        del headers["host"]
        req = urllib.request.Request(self.endpoint + path, data=body if method == "PUT" else None, method=method,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310 - configured endpoint
                return bytes(resp.read())
        except urllib.error.HTTPError as err:
            if err.code == 404 and method == "GET":
                return None
            raise OSError(f"object store: {method} {name}: HTTP {err.code}") from None

    def put(self, name: str, data: bytes, content_type: str) -> None:
        self._request("PUT", name, data, {"content-type": content_type})

    def get(self, name: str) -> bytes | None:
        return self._request("GET", name)


def store_from_env(var_dir: Path, env: dict[str, str] | None = None) -> PhotoStore:
    """The configured store: S3 when `CITYOPS_PHOTO_S3_BUCKET` is set, else the local directory."""
    e = dict(environ() if env is None else env)
    bucket = e.get("CITYOPS_PHOTO_S3_BUCKET", "")
    if bucket:
        endpoint = e.get("CITYOPS_PHOTO_S3_ENDPOINT", "")
        access, secret = e.get("CITYOPS_PHOTO_S3_ACCESS_KEY", ""), e.get("CITYOPS_PHOTO_S3_SECRET_KEY", "")
        missing = [k for k, v in (("CITYOPS_PHOTO_S3_ENDPOINT", endpoint), ("CITYOPS_PHOTO_S3_ACCESS_KEY", access),
                                  ("CITYOPS_PHOTO_S3_SECRET_KEY", secret)) if not v]
        if missing:
            raise ValueError(f"CITYOPS_PHOTO_S3_BUCKET is set but {', '.join(missing)} is not")
        return S3PhotoStore(endpoint, bucket, access, secret, e.get("CITYOPS_PHOTO_S3_REGION", "us-east-1"))
    return LocalPhotoStore(Path(e.get("CITYOPS_PHOTO_DIR") or var_dir / "photos"))


class Photos:
    """Storing and reading photos with their records (blocking: call from a thread)."""

    def __init__(self, store: PhotoStore, max_bytes: int = MAX_PHOTO_BYTES) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self._meta: dict[str, PhotoMeta] = {}

    def save(self, data: bytes, *, photo_id: str, kind: str, uploader: str, team: str, case_id: str = "",
             ) -> PhotoMeta:
        clean = clean_photo(data, self.max_bytes)
        ext = EXTENSIONS[clean.content_type]
        meta = PhotoMeta(photo_id=photo_id, ext=ext, kind=kind, uploader=uploader, team=team, case_id=case_id,
                         size=len(clean.data), removed=list(clean.removed),
                         at=datetime.now(UTC).isoformat().replace("+00:00", "Z"))
        self.store.put(f"{photo_id}.{ext}", clean.data, clean.content_type)
        self.store.put(f"{photo_id}.json", meta.to_json(), "application/json")
        self._meta[photo_id] = meta
        return meta

    def meta(self, photo_id: str) -> PhotoMeta | None:
        if not PHOTO_ID.fullmatch(photo_id):
            return None
        found = self._meta.get(photo_id)
        if found is None:
            raw = self.store.get(f"{photo_id}.json")
            if raw is None:
                return None
            found = self._meta[photo_id] = PhotoMeta.from_json(raw)
        return found

    def link_event(self, photo_id: str, event_id: str) -> None:
        """A report photo now belongs to a sent report (its case is found through the event)."""
        meta = self.meta(photo_id)
        if meta is not None and meta.event_id != event_id:
            meta.event_id = event_id
            self.store.put(f"{photo_id}.json", meta.to_json(), "application/json")

    def read(self, meta: PhotoMeta) -> bytes | None:
        return self.store.get(f"{meta.photo_id}.{meta.ext}")


def describe(meta: PhotoMeta) -> dict[str, Any]:
    return {"url": meta.url, "kind": meta.kind, "bytes": meta.size, "removed": meta.removed, "at": meta.at}
