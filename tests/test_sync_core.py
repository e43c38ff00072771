"""The sync's pure core: changelog rows → plan, full-list reconciliation, filters, and the
streamed XML-RPC project list parser."""

from __future__ import annotations

import json
import xmlrpc.client

import pytest

from mirror.core.changelog import (
    Action,
    ChangelogError,
    EntryKind,
    PlanEntry,
    classify,
    collapse,
    parse_rows,
    reconcile,
)
from mirror.core.filters import FilterError, Filters, platform_family
from mirror.core.jsonapi import filter_json_api
from mirror.core.model import DistFile, ProjectPage
from mirror.core.names import version_from_filename
from mirror.core.xmlrpcstream import SerialListParser, XmlRpcFault, XmlRpcStreamError
from mirror.sync.journal import Outcome, parse_progress

# ------------------------------------------------------------------------ changelog


@pytest.mark.parametrize(
    ("text", "action"),
    [
        ("create", Action.CREATE),
        ("new release", Action.NEW_RELEASE),
        ("add py3 file demo-1.0-py3-none-any.whl", Action.ADD_FILE),
        ("add source file demo-1.0.tar.gz", Action.ADD_FILE),
        ("remove file demo-1.0.tar.gz", Action.REMOVE_FILE),
        ("remove release", Action.REMOVE_RELEASE),
        ("remove project", Action.REMOVE_PROJECT),
        ("yank release", Action.YANK),
        ("unyank release", Action.UNYANK),
        ("set project status quarantined", Action.STATUS),
        ("add Owner alice", Action.OTHER),
        ("something PyPI invents next year", Action.OTHER),
    ],
)
def test_every_journal_action_is_classified_and_unknown_ones_mean_refresh(
    text: str, action: Action
) -> None:
    assert classify(text) is action


def test_rows_parse_into_normalised_events_and_bad_names_are_skipped() -> None:
    rows = [
        ["Demo.Pkg", "1.0", 1700000000, "new release", 5],
        ["bad name!", None, 1700000000, "create", 6],
        ["other", None, 1700000000, "create", 7],
    ]
    events, skipped = parse_rows(rows)
    assert skipped == 1
    assert [(e.project, e.version, e.action, e.serial) for e in events] == [
        ("demo-pkg", "1.0", Action.NEW_RELEASE, 5),
        ("other", None, Action.CREATE, 7),
    ]


@pytest.mark.parametrize(
    "rows",
    [
        "not a list",
        [["demo", "1.0", 0, "create"]],
        [["demo", "1.0", 0, "create", "7"]],
        [["demo", "1.0", 0, 42, 7]],
        [["demo", "1.0", 0, "create", True]],
    ],
)
def test_damaged_changelog_answers_are_refused_whole(rows: object) -> None:
    with pytest.raises(ChangelogError):
        parse_rows(rows)


def test_collapse_keeps_one_entry_per_project_with_the_highest_serial() -> None:
    events, _ = parse_rows(
        [
            ["a", None, 0, "create", 1],
            ["b", None, 0, "create", 2],
            ["a", "1.0", 0, "new release", 3],
            ["b", None, 0, "remove project", 4],
            ["c", None, 0, "remove project", 5],
            ["c", None, 0, "create", 6],
            ["blocked", None, 0, "create", 7],
        ]
    )
    entries = collapse(events, lambda name: name != "blocked")
    assert entries == [
        PlanEntry("a", 3),
        PlanEntry("b", 4, EntryKind.SYNC, expect_gone=True),
        PlanEntry("c", 6),
        PlanEntry("blocked", 7, EntryKind.DROP),
    ]


def test_plan_entries_round_trip_through_their_journal_line() -> None:
    for entry in (PlanEntry("a-b", 3), PlanEntry("c", 9, EntryKind.DROP, True)):
        assert PlanEntry.load(entry.dump()) == entry
    for bad in ("a b", "A 1 sync 0", "../x 1 sync 0", "a 1 nope 0", "a x sync 0"):
        with pytest.raises(ValueError):
            PlanEntry.load(bad)


GONE = PlanEntry("p", 0, EntryKind.SYNC, expect_gone=True)


@pytest.mark.parametrize(
    ("listed", "upstream", "held", "local", "allowed", "force", "expected"),
    [
        (True, 5, False, None, True, False, PlanEntry("p", 5)),  # new upstream
        (True, 5, True, 4, True, False, PlanEntry("p", 5)),  # newer upstream
        (True, 5, True, 5, True, False, None),  # up to date
        (True, 5, True, 5, True, True, PlanEntry("p", 5)),  # the filters changed
        (False, None, True, 5, True, False, GONE),  # gone upstream: confirm with a fetch
        (True, None, True, 5, True, False, PlanEntry("p", 0)),  # no serial: always fetch
        (True, 5, True, 5, False, False, PlanEntry("p", 5, EntryKind.DROP)),  # filtered out
        (True, 5, False, None, False, False, None),  # filtered out, never held
    ],
)
def test_reconcile_decides_each_name_of_a_full_run(
    listed: bool,
    upstream: int | None,
    held: bool,
    local: int | None,
    allowed: bool,
    force: bool,
    expected: PlanEntry | None,
) -> None:
    decided = reconcile(
        "p",
        listed=listed,
        upstream_serial=upstream,
        held=held,
        local_serial=local,
        allowed=allowed,
        force=force,
    )
    assert decided == expected


