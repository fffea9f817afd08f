from __future__ import annotations

import io
import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qdone.batchfile import BatchLine, batch_spans, parse_lines, read_sources, split_batches
from qdone.errors import BatchInputError, UsageError


def parse(text: bytes) -> list[BatchLine]:
    return list(parse_lines("jobs.txt", io.BytesIO(text)))


def test_splits_at_first_run_of_whitespace_and_keeps_the_command_as_written() -> None:
    jobs = parse(b"q1 echo  'a   b'\nq2\t\t  ls -l  \r\n")
    assert [(j.queue, j.command, j.lineno) for j in jobs] == [
        ("q1", "echo  'a   b'", 1),
        ("q2", "ls -l  ", 2),
    ]


def test_skips_blank_lines_and_comments() -> None:
    jobs = parse(b"\n   \n# a comment\nq echo 1\n  # indented comment\n")
    assert [(j.queue, j.command, j.lineno) for j in jobs] == [("q", "echo 1", 4)]


def test_line_without_command_names_file_and_line() -> None:
    with pytest.raises(BatchInputError, match=r"jobs\.txt:2: no command after queue name 'lonely'"):
        parse(b"q echo 1\nlonely\n")


def test_invalid_utf8_names_file_and_line() -> None:
    with pytest.raises(BatchInputError, match=r"jobs\.txt:1: not valid UTF-8"):
        parse(b"q echo \xff\xfe\n")


def test_reads_files_in_order_and_stdin(tmp_path: Path) -> None:
    a = tmp_path / "a.txt"
    b = tmp_path / "b.txt"
    a.write_bytes(b"q one\n")
    b.write_bytes(b"q two\n")
    jobs = read_sources([str(b), "-", str(a)], stdin=io.BytesIO(b"q stdin\n"))
    assert [(j.source, j.command) for j in jobs] == [
        (str(b), "two"),
        ("<stdin>", "stdin"),
        (str(a), "one"),
    ]


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"cannot read .*nope\.txt: No such file"):
        read_sources([str(tmp_path / "nope.txt")])


@given(
    sizes=st.lists(st.integers(min_value=1, max_value=400), max_size=200),
    max_count=st.integers(min_value=1, max_value=10),
    max_bytes=st.integers(min_value=400, max_value=2000),
)
def test_split_batches_keeps_every_item_in_order_within_limits(
    sizes: list[int], max_count: int, max_bytes: int
) -> None:
    items = list(enumerate(sizes))
    batches = split_batches(items, lambda item: item[1], max_count, max_bytes)
    assert [item for batch in batches for item in batch] == items
    for batch in batches:
        assert 1 <= len(batch) <= max_count
        assert sum(size for _, size in batch) <= max_bytes


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=400), max_size=200),
    max_count=st.integers(min_value=1, max_value=10),
    max_bytes=st.integers(min_value=400, max_value=4000),
)
def test_batch_spans_close_a_batch_only_when_the_next_item_does_not_fit(
    sizes: list[int], max_count: int, max_bytes: int
) -> None:
    spans = batch_spans(sizes, max_count, max_bytes)
    assert [i for span in spans for i in span] == list(range(len(sizes)))
    for span, following in itertools.pairwise(spans):
        used = sum(sizes[i] for i in span)
        assert len(span) == max_count or used + sizes[following.start] > max_bytes


@given(
    lines=st.lists(
        st.tuples(
            st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True),
            st.text(
                alphabet=st.characters(blacklist_categories=["Cs", "Zl", "Zp", "Cc"]),
                min_size=1,
                max_size=40,
            ).filter(lambda s: s.strip() != "" and not s[0].isspace()),
        ),
        max_size=50,
    )
)
def test_parser_loses_and_reorders_nothing(lines: list[tuple[str, str]]) -> None:
    text = "".join(f"{queue} {command}\n" for queue, command in lines).encode()
    jobs = parse(text)
    assert [(j.queue, j.command) for j in jobs] == lines
