"""FastAPI app: a web page to explore alignments, and the JSON API behind it.

The page (``static/``) lets a user pick an indexed or corpus clip or upload one, ground typed
phrases in it (spectrogram, activation curves, detected segments, a playback cursor), search
the index by text, and compare with a corpus clip's ground-truth segments.

Endpoints (all documented at ``/docs``): ``GET /api/config``, ``GET /api/clips``,
``GET /api/clips/{clip_id}``, ``GET /api/audio/{clip_id}``, ``GET /api/search``,
``POST /api/ground``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from acalign import __version__
from acalign.errors import AcalignError
from acalign.serve import backend, media
from acalign.serve.catalog import Catalog, CatalogClip, build_catalog
from acalign.serve.schemas import (
    CaptionOut,
    ClipDetailOut,
    ClipListOut,
    ClipOut,
    ConfigOut,
    ErrorOut,
    GroundedPhraseOut,
    GroundOut,
    PhraseRefOut,
    SearchHitOut,
    SearchOut,
    SegmentOut,
    SpectrogramOut,
)

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
MAX_PHRASES = 16
MAX_PHRASE_CHARS = 200
MAX_SEARCH_RESULTS = 100
_CHUNK = 1 << 20
# Multipart framing around the file; a request this much over the limit is still judged by
# the file's own size.
_FORM_OVERHEAD = 64 * 1024
_AUDIO_TYPES = {
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".mp3": "audio/mpeg",
}


@dataclass
class ServeSettings:
    """How ``acalign serve`` runs: address, upload limit, where to keep uploads (if anywhere)."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_mb: float = 20.0
    keep_uploads: Path | None = None
    model_name: str = "model"

    @property
    def max_upload_bytes(self) -> int:
        """The upload limit in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)


# --------------------------------------------------------------------------- helpers


def parse_phrases(text: str) -> list[str]:
    """Split typed text into phrases: one per line or comma-separated, blanks and repeats dropped.

    Raises:
        AcalignError: no phrase, more than :data:`MAX_PHRASES`, or one too long.
    """
    phrases: list[str] = []
    for part in re.split(r"[\n,;]", text):
        phrase = " ".join(part.split())
        if phrase and phrase not in phrases:
            phrases.append(phrase)
    if not phrases:
        raise AcalignError("type at least one phrase (one per line or comma-separated)")
    if len(phrases) > MAX_PHRASES:
        raise AcalignError(f"at most {MAX_PHRASES} phrases at once, got {len(phrases)}")
    long = [p for p in phrases if len(p) > MAX_PHRASE_CHARS]
    if long:
        raise AcalignError(f"a phrase may have at most {MAX_PHRASE_CHARS} characters, got {len(long[0])}")
    return phrases


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def reference_segments(clip: CatalogClip, phrase: str) -> list[SegmentOut] | None:
    """Ground-truth segments of ``phrase`` over the clip's captions, or ``None`` if none match.

    Phrases match after lower-casing and dropping punctuation; segments of every matching
    annotated phrase are merged in time order.
    """
    key = _normalise(phrase)
    found: list[tuple[float, float]] = []
    matched = False
    for caption in clip.captions:
        for ref in caption.phrases:
            if ref.annotated and _normalise(ref.text) == key:
                matched = True
                found.extend((s.onset, s.offset) for s in ref.segments)
    if not matched:
        return None
    return [SegmentOut(onset=a, offset=b) for a, b in sorted(set(found))]


def _clip_out(clip: CatalogClip) -> ClipOut:
    return ClipOut(
        id=clip.clip_id,
        name=clip.name,
        source=clip.source,
        split=clip.split,
        duration=clip.duration,
        n_captions=len(clip.captions),
    )


def _clip_detail(clip: CatalogClip) -> ClipDetailOut:
    captions = [
        CaptionOut(
            caption_id=c.caption_id,
            text=c.text,
            phrases=[
                PhraseRefOut(
                    text=p.text,
                    annotated=p.annotated,
                    segments=[SegmentOut(onset=s.onset, offset=s.offset) for s in p.events],
                )
                for p in c.phrases
            ],
        )
        for c in clip.captions
    ]
    return ClipDetailOut(**_clip_out(clip).model_dump(), captions=captions)


def _rounded(values: np.ndarray, digits: int) -> list[float]:
    return np.round(np.nan_to_num(values.astype(np.float64)), digits).tolist()


def _safe_name(filename: str | None) -> str:
    """A file name safe to write anywhere: last path part, odd characters replaced."""
    base = Path((filename or "upload").replace("\\", "/")).name
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") or "upload"
    return cleaned[:100]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


def _too_large_message(size: int | None, limit_mb: float) -> str:
    size_text = f" ({size / 1024 / 1024:.1f} MB)" if size is not None else ""
    return f"upload too large{size_text}: the limit is {limit_mb:g} MB (acalign serve --max-upload-mb)"


# --------------------------------------------------------------------------- the app


class _State:
    """What every request needs: model, index, catalog, settings and a lock around the model."""

    def __init__(
        self, model: Any, index: Any, catalog: Catalog, settings: ServeSettings, has_data: bool
    ) -> None:
        self.model = model
        self.index = index
        self.catalog = catalog
        self.has_data = has_data
        self.settings = settings
        self.model_lock = threading.Lock()

    def clip(self, clip_id: str) -> CatalogClip:
        clip = self.catalog.get(clip_id)
        if clip is None:
            raise HTTPException(404, f"no clip with id {clip_id!r}")
        return clip


def create_app(
    model: Any,
    index: Any = None,
    data_dir: str | os.PathLike | None = None,
    settings: ServeSettings | None = None,
) -> FastAPI:
    """Build the web app around a loaded model, an optional index and an optional corpus.

    Args:
        model: an :class:`acalign.infer.model.AcalignModel` (anything with its ``ground``).
        index: an opened index (see :func:`acalign.serve.backend.load_index`), or ``None``.
        data_dir: a corpus directory with ``{split}.json`` and ``audio/{split}/``, or ``None``.
        settings: upload limit, upload keeping, display name; defaults when ``None``.

    Raises:
        AcalignError: ``data_dir`` holds no manifest, or ``keep_uploads`` cannot be created.
    """
    settings = settings or ServeSettings()
    if settings.max_upload_mb <= 0:
        raise AcalignError(f"max_upload_mb must be positive, got {settings.max_upload_mb}")
    if settings.keep_uploads is not None:
        try:
            Path(settings.keep_uploads).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AcalignError(f"{settings.keep_uploads}: cannot create the uploads folder ({exc.strerror})") from None
    files = backend.indexed_files(index) if index is not None else []
    state = _State(model, index, build_catalog(files, data_dir), settings, data_dir is not None)
    app = FastAPI(
        title="acalign",
        version=__version__,
        description="Ground caption phrases in audio, search an audio index by text.",
    )
    app.state.acalign = state
    _add_error_handling(app, settings)
    _add_clip_routes(app, state)
    _add_ground_route(app, state)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    return app


def _add_error_handling(app: FastAPI, settings: ServeSettings) -> None:
    @app.exception_handler(AcalignError)
    async def user_error(_: Request, exc: AcalignError) -> JSONResponse:
        return _error(400, str(exc).splitlines()[0])

    app.add_middleware(_UploadLimit, limit=settings.max_upload_bytes + _FORM_OVERHEAD, limit_mb=settings.max_upload_mb)


class _UploadLimit:
    """ASGI middleware: refuse a ``POST /api/ground`` body over ``limit`` bytes with 413.

    A declared ``Content-Length`` over the limit is refused before any byte is read; a body
    sent without one (chunked) is counted as it arrives and cut off at the limit, so an
    oversized upload never fills the disk.
    """

    def __init__(self, app: Any, *, limit: int, limit_mb: float) -> None:
        self.app = app
        self.limit = limit
        self.limit_mb = limit_mb

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/api/ground":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            response = _error(413, _too_large_message(int(length), self.limit_mb))
            response.headers["Connection"] = "close"
            await response(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise HTTPException(413, _too_large_message(None, self.limit_mb))
            return message

        await self.app(scope, counted_receive, send)


def _add_clip_routes(app: FastAPI, state: _State) -> None:
    settings = state.settings

    @app.get("/api/config", response_model=ConfigOut)
    def config() -> ConfigOut:
        """Server settings the page needs: upload limit, whether an index and a corpus are loaded."""
        return ConfigOut(
            version=__version__,
            model=settings.model_name,
            max_upload_mb=settings.max_upload_mb,
            has_index=state.index is not None,
            has_data=state.has_data,
            n_clips=len(state.catalog),
            threshold=backend.model_threshold(state.model),
        )

    @app.get("/api/clips", response_model=ClipListOut)
    def clips(
        q: Annotated[str, Query(description="case-insensitive filter on name and captions")] = "",
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> ClipListOut:
        """Indexed and corpus clips, filtered by a substring of their name or captions."""
        total, page = state.catalog.filter(q, offset=offset, limit=limit)
        return ClipListOut(total=total, clips=[_clip_out(c) for c in page])

    @app.get("/api/clips/{clip_id:path}", response_model=ClipDetailOut, responses={404: {"model": ErrorOut}})
    def clip_detail(clip_id: str) -> ClipDetailOut:
        """One clip with its captions and ground-truth segments (corpus clips)."""
        return _clip_detail(state.clip(clip_id))

    @app.get(
        "/api/audio/{clip_id:path}",
        response_class=FileResponse,
        responses={200: {"content": {"audio/*": {}}}, 404: {"model": ErrorOut}},
    )
    def audio(clip_id: str) -> FileResponse:
        """The audio file of an indexed or corpus clip, by id only (never by path)."""
        clip = state.clip(clip_id)
        if not clip.path.is_file():
            raise HTTPException(404, f"the audio of clip {clip_id!r} is no longer on disk")
        media_type = _AUDIO_TYPES.get(clip.path.suffix.lower(), "application/octet-stream")
        return FileResponse(clip.path, media_type=media_type)

    @app.get("/api/search", response_model=SearchOut, responses={404: {"model": ErrorOut}})
    def search(
        q: Annotated[str, Query(min_length=1, max_length=MAX_PHRASE_CHARS, description="text query")],
        k: Annotated[int, Query(ge=1, le=MAX_SEARCH_RESULTS)] = 10,
    ) -> SearchOut:
        """The index's files ranked for a text query, each with its best-matching span."""
        if state.index is None:
            raise HTTPException(404, "no index loaded: start the server with --index INDEX")
        query = " ".join(q.split())
        if not query:
            raise AcalignError("type a query to search the index")
        with state.model_lock:
            hits = backend.search(state.index, query, k)
        results = []
        for rank, hit in enumerate(hits, start=1):
            clip = state.catalog.get(hit.file_id)
            name = clip.name if clip is not None else hit.file_id
            results.append(
                SearchHitOut(
                    rank=rank,
                    id=hit.file_id,
                    name=name,
                    score=round(hit.score, 4),
                    onset=round(hit.onset, 3),
                    offset=round(hit.offset, 3),
                    audio_url="/api/audio/" + quote(hit.file_id, safe="/"),
                )
            )
        return SearchOut(query=query, results=results)


