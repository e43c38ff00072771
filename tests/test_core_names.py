"""Project-name normalisation and distribution filename parsing."""

from __future__ import annotations

import pytest

from mirror.core.names import (
    is_valid_filename,
    is_valid_project_name,
    is_wheel,
    normalize,
    project_candidates_from_filename,
    version_from_filename,
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Django", "django"),
        ("zope.interface", "zope-interface"),
        ("Foo__Bar--baz..Qux", "foo-bar-baz-qux"),
        ("a-_.b", "a-b"),
        ("already-normal", "already-normal"),
    ],
)
def test_normalize_follows_pep_503(name: str, expected: str) -> None:
    assert normalize(name) == expected


@pytest.mark.parametrize("name", ["a", "A1", "zope.interface", "foo_bar-baz", "x" * 200])
def test_valid_project_names(name: str) -> None:
    assert is_valid_project_name(name)


@pytest.mark.parametrize(
    "name",
    ["", "-foo", "foo-", ".foo", "foo bar", "foo/bar", "../etc", "fo\x00o", "é", "x" * 201],
)
def test_invalid_project_names(name: str) -> None:
    assert not is_valid_project_name(name)


@pytest.mark.parametrize(
    "filename",
    ["foo-1.0.tar.gz", "Foo_Bar-1.0-py3-none-any.whl", "naïve-1.0.zip", "a" * 255],
)
def test_valid_filenames(filename: str) -> None:
    assert is_valid_filename(filename)


@pytest.mark.parametrize(
    "filename",
    [
        "",
        ".",
        "..",
        ".hidden.whl",
        "a/b.whl",
        "a\\b.whl",
        "a\x00b.whl",
        "a\nb.whl",
        "a\x7fb.whl",
        "a\x85b.whl",
        "é" * 128,  # 256 bytes in UTF-8
        "a" * 256,
        "bad\udcffsurrogate.whl",
    ],
)
def test_invalid_filenames(filename: str) -> None:
    assert not is_valid_filename(filename)


def test_is_wheel() -> None:
    assert is_wheel("foo-1.0-py3-none-any.whl")
    assert not is_wheel("foo-1.0.tar.gz")
    assert not is_wheel("foo-1.0.whl.metadata")


@pytest.mark.parametrize(
    ("filename", "expected_first"),
    [
        ("Foo_Bar-1.0-py3-none-any.whl", "foo-bar"),
        ("zope.interface-6.0-cp311-cp311-manylinux_2_17_x86_64.whl", "zope-interface"),
        ("foo-bar-1.0.tar.gz", "foo-bar"),
        ("Django-4.2.zip", "django"),
        ("foo-bar-1.0.tar.bz2", "foo-bar"),
        ("foo-1.0.tgz", "foo"),
        ("setuptools-0.6c11-py2.7.egg", "setuptools"),
        ("pywin32-306.win32-py3.8.exe", "pywin32"),
        ("foo-1.0.win-amd64.msi", "foo"),
        ("foo-1.0-1.noarch.rpm", "foo"),
    ],
)
def test_candidates_most_likely_first(filename: str, expected_first: str) -> None:
    candidates = project_candidates_from_filename(filename)
    assert candidates[0] == expected_first
    assert len(candidates) == len(set(candidates))


def test_legacy_candidates_include_all_plausible_prefixes_longest_first() -> None:
    assert project_candidates_from_filename("foo-bar-1.0.tar.bz2") == ["foo-bar", "foo"]


def test_ambiguous_sdist_offers_shorter_prefixes_too() -> None:
    # sdist parsing splits on the last "-": "foo-2" version "1.0"; "foo" is possible too.
    assert project_candidates_from_filename("foo-2-1.0.tar.gz") == ["foo-2", "foo"]


@pytest.mark.parametrize(
    "filename",
    ["", "noextension", ".tar.gz", "../foo-1.0.tar.gz", "-1.0.tar.gz", "foo-1.0.txt", "\x00"],
)
def test_candidates_never_raise_and_give_nothing_for_junk(filename: str) -> None:
    assert project_candidates_from_filename(filename) == []


def test_candidates_for_invalid_wheel_fall_back_to_prefixes() -> None:
    # The version is not PEP 440, so packaging rejects it; the name is still usable.
    assert project_candidates_from_filename("foo-1.0_bad-py3-none-any.whl")[0] == "foo"


@pytest.mark.parametrize(
    ("filename", "version"),
    [
        ("foo-1.0-py3-none-any.whl", "1.0"),
        ("foo-1.0.post1.tar.gz", "1.0.post1"),
        ("foo-01.02.zip", "1.2"),
        ("foo-1.0-py2.7.egg", "1.0"),
        ("foo-1.0.tar.bz2", None),
        ("foo.exe", None),
        ("foo-notaversion.tar.gz", None),
    ],
)
def test_version_from_filename(filename: str, version: str | None) -> None:
    assert version_from_filename(filename) == version