def test_progress_log_resumes_with_a_watermark_and_ignores_torn_lines() -> None:
    finished = parse_progress(["0 d", "2 x", "1 d", "5 f", "4 d", "7 d", "8 f", "8 d", "3"])
    assert finished.watermark == 3
    assert finished.above == {4, 5, 7, 8}
    assert finished.carried == {2, 5}
    assert all(i in finished for i in (0, 1, 2, 4, 7, 8))
    # not finished: never recorded (3, 6) or failed last time (5: a resume retries it)
    assert 3 not in finished and 6 not in finished and 5 not in finished
    assert finished.count == 6
    assert Outcome.DEFERRED.carried and not Outcome.DONE.carried


# ------------------------------------------------------------------------ filters


def wheel(name: str, size: int = 100) -> DistFile:
    return DistFile(filename=name, url=f"https://files.example/{name}", size=size)


def names(page: ProjectPage) -> list[str]:
    return [f.filename for f in page.files]


def file_versions(page: ProjectPage) -> set[str | None]:
    return {version_from_filename(f.filename) for f in page.files}


PAGE = ProjectPage(
    name="demo",
    files=(
        wheel("demo-1.0-py3-none-any.whl"),
        wheel("demo-1.0.tar.gz"),
        wheel("demo-2.0rc1-py3-none-any.whl"),
        wheel("demo-2.0-cp310-cp310-manylinux_2_17_x86_64.whl"),
        wheel("demo-2.0-cp311-cp311-win_amd64.whl"),
        wheel("demo-2.0-cp312-cp312-macosx_11_0_arm64.whl"),
        wheel("demo-2.0-cp38-abi3-manylinux_2_17_x86_64.whl"),
        wheel("demo-2.0-pp310-pypy310_pp73-manylinux_2_17_x86_64.whl"),
        wheel("demo-2.0-cp311-cp311-macosx_10_9_x86_64.macosx_11_0_arm64.whl"),
        wheel("demo-2.0.tar.gz", size=10_000),
        wheel("demo-3.0.dev1.tar.gz"),
        wheel("demo-0.5.win32.exe"),
        wheel("demo-0.5-py2.7-linux-x86_64.egg"),
    ),
    versions=("0.5", "1.0", "2.0rc1", "2.0", "3.0.dev1"),
)


def test_no_filters_keep_the_page_as_is() -> None:
    assert Filters.parse().apply(PAGE) is PAGE


def test_allow_with_specifiers_keeps_only_matching_versions_and_projects() -> None:
    filters = Filters.parse(allow=["demo>=2", "Other_Pkg"])
    assert filters.project_allowed("demo") and filters.project_allowed("other-pkg")
    assert not filters.project_allowed("third")
    kept = filters.apply(PAGE)
    assert file_versions(kept) == {"2.0", "3.0.dev1"}  # 2.0rc1 sorts below 2
    assert kept.versions == ("2.0", "3.0.dev1")
    # a plain name anywhere in the list allows every version
    assert Filters.parse(allow=["demo>=2", "demo"]).apply(PAGE).files == PAGE.files


def test_block_wins_over_allow() -> None:
    filters = Filters.parse(allow=["demo"], block=["Demo"])
    assert not filters.project_allowed("demo")


def test_exclude_platforms_drops_wheels_whose_every_platform_is_excluded() -> None:
    kept = names(Filters.parse(exclude_platforms=["windows", "macos"]).apply(PAGE))
    assert "demo-2.0-cp311-cp311-win_amd64.whl" not in kept
    assert "demo-2.0-cp312-cp312-macosx_11_0_arm64.whl" not in kept
    assert "demo-2.0-cp311-cp311-macosx_10_9_x86_64.macosx_11_0_arm64.whl" not in kept
    assert "demo-0.5.win32.exe" not in kept
    assert "demo-2.0-cp310-cp310-manylinux_2_17_x86_64.whl" in kept
    assert "demo-1.0-py3-none-any.whl" in kept and "demo-1.0.tar.gz" in kept
    linux = names(Filters.parse(exclude_platforms=["linux"]).apply(PAGE))
    assert "demo-0.5-py2.7-linux-x86_64.egg" not in linux
    assert "demo-2.0-cp38-abi3-manylinux_2_17_x86_64.whl" not in linux
    assert platform_family("freebsd_13_0_amd64") == "freebsd"


