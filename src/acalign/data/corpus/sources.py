"""Real recordings from Debian packages: download, extract only the audio, and catalogue them.

Packages are fetched with ``apt-get download`` using apt lists kept inside acalign's cache
(``-o Dir::State::Lists=…``), so no root is needed. Only audio files (and each package's
copyright file, for attribution) are extracted; 0 A.D. keeps its audio inside a zip archive,
read member by member. Each package's extraction is finished by a marker file, so an interrupted
run resumes where it stopped. espeak-ng is run from the system when installed, else from its
.debs unpacked into the cache.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from acalign.config import atomic_write_text
from acalign.errors import AcalignError, DataError

from .taxonomy import PackageInfo, SoundClass, Taxonomy

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".ogg", ".wav", ".flac", ".oga")
DEFAULT_PACKAGES = (
    "minetest-data",
    "bucklespring-data",
    "asterisk-core-sounds-en-wav",
    "wesnoth-1.16-data",
    "supertuxkart-data",
    "0ad-data",
)
# espeak-ng and the libraries its binary loads. libpcaudio0 pulls in libasound2 and libpulse0 and
# theirs (libsndfile1, ...): whichever of those this system lacks are found from the package
# dependencies and unpacked beside it (see runtime_dependencies).
ESPEAK_PACKAGES = ("espeak-ng", "libespeak-ng1", "espeak-ng-data", "libsonic0", "libpcaudio0")
MARKER = ".complete.json"
NO_APT_HINT = (
    "the embedded corpus needs Debian's apt-get and dpkg-deb; on other systems build from your "
    "own labelled sounds with --library FOLDER --labels labels.csv"
)


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


# --------------------------------------------------------------------------- apt


class AptFetcher:
    """Find or download .deb files, with apt lists private to the cache (no root needed)."""

    def __init__(self, cache: Path, *, debs_dirs: Iterable[Path] = ()) -> None:
        self.cache = cache
        self.deb_dir = cache / "debs"
        self.debs_dirs = [Path(d) for d in debs_dirs] + [self.deb_dir]
        self._updated = False

    def _apt_options(self) -> list[str]:
        lists, apt_cache = self.cache / "apt" / "lists", self.cache / "apt" / "cache"
        (lists / "partial").mkdir(parents=True, exist_ok=True)
        (apt_cache / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        return [
            f"-o=Dir::State::Lists={lists}",
            f"-o=Dir::Cache={apt_cache}",
            "-o=Debug::NoLocking=1",
            "-q",
        ]

    def local_deb(self, package: str) -> Path | None:
        """Return an already downloaded .deb of ``package`` (newest name), if any."""
        for folder in self.debs_dirs:
            found = sorted(folder.glob(f"{package}_*.deb"))
            if found:
                return found[-1]
        return None

    def deb(self, package: str) -> Path:
        """Return the .deb of ``package``, downloading it into the cache when absent."""
        found = self.local_deb(package)
        if found is not None:
            return found
        require_apt()
        self.deb_dir.mkdir(parents=True, exist_ok=True)
        if not self._has_lists():
            self.update()
        result = self._run(["apt-get", *self._apt_options(), "download", package], cwd=self.deb_dir)
        if result.returncode != 0 and not self._updated:
            self.update()
            result = self._run(["apt-get", *self._apt_options(), "download", package], cwd=self.deb_dir)
        if result.returncode != 0:
            raise AcalignError(f"apt-get download {package} failed: {_last_line(result.stderr)}")
        found = self.local_deb(package)
        if found is None:
            raise AcalignError(f"apt-get download {package} left no .deb in {self.deb_dir}")
        return found

    def dependency_tree(self, packages: Sequence[str]) -> dict[str, list[list[str]]]:
        """Run-time dependencies of ``packages``, recursively: package → its ``Depends`` groups.

        A group lists the alternatives of one dependency (``a | b``); a virtual package is
        replaced by the packages that provide it.
        """
        require_apt()
        if not self._has_lists():
            self.update()
        result = self._run(
            ["apt-cache", *self._apt_options(), "depends", "--recurse", "--no-recommends",
             "--no-suggests", "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances",
             *packages],
            cwd=self.cache,
        )
        if result.returncode != 0:
            raise AcalignError(f"apt-cache depends {' '.join(packages)} failed: {_last_line(result.stderr)}")
        return parse_apt_depends(result.stdout)

    def update(self) -> None:
        """Refresh the private apt lists (``apt-get update`` into the cache)."""
        log.info("apt-get update (lists kept in %s)", self.cache / "apt")
        result = self._run(["apt-get", *self._apt_options(), "update"], cwd=self.cache)
        self._updated = True
        if result.returncode != 0:
            raise AcalignError(f"apt-get update failed: {_last_line(result.stderr)}")

    def _has_lists(self) -> bool:
        lists = self.cache / "apt" / "lists"
        return lists.is_dir() and any(lists.glob("*Packages*"))

    @staticmethod
    def _run(cmd: list[str], *, cwd: Path) -> subprocess.CompletedProcess:
        log.debug("running %s", " ".join(cmd))
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)


def parse_apt_depends(text: str) -> dict[str, list[list[str]]]:
    """Parse ``apt-cache depends --recurse`` output into package → list of alternative groups.

    Lines at column 0 name a package; ``  Depends: x`` (or ``PreDepends``) starts a dependency,
    ``  |Depends: x`` says the next one is an alternative of it, and deeper-indented lines under
    a virtual ``<x>`` name its providers.
    """
    tree: dict[str, list[list[str]]] = {}
    groups: list[list[str]] | None = None
    open_group = False
    virtual = False
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line.startswith(" "):
            groups = tree.setdefault(line.strip().removeprefix("<").removesuffix(">"), [])
            open_group = False
            continue
        if groups is None:
            continue
        match = re.match(r"^  (\|?)(Pre)?Depends: (\S+)", line)
        if match:
            name = match.group(3)
            virtual = name.startswith("<")
            if not open_group:
                groups.append([])
            if not virtual:
                groups[-1].append(name)
            open_group = bool(match.group(1))
        elif line.startswith("    ") and virtual and groups:
            groups[-1].append(line.strip())
    return tree


def installed_packages() -> set[str]:
    """Names of the packages dpkg lists as installed (empty where dpkg-query is missing)."""
    if shutil.which("dpkg-query") is None:
        return set()
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${db:Status-Abbrev} ${Package}\n"],
        capture_output=True, text=True, check=False,
    )
    return {
        fields[1].split(":")[0]
        for fields in (line.split() for line in result.stdout.splitlines())
        if len(fields) == 2 and fields[0] == "ii"
    }


def runtime_dependencies(
    tree: dict[str, list[list[str]]], roots: Sequence[str], installed: set[str]
) -> list[str]:
    """Packages ``roots`` need at run time that are not ``installed`` (roots included).

    A dependency group is met when any alternative is installed; otherwise its first
    alternative is taken.
    """
    needed: list[str] = []
    todo = list(reversed(roots))
    seen: set[str] = set()
    while todo:
        package = todo.pop()
        if package in seen or package in installed:
            continue
        seen.add(package)
        needed.append(package)
        for group in tree.get(package, []):
            if group and not any(alt in installed or alt in seen for alt in group):
                todo.append(group[0])
    return needed


def require_apt() -> None:
    """Raise a one-line :class:`AcalignError` when apt-get or dpkg-deb is missing."""
    missing = [tool for tool in ("apt-get", "dpkg-deb") if shutil.which(tool) is None]
    if missing:
        raise AcalignError(f"{' and '.join(missing)} not found: {NO_APT_HINT}")


def _last_line(text: str) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def deb_field(deb: Path, name: str) -> str:
    """Return a control field (``Version``, ``Package``) of a .deb file."""
    result = subprocess.run(
        ["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise DataError(f"{deb}: not a readable .deb ({_last_line(result.stderr)})")
    return result.stdout.strip()


# --------------------------------------------------------------------------- extraction


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
    return [info.zip, info.zip_prefix, list(info.skip)]


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
                elif info.zip and path == info.zip:
                    files += _extract_zip_member(tar, member, info, out)
                elif is_audio_path(path) and not info.skipped(path):
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


def _extract_zip_member(tar: tarfile.TarFile, member: tarfile.TarInfo, info: PackageInfo, out: Path) -> list[str]:
    """Copy an archive out of the tar stream (zip needs seeking) and keep its audio members.

    Members are stored under ``{zip path}/{member}`` so the catalogue names both levels.
    """
    files = []
    with tempfile.TemporaryFile(dir=out) as spool:
        shutil.copyfileobj(tar.extractfile(member), spool, length=1 << 22)
        spool.seek(0)
        with zipfile.ZipFile(spool) as archive:
            for entry in archive.infolist():
                name = entry.filename
                path = f"{info.zip}/{name}"
                if entry.is_dir() or not name.startswith(info.zip_prefix):
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


# --------------------------------------------------------------------------- espeak-ng


@dataclass(frozen=True)
class Espeak:
    """How to run espeak-ng: the command and the environment it needs."""

    command: tuple[str, ...]
    env: dict[str, str]
    version: str

    def speak(self, text: str, out: Path, *, voice: str, pitch: int, speed: int) -> None:
        """Write ``text`` spoken by ``voice`` to the WAV file ``out`` (no audio device used)."""
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp.wav")
        cmd = [*self.command, "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", str(tmp), text]
        result = subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not tmp.is_file():
            tmp.unlink(missing_ok=True)
            raise AcalignError(f"espeak-ng failed for voice {voice}: {_last_line(result.stderr)}")
        os.replace(tmp, out)


def find_espeak(fetcher: AptFetcher, cache: Path) -> Espeak:
    """Return a working espeak-ng: the system's if on PATH, else one unpacked from its .debs.

    Unpacking (``dpkg-deb -x``, no root) and running with ``LD_LIBRARY_PATH`` and ``--path`` is
    chosen over building a Python binding because it needs only files the archive ships; ``-w``
    writes a WAV file, so no sound server or device is involved.
    """
    system = shutil.which("espeak-ng")
    if system:
        return Espeak((system,), dict(os.environ), _espeak_version((system,), dict(os.environ)))
    root = cache / "espeak-ng" / "root"
    marker = root / MARKER
    if not marker.is_file():
        require_apt()
        _unpack_debs([fetcher.deb(name) for name in ESPEAK_PACKAGES], root)
        marker.write_text(json.dumps({"packages": list(ESPEAK_PACKAGES)}))
    libdir = root / "usr" / "lib" / "x86_64-linux-gnu"
    libdirs = [str(p) for p in (root / "usr" / "lib").glob("*-linux-gnu")] or [str(libdir)]
    # Every library folder already unpacked (dependencies of an earlier run included).
    env = _with_library_path(_library_dirs(root) or libdirs)
    data_parent = Path(libdirs[0])
    command = (str(root / "usr" / "bin" / "espeak-ng"), f"--path={data_parent}")
    try:
        version = _espeak_version(command, env)
    except AcalignError:
        # A library it loads is missing here: unpack every dependency this system lacks.
        missing = runtime_dependencies(
            fetcher.dependency_tree(ESPEAK_PACKAGES), ESPEAK_PACKAGES, installed_packages()
        )
        _unpack_debs([fetcher.deb(name) for name in missing if name not in ESPEAK_PACKAGES], root)
        env = _with_library_path(_library_dirs(root))
        version = _espeak_version(command, env)
    return Espeak(command, env, version)


def _with_library_path(dirs: Sequence[str]) -> dict[str, str]:
    """This process's environment with ``dirs`` put first on ``LD_LIBRARY_PATH``."""
    return dict(os.environ, LD_LIBRARY_PATH=os.pathsep.join([*dirs, os.environ.get("LD_LIBRARY_PATH", "")]))


