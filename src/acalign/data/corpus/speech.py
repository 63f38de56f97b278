"""Speech synthesised with espeak-ng: the system's binary, or one unpacked from Debian's .debs
into the cache (no root), run to WAV files (no audio device)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from acalign.errors import AcalignError, DataError

from .apt import AptFetcher, installed_packages, last_line, require_apt, runtime_dependencies
from .sources import MARKER, Recording, file_duration
from .taxonomy import SoundClass, Taxonomy

# espeak-ng and the libraries its binary loads. libpcaudio0 pulls in libasound2 and libpulse0 and
# theirs (libsndfile1, ...): whichever of those this system lacks are found from the package
# dependencies and unpacked beside it (see runtime_dependencies).
ESPEAK_PACKAGES = ("espeak-ng", "libespeak-ng1", "espeak-ng-data", "libsonic0", "libpcaudio0")


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
            raise AcalignError(f"espeak-ng failed for voice {voice}: {last_line(result.stderr)}")
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
            raise DataError(f"{deb}: dpkg-deb -x failed ({last_line(result.stderr)})")


def _espeak_version(command: Sequence[str], env: dict[str, str]) -> str:
    result = subprocess.run([*command, "--version"], env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise AcalignError(
            f"espeak-ng does not run ({last_line(result.stderr)}); install espeak-ng or build "
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
