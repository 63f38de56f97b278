"""Which .debs an unpacked espeak-ng needs: apt-cache output parsing and the dependency walk."""

from __future__ import annotations

from acalign.data.corpus.apt import parse_apt_depends, runtime_dependencies

# Shaped like `apt-cache depends --recurse --no-recommends ...` (Debian 12), trimmed.
APT_OUTPUT = """\
libpcaudio0
  Depends: libasound2
  Depends: libc6
  Depends: libpulse0
libasound2
  Depends: libasound2-data
  Depends: libc6
libpulse0
  Depends: libasyncns0
  Depends: libsndfile1
  Depends: libsystemd0
    libelogind0
  |Depends: libfoo1
  Depends: libbar1
  Depends: <libvirtual-dev>
    libprovider1
    libprovider2
libsndfile1
  Depends: libflac12
  PreDepends: libogg0
libflac12
  Depends: libogg0
<libvirtual-dev>
libasyncns0
libogg0
"""


def test_parse_groups_alternatives_and_virtual_providers() -> None:
    tree = parse_apt_depends(APT_OUTPUT)
    assert tree["libpcaudio0"] == [["libasound2"], ["libc6"], ["libpulse0"]]
    # The provider listed under a real package is not an alternative of it.
    assert ["libsystemd0"] in tree["libpulse0"]
    assert ["libfoo1", "libbar1"] in tree["libpulse0"]
    assert ["libprovider1", "libprovider2"] in tree["libpulse0"]
    assert tree["libsndfile1"] == [["libflac12"], ["libogg0"]]
    assert tree["libvirtual-dev"] == []


def test_walk_keeps_only_what_is_not_installed() -> None:
    tree = parse_apt_depends(APT_OUTPUT)
    installed = {"libc6", "libasound2", "libasound2-data", "libsystemd0", "libbar1", "libprovider2"}
    needed = runtime_dependencies(tree, ["libpcaudio0"], installed)
    assert needed[0] == "libpcaudio0"
    assert set(needed) == {"libpcaudio0", "libpulse0", "libasyncns0", "libsndfile1", "libflac12", "libogg0"}
    assert len(needed) == len(set(needed))


def test_walk_takes_the_first_alternative_when_none_is_installed() -> None:
    tree = parse_apt_depends(APT_OUTPUT)
    needed = runtime_dependencies(tree, ["libpulse0"], {"libsystemd0"})
    assert "libfoo1" in needed and "libbar1" not in needed
    assert "libprovider1" in needed and "libprovider2" not in needed
    assert "libelogind0" not in needed


def test_installed_roots_need_nothing() -> None:
    tree = parse_apt_depends(APT_OUTPUT)
    assert runtime_dependencies(tree, ["libpcaudio0"], {"libpcaudio0"}) == []