def _library_dirs(root: Path) -> list[str]:
    """Every folder under ``root`` that holds a shared library (pulseaudio keeps one apart)."""
    return sorted({str(lib.parent) for lib in root.glob("**/*.so*") if lib.is_file()})


def _unpack_debs(debs: Sequence[Path], root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        result = subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise DataError(f"{deb}: dpkg-deb -x failed ({_last_line(result.stderr)})")


def _espeak_version(command: Sequence[str], env: dict[str, str]) -> str:
    result = subprocess.run([*command, "--version"], env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise AcalignError(
            f"espeak-ng does not run ({_last_line(result.stderr)}); install espeak-ng or build "
            "with --no-speech"
        )
    words = result.stdout.split()
    return words[words.index("text-to-speech:") + 1] if "text-to-speech:" in words else "unknown"


def speech_recordings(
    espeak: Espeak, taxonomy: Taxonomy, classes: Sequence[SoundClass], cache: Path,
    *, progress: Callable[[Iterable], Iterable] = iter,
) -> list[Recording]:
    """Speak every taxonomy sentence in each speech class's voices; return the recordings.

    Voice, pitch and speed of each (class, sentence) are drawn from a fixed seed, so the cached
    files serve every build. A sentence is one family across classes (its words never cross
    splits).
    """
    jobs = []
    for sound_class in classes:
        spec = sound_class.speech
        if spec is None:
            continue
        for index, text in enumerate(taxonomy.speech_sentences):
            rng = np.random.default_rng([index, sum(map(ord, sound_class.name))])
            voice = spec.voices[int(rng.integers(len(spec.voices)))]
            pitch = int(rng.integers(spec.pitch[0], spec.pitch[1] + 1))
            speed = int(rng.integers(spec.speed[0], spec.speed[1] + 1))
            jobs.append((sound_class.name, index, text, voice, pitch, speed))
    out_root = cache / "espeak-ng" / f"speech-{espeak.version}"
    recordings = []
    for label, index, text, voice, pitch, speed in progress(jobs):
        name = f"{label}/{index:02d}_{voice.replace('+', '_')}_p{pitch}_s{speed}.wav"
        out = out_root / name
        if not out.is_file():
            espeak.speak(text, out, voice=voice, pitch=pitch, speed=speed)
        recordings.append(
            Recording(
                recording_id=f"espeak-ng/{name}",
                label=label,
                family=f"espeak-ng:sentence{index:02d}",
                package="espeak-ng",
                version=espeak.version,
                licence="GPL-3+ (synthesiser; the generated speech carries no third-party rights)",
                path=f'espeak-ng -v {voice} -p {pitch} -s {speed} "{text}"',
                file=str(out),
                duration=file_duration(out),
            )
        )
    return recordings