def _add_ground_route(app: FastAPI, state: _State) -> None:
    settings = state.settings

    @app.post(
        "/api/ground",
        response_model=GroundOut,
        responses={
            400: {"model": ErrorOut, "description": "no phrase, or neither clip_id nor file"},
            404: {"model": ErrorOut, "description": "unknown clip_id"},
            413: {"model": ErrorOut, "description": "upload larger than --max-upload-mb"},
            415: {"model": ErrorOut, "description": "upload is not decodable audio"},
        },
    )
    def ground(
        phrases: Annotated[str, Form(description="phrases, one per line or comma-separated")],
        clip_id: Annotated[str | None, Form(description="an id from /api/clips")] = None,
        threshold: Annotated[float | None, Form(ge=0.0, le=1.0, description="detection threshold; the model's when absent")] = None,
        file: Annotated[UploadFile | None, File(description="an audio file to upload instead of clip_id")] = None,
    ) -> GroundOut:
        """Ground phrases in an indexed/corpus clip or an uploaded file.

        Uploads are decoded in a temporary folder that is deleted afterwards (kept only with
        ``--keep-uploads``).
        """
        texts = parse_phrases(phrases)
        started = time.perf_counter()
        if file is not None and file.filename:
            with _received_upload(file, settings) as (path, clip):
                return _ground_file(state, path, clip, texts, threshold, started)
        if clip_id:
            clip = state.clip(clip_id)
            return _ground_file(state, clip.path, clip, texts, threshold, started)
        raise AcalignError("pick a clip or upload an audio file")


