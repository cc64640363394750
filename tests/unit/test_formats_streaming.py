"""`scan_jsonl_file`, the streaming validation of uploads, finds exactly what `parse_jsonl` finds
(the same issues, format and count) on every case of test_formats.py, and a line over
MAX_LINE_BYTES is reported without being read whole."""

from __future__ import annotations

import json

import pytest

from rlhf_engine.data import formats
from rlhf_engine.data.formats import DatasetError, parse_jsonl, scan_jsonl_file
from tests.unit.test_formats import BAD_CASES, GOOD, jsonl, openai_pref

EXTRA = {
    "several": jsonl(GOOD, "not json", openai_pref(chosen=""), GOOD, {"prompt": "q"}, [1]),
    "bad_utf8": jsonl(GOOD, GOOD) + b"\n" + b'{"prompt": "caf\xe9"}' + b"\n" + jsonl(GOOD),
    "bom_crlf_blank": b"\xef\xbb\xbf" + jsonl(GOOD).replace(b"\n", b"\r\n") + b"\n \n" + jsonl(GOOD),
    "no_final_newline": jsonl(GOOD, GOOD).rstrip(b"\n"),
    "empty": b"\n \n\r\n",
    "too_many": jsonl(GOOD, "", GOOD, GOOD, GOOD),
    "capped": jsonl(*(["{"] * 50)),
    "long_line": jsonl(GOOD, json.dumps({"prompt": "x" * (formats.MAX_LINE_BYTES + 1)}), GOOD),
}
CASES = {**{name: jsonl(*records) for name, (records, _) in BAD_CASES.items()}, **EXTRA}


def outcome(run):
    try:
        result = run()
    except DatasetError as err:
        return [(i.line, i.field, i.code, i.message) for i in err.issues]
    return (result.format, result.num_examples)


@pytest.mark.parametrize("data", CASES.values(), ids=CASES.keys())
def test_streaming_scan_matches_parse_jsonl(data, tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(data)
    for kw in ({}, {"max_examples": 2}, {"max_issues": 3}):
        assert outcome(lambda kw=kw: scan_jsonl_file(path, **kw)) == outcome(lambda kw=kw: parse_jsonl(data, **kw))
        assert outcome(lambda kw=kw: formats.load_jsonl(path, **kw)) == outcome(lambda kw=kw: parse_jsonl(data, **kw))


def test_a_long_line_is_never_read_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "MAX_LINE_BYTES", 1000)
    path = tmp_path / "d.jsonl"
    path.write_bytes(jsonl(GOOD) + b'\n{"prompt": "' + b"x" * 50_000 + b'"}\n' + jsonl(GOOD))
    longest = []
    real_open = open

    class Watched:
        def __init__(self, f):
            self.f = f

        def readline(self, size=-1):
            line = self.f.readline(size)
            longest.append(len(line))
            return line

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr("builtins.open", lambda *a, **k: Watched(real_open(*a, **k)))
    with pytest.raises(DatasetError) as err:
        scan_jsonl_file(path)
    assert [(i.line, i.code) for i in err.value.issues] == [(2, "line_too_long")]
    assert max(longest) <= 1024 * 1024  # read in bounded pieces, skipped to its end
