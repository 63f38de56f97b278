"""Debian packages without root: ``apt-get download`` with apt lists kept inside acalign's cache
(``-o Dir::State::Lists=…``), dependency trees, and control fields of .deb files."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from acalign.errors import AcalignError, DataError

from .taxonomy import check_package_allowed

log = logging.getLogger(__name__)

NO_APT_HINT = (
    "the embedded corpus needs Debian's apt-get and dpkg-deb; on other systems build from your "
    "own labelled sounds with --library FOLDER --labels labels.csv"
)


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
        check_package_allowed(package)
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
            raise AcalignError(f"apt-get download {package} failed: {last_line(result.stderr)}")
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
            raise AcalignError(f"apt-cache depends {' '.join(packages)} failed: {last_line(result.stderr)}")
        return parse_apt_depends(result.stdout)

    def update(self) -> None:
        """Refresh the private apt lists (``apt-get update`` into the cache)."""
        log.info("apt-get update (lists kept in %s)", self.cache / "apt")
        result = self._run(["apt-get", *self._apt_options(), "update"], cwd=self.cache)
        self._updated = True
        if result.returncode != 0:
            raise AcalignError(f"apt-get update failed: {last_line(result.stderr)}")

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


def last_line(text: str) -> str:
    """The last non-blank line of a tool's output (its error message), or ``"no message"``."""
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def deb_field(deb: Path, name: str) -> str:
    """Return a control field (``Version``, ``Package``) of a .deb file."""
    result = subprocess.run(
        ["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise DataError(f"{deb}: not a readable .deb ({last_line(result.stderr)})")
    return result.stdout.strip()