def _ground_file(
    state: _State, path: Path, clip: CatalogClip, texts: list[str], threshold: float | None, started: float
) -> GroundOut:
    """Ground ``texts`` in the audio file ``path`` and draw its spectrogram."""
    try:
        info = backend.probe_audio(path)
        db, fmax = media.log_mel_display(path)
    except AcalignError as exc:  # unreadable past its header, or a library file gone bad
        status = 415 if clip.source == "upload" else 500
        raise HTTPException(status, f"{clip.name}: {exc}") from None
    with state.model_lock:
        grounded = backend.ground(state.model, path, texts, threshold=threshold)
    clip.duration = clip.duration or info.duration
    return GroundOut(
        clip=_clip_detail(clip),
        sample_rate=info.sample_rate,
        threshold=threshold if threshold is not None else backend.model_threshold(state.model),
        spectrogram=SpectrogramOut(
            image=media.png_data_url(media.spectrogram_png(db)), duration=info.duration, fmin=12.0, fmax=fmax
        ),
        phrases=[_phrase_out(g, clip) for g in grounded],
        seconds=round(time.perf_counter() - started, 3),
    )


def _phrase_out(grounding: backend.PhraseGrounding, clip: CatalogClip) -> GroundedPhraseOut:
    times, values = media.thin_curve(grounding.times, grounding.activation)
    return GroundedPhraseOut(
        phrase=grounding.phrase,
        times=_rounded(times, 3),
        activation=_rounded(values, 4),
        segments=[SegmentOut(onset=round(a, 3), offset=round(b, 3), score=round(s, 4)) for a, b, s in grounding.segments],
        reference=reference_segments(clip, grounding.phrase),
    )


@contextlib.contextmanager
def _received_upload(file: UploadFile, settings: ServeSettings) -> Iterator[tuple[Path, CatalogClip]]:
    """Copy an upload into a temporary folder (size-checked), probe it, delete it afterwards.

    Raises:
        HTTPException: 413 over the size limit, 415 when it is not decodable audio.
    """
    name = _safe_name(file.filename)
    with tempfile.TemporaryDirectory(prefix="acalign-upload-") as tmp:
        path = Path(tmp) / name
        size = 0
        with path.open("wb") as out:
            while chunk := file.file.read(_CHUNK):
                size += len(chunk)
                if size > settings.max_upload_bytes:
                    raise HTTPException(413, _too_large_message(None, settings.max_upload_mb))
                out.write(chunk)
        try:
            info = backend.probe_audio(path)
        except AcalignError as exc:
            raise HTTPException(415, f"{name}: {exc}; upload WAV, FLAC, Ogg or MP3") from None
        if settings.keep_uploads is not None:
            kept = Path(settings.keep_uploads) / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}"
            shutil.copyfile(path, kept)
            log.info("kept upload %s", kept)
        yield path, CatalogClip(clip_id="", name=name, path=path, source="upload", duration=info.duration)
