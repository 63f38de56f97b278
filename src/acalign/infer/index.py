"""An incremental index of an audio library, searched by text or by example.

Layout of an index directory (everything a search needs; nothing points outside it but the
indexed audio files and the model directory)::

    INDEX/
      index.json             the commit point: format, model identity, settings, file table
      frames-<shard>.f16     stored frame embeddings, float16, (rows, D), one shard per run
      chunks-<shard>.f32     one clip-level vector per chunk, float32, (rows, D)
      faiss-<generation>.index   FAISS index over the live chunk vectors

Each file is stored as its frame embeddings mean-pooled over ``pool_frames`` model frames
(default 10: 0.2 s at 50 frames/s) and cut into chunks of about ``chunk_seconds`` (10 s; a
short tail joins the previous chunk). A chunk is the unit of search: FAISS holds one vector per
chunk — the mean of its stored frames, whose inner product with the mean of a caption's word
vectors equals the paper's ``mean`` clip–caption score before the ``max(0, ·)`` clamp — and a
file scores as its best chunk. A 10 s clip is one chunk; an hour-long recording is 360.

Search runs in two stages: FAISS returns candidate chunks (the ``max(100, 10 k)`` best for the
caption's mean word vector and for each of its words), then the exact frame-level score (the
model's clip–caption reduction over the stored frame embeddings) re-ranks them and gives the
best-matching time span.

FAISS index type, chosen by the number of chunks when the index is written: up to
``flat_max_chunks`` (50 000) an exact ``IndexFlatIP``; above, ``IndexIVFFlat`` (``4 sqrt(n)``
lists, ``nprobe`` 32): about 9 ms for a five-word caption at a million chunks on one thread,
1.2 GB of memory for 300-d vectors; the exact re-rank then corrects its order.

Updates are incremental (a file is re-embedded when its size or modification time changed,
or when the shard holding it is missing or truncated; dropped when it is gone) and atomic: new
data goes to new files and ``index.json`` is replaced last, so an interrupted run leaves the
previous index intact and usable.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import shlex
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from acalign.config import atomic_write_json, ensure_directory
from acalign.errors import AcalignError, DataError, ModelError

if TYPE_CHECKING:
    import faiss

    from acalign.infer.model import AcalignModel

log = logging.getLogger(__name__)

INDEX_FORMAT = 1
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3"})
_META = "index.json"
_RERUN = "re-run acalign index"  # how to repair a damaged index, where no command is known
_LOCK = ".lock"


@dataclass
class IndexSettings:
    """How an index stores a library; fixed when the index is created."""

    pool_frames: int = 10
    chunk_seconds: float = 10.0
    flat_max_chunks: int = 50_000
    ivf_nprobe: int = 32


@dataclass(slots=True)
class IndexedFile:
    """One row of the metadata table.

    ``file_id`` is the path relative to the indexed folder (POSIX separators); ``row`` and
    ``n_frames`` locate its stored frames in ``frames-<shard>.f16``, ``chunk_row`` and
    ``n_chunks`` its chunk vectors in ``chunks-<shard>.f32``.
    """

    file_id: str
    size: int
    mtime_ns: int
    duration: float
    shard: str
    row: int
    n_frames: int
    chunk_row: int
    n_chunks: int
    path: str = ""  # absolute path, filled in when the index is opened

    def table_row(self) -> dict[str, Any]:
        """The row as saved in ``index.json`` (without the derived absolute path)."""
        row = asdict(self)
        row.pop("path")
        return row


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A ranked file: exact score, and the best-matching span ``[onset, offset)`` in seconds."""

    file_id: str
    path: str
    score: float
    onset: float
    offset: float