def test_python_versions_skip_other_cpython_wheels_but_keep_pure_abi3_and_sdists() -> None:
    kept = names(Filters.parse(python_versions=["3.10", "3.11"]).apply(PAGE))
    assert "demo-2.0-cp312-cp312-macosx_11_0_arm64.whl" not in kept
    for name in (
        "demo-2.0-cp310-cp310-manylinux_2_17_x86_64.whl",
        "demo-2.0-cp311-cp311-win_amd64.whl",
        "demo-2.0-cp38-abi3-manylinux_2_17_x86_64.whl",
        "demo-1.0-py3-none-any.whl",
        "demo-2.0.tar.gz",
        "demo-2.0-pp310-pypy310_pp73-manylinux_2_17_x86_64.whl",
    ):
        assert name in kept


def test_prereleases_false_drops_pre_and_dev_releases() -> None:
    kept = Filters.parse(prereleases=False).apply(PAGE)
    assert "demo-2.0rc1-py3-none-any.whl" not in names(kept)
    assert "demo-3.0.dev1.tar.gz" not in names(kept)
    assert kept.versions == ("0.5", "1.0", "2.0")


def test_keep_latest_keeps_the_newest_versions_that_still_have_files() -> None:
    kept = Filters.parse(keep_latest=2, prereleases=False).apply(PAGE)
    assert file_versions(kept) == {"1.0", "2.0"}
    assert kept.versions == ("1.0", "2.0")


def test_max_file_size_drops_larger_files() -> None:
    kept = names(Filters.parse(max_file_size=1000).apply(PAGE))
    assert "demo-2.0.tar.gz" not in kept and "demo-1.0.tar.gz" in kept


def test_quarantined_projects_list_no_files_whatever_the_filters() -> None:
    page = ProjectPage(name="demo", files=PAGE.files, project_status="quarantined")
    kept = Filters.parse().apply(page)
    assert kept.files == () and kept.project_status == "quarantined"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"allow": ["not a requirement !!"]},
        {"allow": ["demo @ https://example.com/x.whl"]},
        {"block": ["bad name!"]},
        {"exclude_platforms": ["beos"]},
        {"python_versions": ["3"]},
    ],
)
def test_bad_filter_entries_are_named_in_the_error(kwargs: dict[str, list[str]]) -> None:
    with pytest.raises(FilterError) as info:
        Filters.parse(**kwargs)  # type: ignore[arg-type]
    assert next(iter(kwargs.values()))[0] in str(info.value)


def test_fingerprint_changes_with_what_the_filters_keep() -> None:
    assert Filters.parse().fingerprint() == Filters.parse().fingerprint()
    assert Filters.parse(allow=["a"]).fingerprint() != Filters.parse().fingerprint()
    assert Filters.parse(keep_latest=1).fingerprint() != Filters.parse().fingerprint()


def test_json_api_is_cut_to_the_kept_files_and_versions() -> None:
    kept = Filters.parse(allow=["demo>=2"], prereleases=False).apply(PAGE)
    doc = {
        "info": {"name": "demo"},
        "urls": [{"filename": "demo-2.0.tar.gz"}],
        "releases": {
            "1.0": [{"filename": "demo-1.0.tar.gz"}],
            "2.0": [{"filename": "demo-2.0.tar.gz"}, {"filename": "demo-2.0-x.whl"}],
        },
    }
    out = json.loads(filter_json_api(json.dumps(doc).encode(), kept))
    assert out["releases"] == {"2.0": [{"filename": "demo-2.0.tar.gz"}]}
    assert out["urls"] == [{"filename": "demo-2.0.tar.gz"}]


# ------------------------------------------------------------------------ XML-RPC list


def test_project_list_is_parsed_incrementally_from_any_chunking() -> None:
    body = xmlrpc.client.dumps(
        ({"Demo.Pkg": 1, "b": 22, "bad name": 3, "c&d": 4},), methodresponse=True
    ).encode()
    for size in (1, 7, len(body)):
        parser = SerialListParser()
        pairs: list[tuple[str, int]] = []
        for i in range(0, len(body), size):
            pairs += parser.feed(body[i : i + size])
        pairs += parser.close()
        assert pairs == [("Demo.Pkg", 1), ("b", 22)]
        assert parser.skipped == 2


def test_project_list_faults_and_garbage_are_errors() -> None:
    fault = xmlrpc.client.dumps(xmlrpc.client.Fault(-32500, "disabled"), methodresponse=True)
    parser = SerialListParser()
    parser.feed(fault.encode())
    with pytest.raises(XmlRpcFault, match="disabled"):
        parser.close()
    for bad in (
        b"<methodResponse><params>",
        b"not xml",
        b'<!DOCTYPE x [<!ENTITY a "b">]><methodResponse/>',
        xmlrpc.client.dumps(({"a": "str"},), methodresponse=True).encode(),
    ):
        with pytest.raises(XmlRpcStreamError):
            p = SerialListParser()
            p.feed(bad)
            p.close()
