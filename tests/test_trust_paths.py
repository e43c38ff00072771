"""The pure helpers of the trust layer: hash names, metadata names, path templates."""

from __future__ import annotations

import pytest

from mirror.trust.paths import (
    check_template,
    fill,
    metadata_name,
    normalise_hashes,
    parse_metadata_name,
)

B2 = "ab" * 32
SHA = "cd" * 32


def test_tuf_hash_names_become_ours_and_unknown_ones_are_dropped() -> None:
    hashes = {"blake2b-256": B2.upper(), "sha256": SHA, "sha3-256": "ee" * 32}
    assert normalise_hashes(hashes) == {"blake2b_256": B2, "sha256": SHA}


@pytest.mark.parametrize(
    "hashes", [{}, {"sha3-256": "ee" * 32}, {"sha256": "xyz"}, {"sha256": SHA[:-2]}]
)
def test_targets_without_a_checkable_digest_are_refused(hashes: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        normalise_hashes(hashes)


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("timestamp.json", (None, "timestamp")),
        ("1.root.json", (1, "root")),
        ("12.snapshot.json", (12, "snapshot")),
        ("3.bins-0a.json", (3, "bins-0a")),
        ("4.bin-3fff.json", (4, "bin-3fff")),
        ("root.json", None),
        ("snapshot.json", None),
        ("1.timestamp.json", None),
        ("0.root.json", None),
        ("1..json", None),
        ("../1.root.json", None),
        ("1.a%2Fb.json", None),
        ("1.root.json.gz", None),
    ],
)
def test_metadata_names_a_client_may_ask_for(
    name: str, parsed: tuple[int | None, str] | None
) -> None:
    assert parse_metadata_name(name) == parsed


def test_metadata_names_round_trip() -> None:
    assert metadata_name("bins-1", 5) == "5.bins-1.json"
    assert metadata_name("timestamp", None) == "timestamp.json"
    assert parse_metadata_name(metadata_name("bin-a", 7)) == (7, "bin-a")


def test_index_templates() -> None:
    check_template("{name}/{hash}.{name}.html", allowed=("name", "hash"), required=("name",))
    assert fill("{name}/{hash}.{name}.html", name="demo", hash="ab") == "demo/ab.demo.html"
    for bad in ("{name.__class__}", "{name!r}", "{name:>9}", "{other}", "/{name}", "../{name}"):
        with pytest.raises(ValueError):
            check_template(bad, allowed=("name", "hash"), required=("name",))
    with pytest.raises(ValueError, match="must contain"):
        check_template("static.html", allowed=("name",), required=("name",))
