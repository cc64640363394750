"""Parse and validate JSONL training datasets into canonical examples.

Four format families are accepted, detected per line from the keys of each record:

- ``preference``: the OpenAI preference format (``input.messages``, ``preferred_output``,
  ``non_preferred_output``) and TRL's standard and conversational formats (``prompt``/``chosen``/
  ``rejected``, or implicit-prompt ``chosen``/``rejected`` message lists whose shared leading
  turns are the prompt) -> :class:`PreferenceExample`;
- ``chat``: the OpenAI supervised format ``{"messages": [..., assistant]}`` -> :class:`ChatExample`;
- ``prompts``: ``{"prompt": text | [messages], "info"?}`` -> :class:`PromptExample` (REBEL);
- ``dialogues``: ``{"user_turns": [...], "system"?, "info"?}`` -> :class:`DialogueSeed` (REFUEL).

Every line of a file must belong to one family. Problems are collected as :class:`Issue` objects
with a 1-based line number, a JSON path and a stable code, and raised together in a
:class:`DatasetError`. :func:`parse_jsonl` takes the data in memory and returns the examples;
:func:`scan_jsonl_file` reads a file from disk one line at a time (at most ``MAX_LINE_BYTES`` in
memory) and returns only the format and the count, with the same issues: the API validates
uploads that way, so a file's size never becomes the API's memory. Stdlib only: the API process
imports this to validate uploads, so it must stay free of torch and fast (one ``json.loads`` and
plain type checks per line).

Whether an example fits the job's ``max_length`` depends on the tokenizer and is checked by the
engine, not here.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from rlhf_engine.data.examples import (
    ChatExample,
    DialogueSeed,
    Message,
    PreferenceExample,
    PromptExample,
)
from rlhf_engine.data.validation import SHAPES, RecordError, detect

FORMATS = ("preference", "chat", "prompts", "dialogues")
MAX_LINE_BYTES = 16 * 1024 * 1024
_BOM = "\ufeff"
# A JSON escape for half a UTF-16 surrogate pair; json.loads lets an unpaired one through.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem in a dataset. `line` is 1-based (None for the whole file); `field` is a JSON
    path like ``preferred_output[0].content`` (None for the whole line)."""

    line: int | None
    field: str | None
    code: str
    message: str

    def __str__(self) -> str:
        where = [f"line {self.line}"] if self.line is not None else []
        if self.field is not None:
            where.append(f"field {self.field}")
        return f"{', '.join(where)}: {self.message}" if where else self.message


class DatasetError(ValueError):
    """A dataset failed validation. ``str(err)`` describes the first issue; ``issues`` has all
    that were found (up to the caller's ``max_issues``)."""

    def __init__(self, issues: list[Issue]):
        super().__init__(str(issues[0]))
        self.issues = issues

    def __reduce__(self):  # survive pickling (e.g. through a task queue) with its issues intact
        return type(self), (self.issues,)


@dataclass
class ParsedDataset:
    """A valid dataset: its format family and one canonical example per non-blank line."""

    format: str
    examples: list = field(default_factory=list)

    @property
    def num_examples(self) -> int:
        return len(self.examples)


def parse_jsonl(data: bytes | str, *, expected_format: str | Iterable[str] | None = None,
                max_examples: int | None = None, max_issues: int = 20) -> ParsedDataset:
    """Parse a JSONL dataset, or raise :class:`DatasetError` listing its problems.

    Scanning goes on after a bad line so that the user sees several problems at once, up to
    ``max_issues``. ``expected_format`` is a family name (or several, e.g. a method's entry in
    ``spec.ACCEPTED_FORMATS``); lines of another family are reported as ``wrong_format``.
    More than ``max_examples`` non-blank lines is an error (``too_many_examples``).
    """
    scan = _scan(_numbered_lines(data), expected_format, max_examples, max_issues, keep=True)
    return ParsedDataset(scan.family, scan.examples)


@dataclass(frozen=True)
class DatasetSummary:
    """A valid dataset's format family and example count, without its examples."""

    format: str
    num_examples: int


def scan_jsonl_file(path: str | os.PathLike, *, expected_format: str | Iterable[str] | None = None,
                    max_examples: int | None = None, max_issues: int = 20) -> DatasetSummary:
    """Validate a JSONL file as :func:`parse_jsonl` would (same issues, same arguments), reading
    it line by line and keeping no examples: memory stays at one line whatever the file's size."""
    with open(path, "rb") as f:
        scan = _scan(_numbered_file_lines(f), expected_format, max_examples, max_issues, keep=False)
    return DatasetSummary(scan.family, scan.seen)


def load_jsonl(path: str | os.PathLike, *, expected_format: str | Iterable[str] | None = None,
               max_examples: int | None = None, max_issues: int = 20) -> ParsedDataset:
    """:func:`parse_jsonl` of a file, read line by line (the whole file is never one buffer)."""
    with open(path, "rb") as f:
        scan = _scan(_numbered_file_lines(f), expected_format, max_examples, max_issues, keep=True)
    return ParsedDataset(scan.family, scan.examples)


def _scan(lines: Iterator[tuple[int, str | Issue]], expected_format, max_examples: int | None,
          max_issues: int, keep: bool) -> _Scan:
    """One pass over numbered lines; raises DatasetError, else returns the finished scan."""
    wanted = _wanted(expected_format)
    if max_issues < 1:
        raise ValueError("max_issues must be at least 1")
    scan = _Scan(wanted, keep)
    for lineno, line in lines:
        if isinstance(line, Issue):
            scan.issues.append(line)
            # A line too long to read from a file still counts (parse_jsonl reads it, then refuses).
            scan.seen += line.code == "line_too_long"
        elif not line or line.isspace():
            continue
        elif max_examples is not None and scan.seen >= max_examples:
            scan.issues.append(Issue(lineno, None, "too_many_examples",
                                     f"more than the allowed {max_examples} examples"))
            break
        else:
            scan.line(lineno, line)
        if len(scan.issues) >= max_issues:
            break
    if scan.issues:
        raise DatasetError(scan.issues)
    if not scan.seen:
        raise DatasetError([Issue(None, None, "empty_file", "the file holds no examples")])
    return scan


