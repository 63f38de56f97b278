"""Real recordings from Debian packages: extract only their audio, and catalogue them.

Packages are fetched by :class:`acalign.data.corpus.apt.AptFetcher`. Only audio files,
SoundFonts and each package's copyright file (for attribution) are extracted; archives inside a
package (0 A.D.'s zip, OpenArena's pk3, Warzone's wz) are read member by member. Each package's
extraction is finished by a marker file, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from acalign.config import atomic_write_text
from acalign.errors import DataError

from .apt import AptFetcher, deb_field, require_apt
from .taxonomy import PackageInfo, Taxonomy

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".ogg", ".wav", ".flac", ".oga", ".au", ".aif", ".aiff")
MARKER = ".complete.json"


def default_cache_dir() -> Path:
    """Return the cache directory: ``$ACALIGN_CACHE`` if set, else ``~/.cache/acalign``."""
    env = os.environ.get("ACALIGN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "acalign"


@dataclass
class Recording:
    """One source recording: where it came from, its class and family, and its licence."""

    recording_id: str
    label: str
    family: str
    package: str
    version: str
    licence: str
    path: str
    file: str
    duration: float = 0.0  # seconds: of the file in a package catalogue, audible part in a corpus


CATALOGUE_FIELDS = [f.name for f in fields(Recording)]


def write_catalogue(recordings: Sequence[Recording], path: str | os.PathLike) -> None:
    """Write recordings as a CSV catalogue (one row each, columns as :class:`Recording`)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CATALOGUE_FIELDS, lineterminator="\n")
    writer.writeheader()
    for rec in recordings:
        writer.writerow(asdict(rec))
    atomic_write_text(path, buffer.getvalue())


def read_catalogue(path: str | os.PathLike) -> list[Recording]:
    """Read a catalogue written by :func:`write_catalogue`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: catalogue not found")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [Recording(**{**row, "duration": float(row["duration"] or 0)}) for row in rows]




def is_audio_path(path: str) -> bool:
    """Whether a file name has an audio suffix acalign decodes."""
    return path.lower().endswith(AUDIO_SUFFIXES)


def ensure_package(fetcher: AptFetcher, info: PackageInfo, dest: Path, *, progress: bool = False) -> dict:
    """Return the extraction marker of ``info``'s package, fetching and extracting it if needed.

    A finished extraction is used as it is (no apt-get, no .deb needed), so a warm cache
    works offline; delete ``dest`` to refresh it.
    """
    marker = dest / MARKER
    if marker.is_file():
        done = json.loads(marker.read_text())
        if done.get("selection") == _selection(info):
            return done
    return extract_package(fetcher.deb(info.name), info, dest, progress=progress)


def _selection(info: PackageInfo) -> list:
    """What an extraction kept (zip, skip rules): a change re-extracts the package."""
    return [list(info.archives), info.archive_prefix, list(info.soundfonts), list(info.skip)]


def extract_package(deb: Path, info: PackageInfo, dest: Path, *, progress: bool = False) -> dict:
    """Extract the audio (and the copyright file) of ``deb`` into ``dest``; return the marker.

    Already complete extractions (same version) are reused; an interrupted one is redone in a
    scratch folder that replaces ``dest`` only when finished.
    """
    require_apt()
    version = deb_field(deb, "Version")
    marker = dest / MARKER
    if marker.is_file():
        done = json.loads(marker.read_text())
        if done.get("version") == version and done.get("selection") == _selection(info):
            return done
    log.info("extracting the audio of %s %s", info.name, version)
    dest.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        files = _extract_tar_stream(deb, info, scratch, progress=progress)
        done = {
            "package": info.name, "version": version, "licence": info.licence,
            "selection": _selection(info), "files": sorted(files),
        }
        (scratch / MARKER).write_text(json.dumps(done, indent=1))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(scratch, dest)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return done


def _extract_tar_stream(deb: Path, info: PackageInfo, out: Path, *, progress: bool) -> list[str]:
    """Stream ``dpkg-deb --fsys-tarfile`` and keep audio members (and zips of audio)."""
    files: list[str] = []
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    installed_kib = deb_field(deb, "Installed-Size")
    bar = tqdm(
        total=int(installed_kib) * 1024 if installed_kib.isdigit() else None, unit="B", unit_scale=True,
        desc=f"extracting {info.name}", disable=not progress, dynamic_ncols=True,
    )
    try:
        with bar, tarfile.open(fileobj=_CountingReader(proc.stdout, bar), mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                path = member.name.removeprefix("./")
                if path == f"usr/share/doc/{info.name}/copyright":
                    _write_member(tar, member, out / "copyright")
                elif info.is_archive(path):
                    files += _extract_zip_member(tar, member, path, info, out)
                elif info.is_soundfont(path) or (is_audio_path(path) and not info.skipped(path)):
                    _write_member(tar, member, out / path)
                    files.append(path)
    finally:
        proc.stdout.close()
        if proc.wait() != 0:
            raise DataError(f"{deb}: dpkg-deb --fsys-tarfile failed (exit {proc.returncode})")
    return files


class _CountingReader(io.RawIOBase):
    """A read-only stream that reports the bytes read through it to a progress bar."""

    def __init__(self, stream: io.BufferedIOBase, bar: tqdm) -> None:
        self.stream, self.bar = stream, bar

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.bar.update(len(data))
        return data

    def readinto(self, buffer: memoryview) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    source = tar.extractfile(member)
    with target.open("wb") as handle:
        shutil.copyfileobj(source, handle, length=1 << 20)


def _extract_zip_member(
    tar: tarfile.TarFile, member: tarfile.TarInfo, archive_path: str, info: PackageInfo, out: Path
) -> list[str]:
    """Copy an archive out of the tar stream (zip needs seeking) and keep its audio members.

    Members are stored under ``{archive path}/{member}`` so the catalogue names both levels.
    """
    files = []
    with tempfile.TemporaryFile(dir=out) as spool:
        shutil.copyfileobj(tar.extractfile(member), spool, length=1 << 22)
        spool.seek(0)
        try:
            archive = zipfile.ZipFile(spool)
        except zipfile.BadZipFile:
            log.warning("%s: %s is not a zip archive, left out", info.name, archive_path)
            return []
        with archive:
            for entry in archive.infolist():
                name = entry.filename
                path = f"{archive_path}/{name}"
                if entry.is_dir() or not name.startswith(info.archive_prefix):
                    continue
                if not is_audio_path(name) or info.skipped(path):
                    continue
                target = out / path
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(entry) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst, length=1 << 20)
                files.append(path)
    return files


def file_duration(path: str | os.PathLike) -> float:
    """Duration of an audio file in seconds from its header (0.0 when unreadable)."""
    try:
        return round(float(sf.info(str(path)).duration), 3)
    except (sf.LibsndfileError, RuntimeError):
        return 0.0


def package_recordings(taxonomy: Taxonomy, marker: dict, root: Path) -> list[Recording]:
    """Return the classified recordings of one extracted package (unmatched files are left out)."""
    package = marker["package"]
    recordings = []
    for path in marker["files"]:
        found = taxonomy.classify(package, path)
        if found is None:
            continue
        label, family = found
        recordings.append(
            Recording(
                recording_id=f"{package}/{path}",
                label=label,
                family=family,
                package=package,
                version=marker["version"],
                licence=marker["licence"],
                path=path,
                file=str(root / path),
                duration=file_duration(root / path),
            )
        )
    return recordings


