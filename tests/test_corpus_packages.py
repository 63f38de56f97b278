"""Integration: a small corpus from the real minetest-data package (Debian archive)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from acalign.data.corpus import build_config, build_corpus, default_cache_dir
from acalign.data.manifest import read_manifest
from acalign.errors import AcalignError

# Pre-downloaded .debs are used when present (a development copy, or the user's cache).
DEB_FOLDERS = [p for p in (Path("/tmp/debs"), default_cache_dir() / "debs") if p.is_dir()]


@pytest.mark.network
@pytest.mark.slow
def test_small_corpus_from_minetest_data(tmp_path: Path) -> None:
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("apt-get/dpkg-deb not available: not a Debian system")
    config = build_config(clips=(24, 6, 6), packages=["minetest-data"], speech=False, min_recordings=2)
    try:
        result = build_corpus(config, tmp_path / "corpus", cache=tmp_path / "cache", debs_dirs=DEB_FOLDERS,
                              workers=2, progress=False)
    except AcalignError as exc:
        if "apt-get" in str(exc):
            pytest.skip(f"Debian archive unreachable: {exc}")
        raise
    out = result.out
    assert {"footsteps", "door", "fire", "water"} <= set(result.stats["classes"])
    for split in ("train", "val", "test"):
        manifest = read_manifest(out / f"{split}.json")
        manifest.validate(out / "audio" / split)
        assert len(manifest) == config.clips[("train", "val", "test").index(split)]
        for meta in json.loads((out / "events" / f"{split}.json").read_text()):
            audio, sr = sf.read(out / "audio" / split / meta["audio_id"])
            assert sr == 32000 and len(audio) == 320000
            for event in meta["events"]:
                inside = audio[round(event["onset"] * sr) : round(event["offset"] * sr)]
                assert np.sqrt(np.mean(inside**2)) > 1e-3
    sources = (out / "SOURCES.md").read_text()
    assert "minetest-data" in sources and "CC-BY-SA-3.0" in sources
    assert (out / "licences" / "minetest-data.copyright").is_file()