class _Scan:
    """The state of one pass over a file: the examples so far, the issues, and the family."""

    def __init__(self, wanted: frozenset[str] | None, keep: bool = True):
        self.wanted, self.keep = wanted, keep
        self.examples: list = []  # only when keeping them
        self.issues: list[Issue] = []
        self.seen = 0  # non-blank lines
        self.family: str | None = None  # fixed by the first line whose shape is recognised
        self.family_line = 0

    def line(self, lineno: int, line: str) -> None:
        self.seen += 1
        try:
            obj = _decode(line)
            family, convert = SHAPES[detect(obj)]
            self._check_family(family, lineno)
            example = convert(obj)  # converting is part of validating: it may raise
            if self.keep:
                self.examples.append(example)
        except RecordError as err:
            self.issues.append(Issue(lineno, err.field, err.code, err.message))

    def _check_family(self, family: str, lineno: int) -> None:
        if self.wanted is not None and family not in self.wanted:
            expected = " or ".join(sorted(self.wanted))
            raise RecordError(None, "wrong_format",
                              f"expected a {expected} dataset, but this line is a {family} example")
        if self.family is None:
            self.family, self.family_line = family, lineno
        elif family != self.family:
            raise RecordError(None, "mixed_formats",
                              f"this line is a {family} example but line {self.family_line} is "
                              f"{self.family}; all lines must be in one format")


def _wanted(expected: str | Iterable[str] | None) -> frozenset[str] | None:
    if expected is None:
        return None
    wanted = frozenset((expected,) if isinstance(expected, str) else expected)
    unknown = wanted.difference(FORMATS)
    if not wanted or unknown:
        raise ValueError(f"unknown expected_format {sorted(unknown)}; choose from {FORMATS}")
    return wanted


def _decode(line: str) -> dict:
    """One line of text -> a JSON object, with the line-level problems raised as RecordError."""
    # Characters are 1 to 4 bytes: only a line that might be too long is worth encoding.
    if len(line) * 4 > MAX_LINE_BYTES and len(line.encode("utf-8", "surrogatepass")) > MAX_LINE_BYTES:
        raise RecordError(None, "line_too_long", f"line is longer than {MAX_LINE_BYTES} bytes")
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise RecordError(None, "invalid_json", f"invalid JSON: {err.msg} (column {err.colno})") from None
    except RecursionError:
        raise RecordError(None, "invalid_json", "invalid JSON: nested too deeply") from None
    if type(obj) is not dict:
        raise RecordError(None, "not_an_object", "each line must be a JSON object")
    if "\\u" in line and _SURROGATE_ESCAPE.search(line):
        _reject_lone_surrogates(obj)
    return obj


def _reject_lone_surrogates(obj: dict) -> None:
    """An unpaired surrogate escape parses but cannot be encoded, so the tokenizer would fail
    on it mid-training; paired ones were already joined into one character by json.loads."""
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise RecordError(None, "invalid_encoding",
                          "line holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff)") from None


def _numbered_lines(data: bytes | str) -> Iterator[tuple[int, str | Issue]]:
    """Yield (1-based line number, text) for every line; an :class:`Issue` in place of the
    text for a line that is not valid UTF-8. A leading byte-order mark is dropped."""
    if isinstance(data, str):
        yield from enumerate(data.removeprefix(_BOM).split("\n"), 1)
        return
    try:
        # Decoding the whole buffer at once is far faster than per line; per-line decoding is
        # only the fallback that finds every undecodable line.
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        yield from _numbered_lines_lenient(data)
        return
    yield from enumerate(text.removeprefix(_BOM).split("\n"), 1)


def _numbered_lines_lenient(data: bytes) -> Iterator[tuple[int, str | Issue]]:
    data = data.removeprefix(_BOM.encode("utf-8"))
    for lineno, raw in enumerate(data.split(b"\n"), 1):
        yield lineno, _decode_line(lineno, raw)


def _numbered_file_lines(f: BinaryIO) -> Iterator[tuple[int, str | Issue]]:
    """As :func:`_numbered_lines`, from a binary file, holding at most one line (of up to
    ``MAX_LINE_BYTES``) at a time; a longer line is skipped unread and reported."""
    lineno = 0
    while raw := f.readline(MAX_LINE_BYTES + 1):
        lineno += 1
        if lineno == 1:
            raw = raw.removeprefix(_BOM.encode("utf-8"))
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while (rest := f.readline(1024 * 1024)) and not rest.endswith(b"\n"):
                pass
            yield lineno, Issue(lineno, None, "line_too_long", f"line is longer than {MAX_LINE_BYTES} bytes")
            continue
        yield lineno, _decode_line(lineno, raw.removesuffix(b"\n"))


def _decode_line(lineno: int, raw: bytes) -> str | Issue:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return Issue(lineno, None, "invalid_encoding", f"line is not valid UTF-8 (byte 0x{raw[err.start]:02x} "
                                                       f"at byte {err.start + 1} of the line)")


__all__ = [
    "FORMATS", "MAX_LINE_BYTES", "ChatExample", "DatasetError", "DialogueSeed", "Issue", "Message",
    "DatasetSummary", "ParsedDataset", "PreferenceExample", "PromptExample", "load_jsonl", "parse_jsonl",
    "scan_jsonl_file",
]