@dataclass
class IndexReport:
    """What one indexing run did (file ids per category)."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)  # unchanged, but their shard was damaged
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    skipped: list[str] = field(default_factory=list)
    n_files: int = 0
    n_chunks: int = 0
    index_type: str = ""
    seconds: float = 0.0


# --------------------------------------------------------------------------- building


def build_index(
    model: AcalignModel,
    audio_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    settings: IndexSettings | None = None,
    progress: bool = False,
) -> IndexReport:
    """Index every audio file under ``audio_dir`` into the directory ``out``, incrementally.

    Re-running on the same ``out`` embeds only new or changed files (size or modification time)
    and drops files that are gone; an unreadable file is skipped with a warning naming it (and
    retried on the next run). Files whose stored data is missing or truncated (a damaged
    ``frames-*``/``chunks-*`` file) are embedded again, which repairs the index. ``out`` may
    not be shared by two runs at once.

    Parameters
    ----------
    model : AcalignModel
        The model whose embeddings are stored; an existing index built with another model is
        refused (:class:`ModelError`).
    audio_dir : path
        Folder searched recursively for .wav, .flac, .ogg, .oga, .opus and .mp3 files.
    out : path
        Index directory (created if needed; an existing file there is a :class:`DataError`).
    settings : IndexSettings or None
        Only for a new index; an existing index keeps its own.
    progress : bool
        Show a progress bar over the files to embed.

    Returns
    -------
    IndexReport

    Examples
    --------
    >>> model = acalign.load_model("runs/demo/default/model")  # doctest: +SKIP
    >>> build_index(model, "~/recordings", "recordings.index", progress=True)  # doctest: +SKIP
    """
    start_time = time.perf_counter()
    root = Path(audio_dir).expanduser().resolve()
    if root.is_file():
        raise DataError(f"{audio_dir}: is a file; give the folder of audio files to index")
    if not root.is_dir():
        raise DataError(f"{audio_dir}: audio folder not found")
    out = ensure_directory(Path(out).expanduser().resolve())
    with _exclusive_lock(out):
        state = _read_state(out) if (out / _META).is_file() else None
        if state is not None:
            _check_model(state, model, out)
            if Path(state["root"]) != root:
                raise AcalignError(
                    f"{out}: this index holds {state['root']}, not {root}; "
                    "use a new --out for another folder"
                )
            settings = IndexSettings(**state["settings"])
        settings = settings or IndexSettings()
        dim = int(state["dim"]) if state is not None else int(model.dim)
        old_rows = {r["file_id"]: IndexedFile(**r) for r in (state or {}).get("files", [])}
        shards = dict((state or {}).get("shards", {}))
        damaged = _damaged_shards(out, shards, old_rows.values(), dim=dim)
        shards = {s: c for s, c in shards.items() if s not in damaged}
        report = IndexReport()
        found = _scan_audio(root, exclude=out)
        to_embed, to_repair = _files_to_embed(found, old_rows, damaged, report)
        report.removed = sorted(set(old_rows) - set(found))
        rows = {fid: row for fid, row in old_rows.items() if fid in found and fid not in to_embed}
        if to_embed:
            new_rows, shard_id, counts = _embed_files(
                model, root, out, to_embed, found, settings=settings, progress=progress
            )
            if counts["frames"]:
                shards[shard_id] = counts
            for file_id in to_embed:
                if file_id in new_rows:
                    if file_id in to_repair:
                        report.repaired.append(file_id)
                    else:
                        (report.updated if file_id in old_rows else report.added).append(file_id)
                    rows[file_id] = new_rows[file_id]
                else:
                    report.skipped.append(file_id)
                    if file_id in old_rows:  # changed and now unreadable: keep nothing stale
                        report.removed.append(file_id)
        ordered = [rows[fid] for fid in sorted(rows)]
        ordered, shards = _compact_if_wasteful(out, ordered, shards, dim=dim)
        index, index_type = _build_faiss(out, ordered, shards, dim=dim, settings=settings)
        faiss_name = f"faiss-{uuid.uuid4().hex[:12]}.index"
        _write_faiss(index, out / faiss_name)
        new_state = {
            "format": INDEX_FORMAT,
            "model": {"identity": model.identity, "path": str(model.path)},
            "root": str(root),
            "dim": dim,
            "frame_rate": model.frame_rate,
            "reduction": model.reduction,
            "settings": asdict(settings),
            "index_type": index_type,
            "faiss": faiss_name,
            "shards": shards,
            "files": [row.table_row() for row in ordered],
        }
        atomic_write_json(out / _META, new_state, indent=None)
        _remove_unreferenced(out, new_state)
    report.n_files = len(ordered)
    report.n_chunks = sum(r.n_chunks for r in ordered)
    report.index_type = index_type
    report.seconds = time.perf_counter() - start_time
    return report


def _damaged_shards(
    out: Path, shards: dict[str, dict[str, int]], rows: Iterable[IndexedFile], *, dim: int
) -> set[str]:
    """Shards whose data files are missing or shorter than ``index.json`` says, or that a file
    row names but the shard table lacks; a warning names each."""
    damaged = {r.shard for r in rows if r.shard not in shards}
    for shard, counts in shards.items():
        bad = _bad_shard_file(out, shard, counts, dim=dim)
        if bad is not None:
            damaged.add(shard)
            log.warning("%s: index data file missing or truncated; re-embedding its files", bad)
    return damaged


def _bad_shard_file(out: Path, shard: str, counts: dict[str, int], *, dim: int) -> Path | None:
    """The first of a shard's data files that is missing or truncated, or None."""
    frames = _frames_file(out, shard)
    if not _data_file_ok(frames, np.float16, counts["frames"], dim):
        return frames
    chunks = _chunks_file(out, shard)
    if not _data_file_ok(chunks, np.float32, counts["chunks"], dim):
        return chunks
    return None


