"""The curated taxonomy: filename rules, recording families, label phrases."""

from __future__ import annotations

import pytest

from acalign.data.corpus.taxonomy import (
    class_for_label,
    clean_phrase,
    load_taxonomy,
    recording_family,
)
from acalign.errors import AcalignError

TAXONOMY = load_taxonomy()
ZIP = "usr/share/games/0ad/mods/public/public.zip/audio"


@pytest.mark.parametrize(
    ("package", "path", "label"),
    [
        ("0ad-data", f"{ZIP}/actor/singlesteps/fs_grass3.ogg", "footsteps"),
        ("0ad-data", f"{ZIP}/actor/fauna/animal/cattle_02.ogg", "cow"),
        ("0ad-data", f"{ZIP}/attack/weapon/swordhit_12a.ogg", "sword"),
        ("0ad-data", f"{ZIP}/ambient/weather/rain_11.ogg", "rain"),
        ("minetest-data", "usr/share/games/minetest/games/minetest_game/mods/doors/sounds/doors_door_open.ogg", "door"),
        ("minetest-data", "usr/share/games/minetest/games/minetest_game/mods/default/sounds/default_break_glass.2.ogg", "glass"),
        ("wesnoth-1.16-data", "usr/share/games/wesnoth/1.16/data/core/sounds/wolf-growl-3.ogg", "dog_wolf"),
        ("bucklespring-data", "usr/share/buckle/wav/3a-1.wav", "typing"),
        ("asterisk-core-sounds-en-wav", "usr/share/asterisk/sounds/en_US_f_Allison/conf-adminmenu-162.wav", "woman_speech"),
    ],
)
def test_filename_rules(package: str, path: str, label: str) -> None:
    assert TAXONOMY.classify(package, path)[0] == label


def test_voice_lines_form_one_family_per_speaker() -> None:
    first = TAXONOMY.classify("0ad-data", f"{ZIP}/voice/latin/civ/civ_male_attack.ogg")
    second = TAXONOMY.classify("0ad-data", f"{ZIP}/voice/latin/civ/civ_male_walk.ogg")
    other = TAXONOMY.classify("0ad-data", f"{ZIP}/voice/greek/civ/civ_male_walk.ogg")
    assert first == second == ("man_speech", "0ad-data:latin/civ/civ_male")
    assert other[1] != first[1]


def test_family_pattern_needs_a_group(tmp_path) -> None:
    bad = tmp_path / "t.yaml"
    bad.write_text(
        "classes:\n  x:\n    clauses: [a x sounds]\n    nouns: [x]\n"
        "    sources: [{package: p, match: 'x', family: 'no_group'}]\n"
    )
    with pytest.raises(AcalignError, match="needs a"):
        load_taxonomy(bad)


def test_unmatched_files_are_left_out() -> None:
    assert TAXONOMY.classify("0ad-data", f"{ZIP}/interface/alarm/alarm_attack_01.ogg") is None
    assert TAXONOMY.classify("minetest-data", f"{ZIP}/actor/singlesteps/fs_grass3.ogg") is None


@pytest.mark.parametrize(
    ("path", "mode", "family"),
    [
        ("a/fs_grass1.ogg", "stem", "a/fs_grass"),
        ("a/fs_grass8.ogg", "stem", "a/fs_grass"),
        ("a/swordhit_10a.ogg", "stem", "a/swordhit"),
        ("a/default_grass_footstep.3.ogg", "stem", "a/default_grass_footstep"),
        ("a/wolf-growl-4.ogg", "stem", "a/wolf-growl"),
        ("a/01-0.wav", "stem", "a/01"),
        ("a/conf-adminmenu-162.wav", "prefix", "a/conf"),
    ],
)
def test_recording_family(path: str, mode: str, family: str) -> None:
    assert recording_family(path, mode=mode) == family


def test_curated_taxonomy_size() -> None:
    events = [c for c in TAXONOMY.classes.values() if c.is_event]
    assert len(events) >= 25
    for sound_class in TAXONOMY.classes.values():
        assert sound_class.sources or sound_class.speech, sound_class.name
        assert len(set(sound_class.clauses)) >= 2 and len(set(sound_class.nouns)) >= 2


def test_labels_map_to_curated_classes_or_generated_phrases() -> None:
    assert class_for_label("dog", TAXONOMY).name == "dog_wolf"
    assert class_for_label("keyboard_typing", TAXONOMY).compose is not None
    generated = class_for_label("Church-Bells", TAXONOMY)
    assert generated.name == "church-bells"
    assert "church bells" in generated.nouns and "the sound of church bells" in generated.nouns
    owl = class_for_label("owl", TAXONOMY)
    assert owl.nouns[0] == "an owl" and "owl sound" in owl.nouns and "an owl is heard" in owl.clauses
    with pytest.raises(AcalignError):
        class_for_label("!!", TAXONOMY)


def test_clean_phrase() -> None:
    assert clean_phrase("Dog_Bark-loud!") == "dog bark loud"
