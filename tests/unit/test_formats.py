"""Dataset parsing and validation: every accepted format, every problem class."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import pytest

from rlhf_engine.data.formats import (
    MAX_LINE_BYTES,
    ChatExample,
    DatasetError,
    DialogueSeed,
    Issue,
    Message,
    PreferenceExample,
    PromptExample,
    load_jsonl,
    parse_jsonl,
)


def msg(role, content):
    return {"role": role, "content": content}


def jsonl(*records) -> bytes:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records).encode()


def openai_pref(history=None, chosen="Paris.", rejected="London."):
    return {"input": {"messages": history or [msg("user", "Capital of France?")]},
            "preferred_output": [msg("assistant", chosen)],
            "non_preferred_output": [msg("assistant", rejected)]}


GOOD = openai_pref()
S, U, A = (lambda c: Message("system", c)), (lambda c: Message("user", c)), (lambda c: Message("assistant", c))


def issues_of(data, **kw) -> list[tuple]:
    with pytest.raises(DatasetError) as exc:
        parse_jsonl(data, **kw)
    return [(i.line, i.field, i.code) for i in exc.value.issues]


# ---------------------------------------------------------------------------------------------
# Accepted formats -> canonical examples


def test_openai_preference_keeps_multi_turn_history_and_system():
    history = [msg("system", "Be brief."), msg("user", "Hi"), msg("assistant", "Hello!"),
               msg("user", "Capital of France?")]
    record = openai_pref(history)
    record["input"]["tools"] = []
    record["input"]["parallel_tool_calls"] = False
    parsed = parse_jsonl(jsonl(record))
    assert parsed.format == "preference" and parsed.num_examples == 1
    assert parsed.examples[0] == PreferenceExample(
        (S("Be brief."), U("Hi"), A("Hello!"), U("Capital of France?")), A("Paris."), A("London."))


def test_trl_standard_explicit_prompt_with_extra_keys():
    record = {"prompt": "2+2?", "chosen": "4", "rejected": "5", "id": "x1", "metadata": {},
              "score_chosen": 9.0, "score_rejected": 2.0}
    assert parse_jsonl(jsonl(record)).examples == [PreferenceExample((U("2+2?"),), A("4"), A("5"))]


def test_trl_conversational_explicit_prompt():
    record = {"prompt": [msg("system", "sys"), msg("user", "q")],
              "chosen": [msg("assistant", "good")], "rejected": [msg("assistant", "bad")]}
    assert parse_jsonl(jsonl(record)).examples == [
        PreferenceExample((S("sys"), U("q")), A("good"), A("bad"))]


def test_trl_implicit_prompt_is_split_off_the_shared_turns():
    shared = [msg("system", "sys"), msg("user", "a"), msg("assistant", "b"), msg("user", "c")]
    record = {"chosen": shared + [msg("assistant", "good")], "rejected": shared + [msg("assistant", "bad")]}
    assert parse_jsonl(jsonl(record)).examples == [
        PreferenceExample((S("sys"), U("a"), A("b"), U("c")), A("good"), A("bad"))]


def test_chat_format_and_ignored_keys():
    record = {"messages": [msg("system", "s"), {"role": "user", "content": "q", "name": "bob"},
                           msg("assistant", "r")], "tools": [], "parallel_tool_calls": True}
    parsed = parse_jsonl(jsonl(record))
    assert parsed.format == "chat"
    assert parsed.examples == [ChatExample((S("s"), U("q"), A("r")), trained=(2,))]


def test_chat_weights_choose_the_assistant_turns_that_carry_loss():
    turns = [msg("user", "q1"), dict(msg("assistant", "a1"), weight=0), msg("user", "q2"), msg("assistant", "a2"),
             msg("user", "q3"), dict(msg("assistant", "a3"), weight=1)]
    (example,) = parse_jsonl(jsonl({"messages": turns})).examples
    assert example.messages == (U("q1"), A("a1"), U("q2"), A("a2"), U("q3"), A("a3"))
    assert example.trained == (3, 5)  # weight 0 is left out; no weight means 1, as in OpenAI's format


def test_text_content_parts_are_joined():
    parts = [{"type": "text", "text": "Capital of "}, {"type": "text", "text": "France?"}]
    (example,) = parse_jsonl(jsonl(openai_pref([{"role": "user", "content": parts}]))).examples
    assert example.prompt == (U("Capital of France?"),)


def test_prompt_completion_pairs_are_chat_examples():
    parsed = parse_jsonl(jsonl({"prompt": "2+2=", "completion": "4"},
                               {"prompt": [msg("system", "s"), msg("user", "q")],
                                "completion": [msg("assistant", "a")]}))
    assert parsed.format == "chat"
    assert parsed.examples == [ChatExample((U("2+2="), A("4")), trained=(1,)),
                               ChatExample((S("s"), U("q"), A("a")), trained=(2,))]


def test_prompts_format_text_and_messages():
    data = jsonl({"prompt": "Tell a joke"},
                 {"prompt": [msg("system", "s"), msg("user", "q")], "info": {"target": 3}})
    parsed = parse_jsonl(data)
    assert parsed.format == "prompts"
    assert parsed.examples == [PromptExample((U("Tell a joke"),)),
                               PromptExample((S("s"), U("q")), {"target": 3})]
    assert parsed.examples[0].info == {}


def test_dialogue_seeds():
    data = jsonl({"user_turns": ["hi"]},
                 {"user_turns": ["hi", "and then?"], "system": "Be kind.", "info": {"secret": "cat"}})
    parsed = parse_jsonl(data)
    assert parsed.format == "dialogues"
    assert parsed.examples == [DialogueSeed(None, ("hi",)),
                               DialogueSeed("Be kind.", ("hi", "and then?"), {"secret": "cat"})]


def test_blank_lines_crlf_and_bom_are_tolerated():
    data = b"\xef\xbb\xbf" + jsonl(GOOD).replace(b"\n", b"\r\n") + b"\r\n\n   \n" + jsonl(GOOD) + b"\n"
    assert parse_jsonl(data).num_examples == 2
    assert parse_jsonl(data.decode("utf-8")).num_examples == 2


def test_expected_format_accepts_one_or_several_families():
    assert parse_jsonl(jsonl(GOOD), expected_format="preference").format == "preference"
    assert parse_jsonl(jsonl({"prompt": "q"}), expected_format=("prompts", "chat")).format == "prompts"
    with pytest.raises(ValueError):
        parse_jsonl(jsonl(GOOD), expected_format="pairs")


def test_load_jsonl_reads_a_file(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(jsonl(GOOD, GOOD))
    assert load_jsonl(path, expected_format="preference").num_examples == 2


def test_canonical_examples_are_frozen():
    example = parse_jsonl(jsonl(GOOD)).examples[0]
    with pytest.raises(AttributeError):
        example.chosen = A("x")


# ---------------------------------------------------------------------------------------------
# One test per problem class: exact line, field and code

BAD_CASES = {
    "invalid_json": (['{"prompt": "x"', ], (1, None, "invalid_json")),
    "not_an_object": ([GOOD, "[1, 2]"], (2, None, "not_an_object")),
    "missing_field": ([{"input": {"messages": [msg("user", "q")]}, "preferred_output": [msg("assistant", "a")]}],
                      (1, "non_preferred_output", "missing_field")),
    "missing_message_role": ([{"messages": [{"content": "q"}, msg("assistant", "a")]}],
                             (1, "messages[0].role", "missing_field")),
    "unrecognised_record": ([{"text": "hello"}], (1, None, "missing_field")),
    "unknown_field_openai": ([dict(GOOD, id=1)], (1, "id", "unknown_field")),
    "unknown_field_input": ([dict(GOOD, input={"messages": [msg("user", "q")], "temp": 1})],
                            (1, "input.temp", "unknown_field")),
    "unknown_field_trl": ([{"prompt": "q", "chosen": "a", "rejected": "b", "source": "web"}],
                          (1, "source", "unknown_field")),
    "unknown_field_message": ([openai_pref() | {"preferred_output": [dict(msg("assistant", "a"), weight=1)]}],
                              (1, "preferred_output[0].weight", "unknown_field")),
    "content_not_string": ([openai_pref(chosen=None)], (1, "preferred_output[0].content", "wrong_type")),
    "image_part": ([{"messages": [{"role": "user", "content": [{"type": "text", "text": "q"},
                                                               {"type": "image_url", "image_url": {"url": "x"}}]},
                                  msg("assistant", "a")]}], (1, "messages[0].content[1].type", "unsupported_content")),
    "empty_text_part": ([openai_pref([{"role": "user", "content": [{"type": "text", "text": " "}]}])],
                        (1, "input.messages[0].content[0].text", "empty_content")),
    "no_parts": ([openai_pref([{"role": "user", "content": []}])], (1, "input.messages[0].content", "empty_content")),
    "weight_not_0_or_1": ([{"messages": [msg("user", "q"), dict(msg("assistant", "a"), weight=0.5)]}],
                          (1, "messages[1].weight", "invalid_weight")),
    "weight_on_user": ([{"messages": [dict(msg("user", "q"), weight=1), msg("assistant", "a")]}],
                       (1, "messages[0].weight", "invalid_weight")),
    "every_weight_zero": ([{"messages": [msg("user", "q"), dict(msg("assistant", "a"), weight=0)]}],
                          (1, "messages", "no_trained_turn")),
    "tool_calls": ([{"messages": [msg("user", "q"), dict(msg("assistant", "a"), tool_calls=[])]}],
                   (1, "messages[1].tool_calls", "unsupported_tool_use")),
    "completion_not_string": ([{"prompt": "q", "completion": ["a"]}], (1, "completion", "wrong_type")),
    "completion_empty": ([{"prompt": "q", "completion": ""}], (1, "completion", "empty_content")),
    "completion_messages_not_assistant": ([{"prompt": [msg("user", "q")], "completion": [msg("user", "a")]}],
                                          (1, "completion[0].role", "invalid_role")),
    "messages_not_list": ([{"messages": "hi"}], (1, "messages", "wrong_type")),
    "input_not_object": ([dict(GOOD, input=[msg("user", "q")])], (1, "input", "wrong_type")),
    "two_preferred": ([dict(GOOD, preferred_output=[msg("assistant", "a"), msg("assistant", "b")])],
                      (1, "preferred_output", "wrong_type")),
    "trl_mixed_types": ([{"prompt": "q", "chosen": [msg("assistant", "a")], "rejected": "b"}],
                        (1, "chosen", "wrong_type")),
    "info_not_object": ([{"prompt": "q", "info": "x"}], (1, "info", "wrong_type")),
    "role_not_string": ([{"messages": [{"role": ["user"], "content": "q"}, msg("assistant", "a")]}],
                        (1, "messages[0].role", "wrong_type")),
    "message_not_object": ([openai_pref(["hello"])], (1, "input.messages[0]", "wrong_type")),
    "system_not_string": ([{"user_turns": ["hi"], "system": 3}], (1, "system", "wrong_type")),
    "user_turns_not_list": ([{"user_turns": "hi"}], (1, "user_turns", "wrong_type")),
    "unknown_role": ([{"messages": [msg("user", "q"), msg("tool", "{}"), msg("assistant", "a")]}],
                     (1, "messages[1].role", "invalid_role")),
    "preferred_not_assistant": ([openai_pref() | {"preferred_output": [msg("user", "a")]}],
                                (1, "preferred_output[0].role", "invalid_role")),
    "system_not_first": ([{"messages": [msg("user", "q"), msg("system", "s"), msg("assistant", "a")]}],
                         (1, "messages[1].role", "invalid_role")),
    "assistant_where_user_required": ([openai_pref([msg("assistant", "hi"), msg("user", "q")])],
                                      (1, "input.messages[0].role", "invalid_role")),
    "empty_content": ([openai_pref(chosen="")], (1, "preferred_output[0].content", "empty_content")),
    "whitespace_prompt": ([{"prompt": " \n\t", "chosen": "a", "rejected": "b"}], (1, "prompt", "empty_content")),
    "empty_user_turn": ([{"user_turns": ["hi", " "]}], (1, "user_turns[1]", "empty_content")),
    "no_user_turns": ([{"user_turns": []}], (1, "user_turns", "empty_content")),
    "no_final_assistant": ([{"messages": [msg("user", "q"), msg("assistant", "a"), msg("user", "q2")]}],
                           (1, "messages[2].role", "no_final_assistant")),
    "implicit_no_final_assistant": ([{"chosen": [msg("user", "q")], "rejected": [msg("user", "q")]}],
                                    (1, "chosen[0].role", "no_final_assistant")),
    "prompt_must_end_with_user": ([openai_pref([msg("user", "q"), msg("assistant", "a")])],
                                  (1, "input.messages[1].role", "prompt_must_end_with_user")),
    "prompt_only_system": ([{"prompt": [msg("system", "s")]}], (1, "prompt[0].role", "prompt_must_end_with_user")),
    "empty_prompt_list": ([{"prompt": []}], (1, "prompt", "prompt_must_end_with_user")),
    "identical_completions": ([GOOD, openai_pref(chosen="Same", rejected="Same ")],
                              (2, "non_preferred_output[0].content", "identical_completions")),
    "identical_trl": ([{"prompt": "q", "chosen": "x", "rejected": "x"}], (1, "rejected", "identical_completions")),
    "implicit_prompt_mismatch": ([{"chosen": [msg("user", "q"), msg("assistant", "a")],
                                   "rejected": [msg("user", "other"), msg("assistant", "b")]}],
                                 (1, "rejected[0].content", "prompt_mismatch")),
    "implicit_prompt_length": ([{"chosen": [msg("user", "q"), msg("assistant", "a")],
                                 "rejected": [msg("user", "q"), msg("assistant", "x"), msg("user", "q"),
                                              msg("assistant", "b")]}],
                               (1, "rejected", "prompt_mismatch")),
    "implicit_prompt_needs_messages": ([{"chosen": "a", "rejected": "b"}],
                                       (1, "prompt", "implicit_prompt_needs_messages")),
    "mixed_formats": ([GOOD, "", {"messages": [msg("user", "q"), msg("assistant", "a")]}],
                      (3, None, "mixed_formats")),
}


@pytest.mark.parametrize("records, expected", BAD_CASES.values(), ids=BAD_CASES.keys())
def test_problem_is_reported_at_its_line_and_field(records, expected):
    assert issues_of(jsonl(*records)) == [expected]


def test_wrong_format_names_what_was_expected():
    with pytest.raises(DatasetError) as exc:
        parse_jsonl(jsonl({"prompt": "q"}), expected_format="preference")
    assert [(i.line, i.field, i.code) for i in exc.value.issues] == [(1, None, "wrong_format")]
    assert "expected a preference dataset" in str(exc.value)


def test_invalid_encoding_reports_the_line_of_the_bad_byte():
    data = jsonl(GOOD, GOOD) + b"\n" + b'{"prompt": "caf\xe9"}' + b"\n" + jsonl(GOOD)
    assert issues_of(data) == [(3, None, "invalid_encoding")]


def test_unpaired_surrogate_escape_is_an_encoding_issue():
    assert issues_of(jsonl(GOOD, '{"prompt": "x\\ud800", "chosen": "a", "rejected": "b"}')) == [
        (2, None, "invalid_encoding")]
    paired = '{"prompt": "x\\ud83d\\ude00", "chosen": "a", "rejected": "b"}'  # an emoji: fine
    assert parse_jsonl(jsonl(paired)).examples[0].prompt == (U("x\U0001F600"),)


@pytest.mark.parametrize("data", [b"", b"\n \n\r\n", b"\xef\xbb\xbf", ""])
def test_empty_file(data):
    assert issues_of(data) == [(None, None, "empty_file")]


def test_too_many_examples():
    data = jsonl(GOOD, "", GOOD, GOOD, GOOD)
    assert parse_jsonl(data, max_examples=4).num_examples == 4
    assert issues_of(data, max_examples=2) == [(4, None, "too_many_examples")]


def test_line_too_long():
    long_line = json.dumps({"prompt": "x" * (MAX_LINE_BYTES + 1)})
    assert issues_of(jsonl(GOOD, long_line)) == [(2, None, "line_too_long")]
    # Under the limit in characters but over it in bytes: the limit is in bytes.
    wide = json.dumps({"prompt": "é" * (MAX_LINE_BYTES // 2 + 1)}, ensure_ascii=False)
    assert issues_of(jsonl(wide)) == [(1, None, "line_too_long")]


def test_deeply_nested_json_is_invalid_not_a_crash():
    assert issues_of("[" * 100_000) == [(1, None, "invalid_json")]


# ---------------------------------------------------------------------------------------------
# Several issues, the cap, and the error object


def test_several_issues_in_one_file_are_all_reported():
    data = jsonl(GOOD, "not json", openai_pref(chosen=""), GOOD, {"prompt": "q"}, [1])
    assert issues_of(data) == [(2, None, "invalid_json"),
                               (3, "preferred_output[0].content", "empty_content"),
                               (5, None, "mixed_formats"),
                               (6, None, "not_an_object")]


def test_max_issues_caps_the_scan():
    data = jsonl(*(["{"] * 50))
    assert len(issues_of(data)) == 20
    assert issues_of(data, max_issues=3) == [(1, None, "invalid_json"), (2, None, "invalid_json"),
                                             (3, None, "invalid_json")]


def test_error_message_describes_the_first_issue():
    with pytest.raises(DatasetError) as exc:
        parse_jsonl(jsonl(GOOD, GOOD, openai_pref(chosen=" "), "{"))
    assert str(exc.value) == "line 3, field preferred_output[0].content: content is empty"
    assert isinstance(exc.value, ValueError) and len(exc.value.issues) == 2
    assert str(Issue(None, None, "empty_file", "the file holds no examples")) == "the file holds no examples"


def test_error_survives_pickling():
    with pytest.raises(DatasetError) as exc:
        parse_jsonl("{")
    copy = pickle.loads(pickle.dumps(exc.value))
    assert copy.issues == exc.value.issues and str(copy) == str(exc.value)


def test_module_is_pure_python():
    code = ("import sys, rlhf_engine.data.formats; "
            "assert not {'torch', 'transformers', 'numpy'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