def _files_to_embed(
    found: dict[str, tuple[int, int]],
    old_rows: dict[str, IndexedFile],
    damaged: set[str],
    report: IndexReport,
) -> tuple[list[str], set[str]]:
    """Files to embed (new, changed, or stored in a damaged shard) and, of those, the unchanged
    ones being repaired; counts the rest as unchanged in ``report``."""
    to_embed, to_repair = [], set()
    for file_id, (size, mtime_ns) in found.items():
        old = old_rows.get(file_id)
        if old is None or old.size != size or old.mtime_ns != mtime_ns:
            to_embed.append(file_id)
        elif old.shard in damaged:
            to_embed.append(file_id)
            to_repair.add(file_id)
        else:
            report.unchanged += 1
    return to_embed, to_repair


@contextlib.contextmanager
def _exclusive_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` (refuse a second indexing run on the same index)."""
    with open(out / _LOCK, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AcalignError(f"{out}: another indexing run is writing this index") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _scan_audio(root: Path, *, exclude: Path) -> dict[str, tuple[int, int]]:
    """Map each audio file under ``root`` (relative POSIX path) to ``(size, mtime_ns)``."""
    found: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if (here / d).resolve() != exclude)
        for name in sorted(filenames):
            path = here / name
            if path.suffix.lower() not in AUDIO_SUFFIXES or name.startswith("."):
                continue
            try:
                stat = path.stat()
            except OSError:
                continue  # vanished or a dangling link between listing and stat
            found[path.relative_to(root).as_posix()] = (stat.st_size, stat.st_mtime_ns)
    return found


def _embed_files(
    model: AcalignModel,
    root: Path,
    out: Path,
    file_ids: Sequence[str],
    stats: dict[str, tuple[int, int]],
    *,
    settings: IndexSettings,
    progress: bool,
) -> tuple[dict[str, IndexedFile], str, dict[str, int]]:
    """Embed ``file_ids`` into a new shard; return rows of those that worked, shard id, counts."""
    from tqdm import tqdm

    from acalign.data.audio import audio_duration

    shard_id = uuid.uuid4().hex[:12]
    chunk_frames = _chunk_frames(settings, frame_rate=model.frame_rate)
    row_bytes = 2 * model.dim
    rows: dict[str, IndexedFile] = {}
    chunk_count = 0
    with (
        open(_frames_file(out, shard_id), "wb") as frames_out,
        open(_chunks_file(out, shard_id), "wb") as chunks_out,
    ):
        for file_id in tqdm(file_ids, desc="indexing", unit="file", disable=not progress):
            path = root / file_id
            # a file that fails half-way leaves rows nobody references; compaction drops them
            first_row = frames_out.tell() // row_bytes
            try:
                duration = audio_duration(path)
                stored = _write_pooled_frames(
                    model.iter_frame_embeddings(path), frames_out, pool=settings.pool_frames
                )
            except DataError as exc:
                message = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
                log.warning("skipping unreadable audio: %s", message)
                continue
            chunks = _chunk_means(stored, chunk_frames=chunk_frames)
            chunks_out.write(chunks.tobytes())
            size, mtime_ns = stats[file_id]
            rows[file_id] = IndexedFile(
                file_id=file_id,
                size=size,
                mtime_ns=mtime_ns,
                duration=duration,
                shard=shard_id,
                row=first_row,
                n_frames=stored.shape[0],
                chunk_row=chunk_count,
                n_chunks=chunks.shape[0],
            )
            chunk_count += chunks.shape[0]
        frame_count = frames_out.tell() // row_bytes
        for handle in (frames_out, chunks_out):
            handle.flush()
            os.fsync(handle.fileno())
    return rows, shard_id, {"frames": frame_count, "chunks": chunk_count}


def _write_pooled_frames(
    frame_chunks: Iterable[np.ndarray], sink: Any, *, pool: int
) -> np.ndarray:
    """Mean-pool streamed frames ``(t, D)`` over ``pool`` frames and append them as float16.

    Returns the stored rows ``(n, D)`` (as stored: float16 values in float32) for the chunk
    vectors; ``D`` floats per ``pool`` frames, small beside the audio they stand for.
    """
    carry: np.ndarray | None = None
    stored: list[np.ndarray] = []

    def emit(pooled: np.ndarray) -> None:
        half = pooled.astype(np.float16)
        sink.write(half.tobytes())
        stored.append(half.astype(np.float32))

    for frames in frame_chunks:
        frames = frames if carry is None else np.concatenate([carry, frames])
        usable = (frames.shape[0] // pool) * pool
        if usable:
            emit(frames[:usable].reshape(usable // pool, pool, -1).mean(axis=1))
        carry = frames[usable:]
    if carry is not None and carry.shape[0]:
        emit(carry.mean(axis=0, keepdims=True))
    if not stored:
        raise DataError("audio gave no frames")
    return np.concatenate(stored)


def _chunk_frames(settings: IndexSettings, *, frame_rate: float) -> int:
    """Stored rows per chunk."""
    return max(1, round(settings.chunk_seconds * frame_rate / settings.pool_frames))


def chunk_bounds(n_rows: int, *, chunk_frames: int) -> list[tuple[int, int]]:
    """Cut ``n_rows`` stored rows into chunks of ``chunk_frames``; a tail under half joins the
    previous chunk. Returns ``[(start, end), ...]`` covering ``[0, n_rows)``."""
    bounds = [(s, min(s + chunk_frames, n_rows)) for s in range(0, n_rows, chunk_frames)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < chunk_frames / 2:
        tail = bounds.pop()
        bounds[-1] = (bounds[-1][0], tail[1])
    return bounds


def _chunk_means(stored: np.ndarray, *, chunk_frames: int) -> np.ndarray:
    """Chunk vectors ``(n_chunks, D)`` float32: the mean of each chunk's stored rows."""
    bounds = chunk_bounds(stored.shape[0], chunk_frames=chunk_frames)
    return np.stack([stored[s:e].mean(axis=0) for s, e in bounds]).astype(np.float32)


def _compact_if_wasteful(
    out: Path, rows: list[IndexedFile], shards: dict[str, dict[str, int]], *, dim: int
) -> tuple[list[IndexedFile], dict[str, dict[str, int]]]:
    """Copy live rows into one new shard when most stored rows are dead (removed/changed files)."""
    used = {r.shard for r in rows}
    shards = {s: c for s, c in shards.items() if s in used}
    live = sum(r.n_frames for r in rows)
    total = sum(c["frames"] for c in shards.values())
    if total <= 2 * live and len(shards) <= 8:
        return rows, shards
    shard_id = uuid.uuid4().hex[:12]
    frames_src = {s: _open_frames(out, s, c["frames"], dim) for s, c in shards.items()}
    chunks_src = {s: _open_chunks(out, s, c["chunks"], dim) for s, c in shards.items()}
    new_rows = []
    frame_count = chunk_count = 0
    with (
        open(_frames_file(out, shard_id), "wb") as frames_out,
        open(_chunks_file(out, shard_id), "wb") as chunks_out,
    ):
        for r in rows:
            frames_out.write(np.ascontiguousarray(frames_src[r.shard][r.row : r.row + r.n_frames]))
            chunks_out.write(
                np.ascontiguousarray(chunks_src[r.shard][r.chunk_row : r.chunk_row + r.n_chunks])
            )
            moved = {"shard": shard_id, "row": frame_count, "chunk_row": chunk_count}
            new_rows.append(IndexedFile(**{**r.table_row(), **moved}))
            frame_count += r.n_frames
            chunk_count += r.n_chunks
        for handle in (frames_out, chunks_out):
            handle.flush()
            os.fsync(handle.fileno())
    return new_rows, {shard_id: {"frames": frame_count, "chunks": chunk_count}}


def _build_faiss(
    out: Path,
    rows: list[IndexedFile],
    shards: dict[str, dict[str, int]],
    *,
    dim: int,
    settings: IndexSettings,
) -> tuple[faiss.Index, str]:
    """FAISS index over every live chunk vector, in table order (FAISS id = chunk position)."""
    chunks_src = {s: _open_chunks(out, s, c["chunks"], dim) for s, c in shards.items()}
    parts = [chunks_src[r.shard][r.chunk_row : r.chunk_row + r.n_chunks] for r in rows]
    vectors = np.ascontiguousarray(
        np.concatenate(parts) if parts else np.zeros((0, dim), np.float32), dtype=np.float32
    )
    return make_faiss_index(vectors, settings=settings)


def make_faiss_index(vectors: np.ndarray, *, settings: IndexSettings) -> tuple[faiss.Index, str]:
    """Build the inner-product FAISS index for chunk vectors ``(n, D)``; return it and its name.

    Exact ``IndexFlatIP`` up to ``settings.flat_max_chunks`` vectors; beyond, ``IndexIVFFlat``
    with ``4 sqrt(n)`` lists (trained on a sample of at least 40 vectors per list). Measured at
    a million 300-d vectors, one thread, five query vectors: IVF-Flat with nprobe 32 answers in
    9 ms (p50), an 8-bit scalar-quantised IVF in 29 ms, for 4x less memory (1.2 GB vs 0.3 GB).
    """
    faiss = _import_faiss()
    n, dim = vectors.shape
    if n <= settings.flat_max_chunks:
        index = faiss.IndexFlatIP(dim)
        index.add(vectors)
        return index, "flat"
    n_lists = max(1, min(int(4 * math.sqrt(n)), n // 40))  # FAISS wants >= 39 points per list
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, n_lists, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    sample_size = min(n, max(100_000, 40 * n_lists))
    index.train(vectors[np.sort(rng.choice(n, size=sample_size, replace=False))])
    index.add(vectors)
    index.nprobe = settings.ivf_nprobe
    return index, f"ivf{n_lists},flat"


def _import_faiss() -> Any:
    """Import FAISS without its loader's INFO lines (which CPU build it picked) on our stderr."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import faiss

    return faiss


@contextlib.contextmanager
def _single_threaded_faiss() -> Iterator[None]:
    """Run FAISS on one thread: a query of a few vectors is too small to share, and OpenMP's
    spinning threads made it 4x slower on a busy 2-core machine (measured: 8 ms vs 34 ms)."""
    faiss = _import_faiss()
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


def _write_faiss(index: faiss.Index, path: Path) -> None:
    faiss = _import_faiss()

    tmp = path.with_name(f".{path.name}.tmp")
    faiss.write_index(index, str(tmp))
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _remove_unreferenced(out: Path, state: dict[str, Any]) -> None:
    """Delete shard, FAISS and temporary files the committed ``index.json`` does not name."""
    keep = {_META, _LOCK, state["faiss"]}
    for shard in state["shards"]:
        keep |= {_frames_file(out, shard).name, _chunks_file(out, shard).name}
    for path in out.iterdir():
        ours = path.name.startswith(("frames-", "chunks-", "faiss-", f".{_META}.", ".faiss-"))
        if ours and path.name not in keep and path.is_file():
            path.unlink(missing_ok=True)


def _frames_file(out: Path, shard: str) -> Path:
    return out / f"frames-{shard}.f16"


def _chunks_file(out: Path, shard: str) -> Path:
    return out / f"chunks-{shard}.f32"


def _open_frames(out: Path, shard: str, rows: int, dim: int, *, repair: str = _RERUN) -> np.ndarray:
    return _memmap(_frames_file(out, shard), np.float16, rows, dim, repair=repair)


def _open_chunks(out: Path, shard: str, rows: int, dim: int) -> np.ndarray:
    return _memmap(_chunks_file(out, shard), np.float32, rows, dim)


def _data_file_ok(path: Path, dtype: type, rows: int, dim: int) -> bool:
    """Whether ``path`` holds at least ``rows`` rows of ``dim`` values of ``dtype``."""
    if rows == 0:
        return True
    return path.is_file() and path.stat().st_size >= rows * dim * np.dtype(dtype).itemsize


def _memmap(path: Path, dtype: type, rows: int, dim: int, *, repair: str = _RERUN) -> np.ndarray:
    """Map ``rows`` rows of ``path``; a missing or truncated file is a DataError ending in ``repair``."""
    if rows == 0:
        return np.zeros((0, dim), dtype=dtype)
    if not _data_file_ok(path, dtype, rows, dim):
        raise DataError(f"{path}: index data file missing or truncated; {repair}")
    return np.memmap(path, dtype=dtype, mode="r", shape=(rows, dim))


def _read_state(out: Path) -> dict[str, Any]:
    path = out / _META
    if not path.is_file():
        raise DataError(f"{out}: not an acalign index (no {_META}); build one with acalign index")
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable index metadata ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != INDEX_FORMAT:
        found = state.get("format") if isinstance(state, dict) else None
        raise DataError(
            f"{path}: index format {found!r}, this acalign reads format {INDEX_FORMAT}; "
            "rebuild it with acalign index"
        )
    return state


def _repair_command(state: dict[str, Any], out: Path) -> str:
    """The ``acalign index`` command line that rebuilds what is missing from the index ``out``."""
    parts = ["acalign", "index", state["model"]["path"], state["root"], "--out", str(out)]
    return " ".join(shlex.quote(part) for part in parts)


def _check_model(state: dict[str, Any], model: AcalignModel, out: Path) -> None:
    if state["model"]["identity"] != model.identity:
        raise ModelError(
            f"{out}: index was built with model {state['model']['path']} "
            f"(id {state['model']['identity'][:12]}), not {model.path} "
            f"(id {model.identity[:12]}); use that model or a new index"
        )


# --------------------------------------------------------------------------- searching


def load_index(path: str | os.PathLike, model: AcalignModel | None = None) -> AudioIndex:
    """Open an index directory for searching.

    ``model`` defaults to the model recorded in the index; a model with another identity is
    refused with :class:`ModelError`.

    Examples
    --------
    >>> index = load_index("recordings.index")  # doctest: +SKIP
    >>> for hit in index.search("a dog barks", k=5):  # doctest: +SKIP
    ...     print(hit.file_id, round(hit.score, 3), hit.onset, hit.offset)
    """
    return AudioIndex(path, model=model)


class AudioIndex:
    """A searchable, read-only view of an index directory (see :func:`build_index`)."""

    def __init__(self, path: str | os.PathLike, *, model: AcalignModel | None = None) -> None:
        """Open ``path``; load the recorded model when ``model`` is None."""
        faiss = _import_faiss()
        self.path = Path(path).expanduser().resolve()
        if not self.path.is_dir():
            raise DataError(f"{path}: index folder not found")
        state = _read_state(self.path)
        if model is None:
            from acalign.infer.model import load_model

            model = load_model(state["model"]["path"])
        _check_model(state, model, self.path)
        self.model = model
        self.state = state
        self.settings = IndexSettings(**state["settings"])
        self.dim = int(state["dim"])
        root = Path(state["root"])
        self._files = [IndexedFile(**row, path=str(root / row["file_id"])) for row in state["files"]]
        self._frames = self._map_frames(state)
        faiss_path = self.path / state["faiss"]
        try:
            self._index = faiss.read_index(str(faiss_path))
        except RuntimeError:  # FAISS reports a missing or corrupt file only this way
            raise DataError(
                f"{faiss_path}: FAISS index missing or unreadable; "
                f"repair it with: {_repair_command(state, self.path)}"
            ) from None
        if hasattr(self._index, "nprobe"):
            self._index.nprobe = self.settings.ivf_nprobe
        self._chunk_file, self._chunk_start, self._chunk_end = self._chunk_table()
        self.pool_seconds = self.settings.pool_frames / float(state["frame_rate"])

    def _map_frames(self, state: dict[str, Any]) -> dict[str, np.ndarray]:
        """Memory-map every shard's frames; a missing or truncated file names the repair."""
        repair = f"repair it with: {_repair_command(state, self.path)}"
        return {
            s: _open_frames(self.path, s, c["frames"], self.dim, repair=repair)
            for s, c in state["shards"].items()
        }

    def _chunk_table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For chunk id ``c``: its file index and its rows ``[start, end)`` in the file's shard."""
        chunk_frames = _chunk_frames(self.settings, frame_rate=float(self.state["frame_rate"]))
        owners, starts, ends = [], [], []
        for i, f in enumerate(self._files):
            for s, e in chunk_bounds(f.n_frames, chunk_frames=chunk_frames):
                owners.append(i)
                starts.append(f.row + s)
                ends.append(f.row + e)
        return (
            np.asarray(owners, dtype=np.int64),
            np.asarray(starts, dtype=np.int64),
            np.asarray(ends, dtype=np.int64),
        )

    def __len__(self) -> int:
        """Number of indexed files."""
        return len(self._files)

    @property
    def n_chunks(self) -> int:
        """Number of chunk vectors in the FAISS index."""
        return int(self._chunk_file.shape[0])

    def files(self) -> list[IndexedFile]:
        """Every indexed file, in the index's (sorted) order."""
        return list(self._files)

    def search(
        self, query: str, *, k: int = 10, n_candidates: int | None = None
    ) -> list[SearchHit]:
        """The ``k`` files that best match the caption ``query``, best first.

        FAISS is probed with the mean of the caption's word vectors and with each word vector
        (the clamp makes a caption's score more than its mean's: a chunk that matches one word
        well can rank high); each probe's ``n_candidates`` best chunks (default
        ``max(100, 10 k)``), merged rank by rank up to ``4 n_candidates`` chunks, are re-ranked by
        the model's exact clip–caption reduction over the stored frames. A file's score is that
        of its best chunk; its span is where that chunk's frame activation is above half its
        peak (over the chunk's median), around the peak.

        Examples
        --------
        >>> [h.file_id for h in index.search("a dog barks", k=3)]  # doctest: +SKIP
        ['park/dog_01.flac', 'street/0042.wav', 'park/dog_07.flac']
        """
        words = self._query_words(query)
        scorer = _CaptionScorer(words, reduction=self.model.reduction)
        probes = np.concatenate([words.mean(axis=0, keepdims=True), words])
        candidates = self._candidates(probes, k=k, n_candidates=n_candidates)
        return self._rerank(candidates, scorer, k=k)

    def search_audio(
        self,
        audio: str | os.PathLike | np.ndarray,
        *,
        sample_rate: int | None = None,
        k: int = 10,
        n_candidates: int | None = None,
    ) -> list[SearchHit]:
        """Query by example: the ``k`` files most similar to ``audio``, best first.

        Candidates come from the similarity of chunk vectors; the re-rank score is the mean over
        the query's (pooled) frames of the best cosine with any frame of the candidate chunk.
        """
        frames = self.model.embed_audio(audio, sample_rate=sample_rate)
        query = _l2_normalise(_mean_pool(frames, pool=self.settings.pool_frames))
        scorer = _CaptionScorer(query, reduction="max_time_mean_words", normalise_frames=True)
        candidates = self._candidates(query.mean(axis=0, keepdims=True), k=k, n_candidates=n_candidates)
        return self._rerank(candidates, scorer, k=k)

    def search_exhaustive(self, query: str, *, k: int = 10, block: int = 4096) -> list[SearchHit]:
        """Reference for :meth:`search`: the exact frame-level score of every chunk, no FAISS."""
        scorer = _CaptionScorer(self._query_words(query), reduction=self.model.reduction)
        scores = np.concatenate(
            [
                self._score_chunks(np.arange(s, min(s + block, self.n_chunks)), scorer)[0]
                for s in range(0, self.n_chunks, block)
            ]
            or [np.zeros(0)]
        )
        best = np.full(len(self._files), -np.inf)
        np.maximum.at(best, self._chunk_file, scores)
        top = [int(i) for i in np.argsort(-best, kind="stable")[:k] if np.isfinite(best[i])]
        best_chunk = {}
        for c in np.flatnonzero(scores == best[self._chunk_file]):
            best_chunk.setdefault(int(self._chunk_file[c]), int(c))
        return self._rerank(np.asarray([best_chunk[i] for i in top], dtype=np.int64), scorer, k=k)

    def _query_words(self, query: str) -> np.ndarray:
        words = self.model.embed_text([query])[0]
        return np.asarray(words, dtype=np.float32)

    def _candidates(
        self, probes: np.ndarray, *, k: int, n_candidates: int | None
    ) -> np.ndarray:
        """Chunk ids from FAISS: each probe vector's ``n_candidates`` best, merged rank by rank
        (every probe's best, then every probe's second, ...) and cut at ``4 n_candidates``, so a
        long caption does not multiply the re-rank's cost."""
        if k < 1:
            raise AcalignError(f"k must be at least 1, got {k}")
        wanted = min(self.n_chunks, n_candidates or max(100, 10 * k))
        if wanted == 0:
            return np.zeros(0, dtype=np.int64)
        with _single_threaded_faiss():
            _, ids = self._index.search(np.ascontiguousarray(probes, dtype=np.float32), wanted)
        by_rank = ids.T.ravel()
        by_rank = by_rank[by_rank >= 0]
        _, first = np.unique(by_rank, return_index=True)
        return by_rank[np.sort(first)][: 4 * wanted]

    def _rerank(self, chunk_ids: np.ndarray, scorer: _CaptionScorer, *, k: int) -> list[SearchHit]:
        """Exact scores of candidate chunks; each file's best chunk; the ``k`` best files."""
        if chunk_ids.size == 0:
            return []
        scores, activation, offsets = self._score_chunks(chunk_ids, scorer)
        order = np.argsort(-scores, kind="stable")
        chosen: dict[int, int] = {}  # file index -> position of its best chunk in chunk_ids
        for j in order:
            chosen.setdefault(int(self._chunk_file[chunk_ids[j]]), int(j))
            if len(chosen) == k:
                break
        return [
            self._hit(int(chunk_ids[j]), float(scores[j]), activation[offsets[j] : offsets[j + 1]])
            for j in chosen.values()
        ]

    def _score_chunks(
        self, chunk_ids: np.ndarray, scorer: _CaptionScorer
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scores ``(n,)`` of chunks, their concatenated frame activation, and its offsets."""
        starts, ends = self._chunk_start[chunk_ids], self._chunk_end[chunk_ids]
        lengths = ends - starts
        frames = np.empty((int(lengths.sum()), self.dim), dtype=np.float32)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        for j, c in enumerate(chunk_ids):
            shard = self._files[self._chunk_file[c]].shard
            frames[offsets[j] : offsets[j + 1]] = self._frames[shard][starts[j] : ends[j]]
        scores, activation = scorer.score(frames, lengths)
        return scores, activation, offsets

    def _hit(self, chunk: int, score: float, activation: np.ndarray) -> SearchHit:
        """A hit for ``chunk`` with the span of its activation's peak, in seconds."""
        f = self._files[self._chunk_file[chunk]]
        first_row = int(self._chunk_start[chunk] - f.row)
        lo, hi = peak_span(activation)
        return SearchHit(
            file_id=f.file_id,
            path=f.path,
            score=score,
            onset=(first_row + lo) * self.pool_seconds,
            offset=min(f.duration, (first_row + hi) * self.pool_seconds),
        )


class _CaptionScorer:
    """The clip–caption reductions of :mod:`acalign.models.aligner`, over concatenated chunks.

    For ``frames (N, D)`` made of chunks of the given lengths and query vectors ``(W, D)``:
    ``s = max(0, frames @ query.T)``, then per chunk ``mean`` over all of ``s``,
    ``max_time_mean_words`` (max over the chunk's frames, mean over words) or
    ``max_words_mean_time``. The per-frame activation is the word-reduction of each row
    (max over words for ``max_words_mean_time``, mean otherwise).
    """

    def __init__(
        self, query: np.ndarray, *, reduction: str, normalise_frames: bool = False
    ) -> None:
        if reduction not in ("mean", "max_time_mean_words", "max_words_mean_time"):
            raise ModelError(f"unknown clip-caption reduction {reduction!r}")
        self.query = np.ascontiguousarray(query, dtype=np.float32)
        self.reduction = reduction
        self.normalise_frames = normalise_frames

    def score(self, frames: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return per-chunk scores ``(n_chunks,)`` and per-frame activation ``(N,)``."""
        if self.normalise_frames:
            frames = _l2_normalise(frames)
        sim = np.maximum(frames @ self.query.T, 0.0)  # (N, W)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        if self.reduction == "max_words_mean_time":
            activation = sim.max(axis=1)
            scores = np.add.reduceat(activation, starts) / lengths
        elif self.reduction == "max_time_mean_words":
            activation = sim.mean(axis=1)
            scores = np.maximum.reduceat(sim, starts, axis=0).mean(axis=1)
        else:
            activation = sim.mean(axis=1)
            scores = np.add.reduceat(activation, starts) / lengths
        return scores, activation


def peak_span(activation: np.ndarray) -> tuple[int, int]:
    """Rows ``[lo, hi)`` around the peak of ``activation (T,)`` where it stays above half way
    from the median to the peak (the width at half maximum over a baseline)."""
    peak = int(np.argmax(activation))
    baseline = float(np.median(activation))
    if activation[peak] - baseline < 1e-3:  # flat: no part stands out
        return 0, int(activation.shape[0])
    level = 0.5 * (baseline + float(activation[peak]))
    below = activation < level
    lo = peak
    while lo > 0 and not below[lo - 1]:
        lo -= 1
    hi = peak + 1
    while hi < activation.shape[0] and not below[hi]:
        hi += 1
    return lo, hi


def _mean_pool(frames: np.ndarray, *, pool: int) -> np.ndarray:
    """Mean over consecutive groups of ``pool`` rows of ``(T, D)`` (the last may be shorter)."""
    n = frames.shape[0]
    starts = np.arange(0, n, pool)
    sums = np.add.reduceat(frames, starts, axis=0)
    counts = np.diff(np.concatenate([starts, [n]]))
    return sums / counts[:, None]


def _l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


# --------------------------------------------------------------------------- output formats


def hits_to_dicts(hits: Sequence[SearchHit]) -> list[dict[str, Any]]:
    """JSON-ready rows, best first: rank, file id, path, score, span."""
    return [
        {
            "rank": rank,
            "file_id": h.file_id,
            "path": h.path,
            "score": round(h.score, 5),
            "onset": round(h.onset, 2),
            "offset": round(h.offset, 2),
        }
        for rank, h in enumerate(hits, start=1)
    ]


def hits_table(hits: Sequence[SearchHit], *, query: str) -> str:
    """A readable ranked table of ``hits``."""
    width = max([4, *(len(h.file_id) for h in hits)])
    lines = [
        f"query: {query}",
        f"{'rank':>4}  {'score':>7}  {'onset':>8}  {'offset':>8}  {'file':<{width}}",
    ]
    lines += [
        f"{rank:>4}  {h.score:>7.4f}  {h.onset:>8.2f}  {h.offset:>8.2f}  {h.file_id:<{width}}"
        for rank, h in enumerate(hits, start=1)
    ]
    if not hits:
        lines.append("(the index is empty)")
    return "\n".join(lines) + "\n"


def recall_at_k(
    found: Sequence[SearchHit], reference: Sequence[SearchHit], *, k: int, tolerance: float = 1e-6
) -> float:
    """Share of the exhaustive top ``k`` that ``found`` retrieved, counting ties as found.

    A found file counts when its exact score reaches the ``k``-th best exhaustive score (less
    ``tolerance``): with the clamped cosine many files can tie (at 0, say), and which of them
    fill the last places is arbitrary. ``reference`` is :meth:`AudioIndex.search_exhaustive`'s.
    """
    wanted = min(k, len(reference))
    if wanted == 0:
        return 1.0
    cutoff = reference[wanted - 1].score - tolerance
    return sum(1 for hit in found[:k] if hit.score >= cutoff) / wanted
