"""Package extraction on a small generated .deb: only audio, zip members, markers, cache."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from acalign.data.corpus.apt import AptFetcher
from acalign.data.corpus.sources import default_cache_dir, ensure_package, extract_package
from acalign.data.corpus.taxonomy import PackageInfo

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb not available")

INFO = PackageInfo(
    "fake-data", "CC0-1.0", archives=("usr/share/fake/*.zip",), archive_prefix="audio/", skip=("/music/",)
)


def _make_deb(tmp_path: Path) -> Path:
    root = tmp_path / "pkg"
    files = {
        "usr/share/fake/sounds/bark_1.wav": b"RIFF-bark",
        "usr/share/fake/music/song.ogg": b"OggS-song",
        "usr/share/fake/readme.txt": b"text",
        "usr/share/doc/fake-data/copyright": b"Files: *\nLicense: CC0-1.0\n",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    with zipfile.ZipFile(root / "usr/share/fake/data.zip", "w") as archive:
        archive.writestr("audio/x_1.wav", b"RIFF-x")
        archive.writestr("audio/music/y.ogg", b"OggS-y")
        archive.writestr("other/z.wav", b"RIFF-z")
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN/control").write_text(
        "Package: fake-data\nVersion: 1.0-1\nArchitecture: all\nMaintainer: t <t@example.org>\n"
        "Description: test\n"
    )
    deb = tmp_path / "debs" / "fake-data_1.0-1_all.deb"
    deb.parent.mkdir()
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(root), str(deb)], check=True, capture_output=True)
    return deb


def test_extracts_only_audio_and_zip_audio(tmp_path: Path) -> None:
    deb = _make_deb(tmp_path)
    dest = tmp_path / "cache" / "audio" / "fake-data"
    marker = extract_package(deb, INFO, dest)
    assert marker["version"] == "1.0-1" and marker["licence"] == "CC0-1.0"
    assert marker["files"] == ["usr/share/fake/data.zip/audio/x_1.wav", "usr/share/fake/sounds/bark_1.wav"]
    assert (dest / "usr/share/fake/data.zip/audio/x_1.wav").read_bytes() == b"RIFF-x"
    assert (dest / "copyright").read_text().startswith("Files")
    assert not (dest / "usr/share/fake/music").exists() and not (dest / "usr/share/fake/readme.txt").exists()
    assert [p.name for p in dest.parent.iterdir()] == ["fake-data"]  # no scratch folder left


def test_finished_extraction_is_reused_without_apt(tmp_path: Path) -> None:
    deb = _make_deb(tmp_path)
    dest = tmp_path / "cache" / "audio" / "fake-data"
    extract_package(deb, INFO, dest)
    stamp = (dest / ".complete.json").stat().st_mtime_ns

    class NoNetwork(AptFetcher):
        def deb(self, package: str) -> Path:
            raise AssertionError("must not fetch")

    assert ensure_package(NoNetwork(tmp_path / "cache"), INFO, dest)["version"] == "1.0-1"
    assert (dest / ".complete.json").stat().st_mtime_ns == stamp


def test_changed_selection_rules_re_extract(tmp_path: Path) -> None:
    deb = _make_deb(tmp_path)
    dest = tmp_path / "cache" / "audio" / "fake-data"
    extract_package(deb, INFO, dest)
    keep_music = PackageInfo(INFO.name, INFO.licence, archives=INFO.archives, archive_prefix=INFO.archive_prefix, skip=())
    fetcher = AptFetcher(tmp_path / "cache", debs_dirs=[deb.parent])
    files = ensure_package(fetcher, keep_music, dest)["files"]
    assert "usr/share/fake/music/song.ogg" in files and "usr/share/fake/data.zip/audio/music/y.ogg" in files


def test_local_debs_are_found_before_downloading(tmp_path: Path) -> None:
    deb = _make_deb(tmp_path)
    fetcher = AptFetcher(tmp_path / "cache", debs_dirs=[deb.parent])
    assert fetcher.deb("fake-data") == deb
    assert fetcher.local_deb("other-data") is None


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ACALIGN_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("ACALIGN_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "acalign"
