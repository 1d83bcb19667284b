"""The OpenAI chat JSONL export: the reference format, seeded draws, and line-by-line validation."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from triplesmith.chains.prompt import SYSTEM_PROMPT, answer_text
from triplesmith.cli.app import app
from triplesmith.data.registry import load_dataset
from triplesmith.errors import DatasetError
from triplesmith.training.openai_export import (
    export_openai,
    validate_openai_file,
    write_openai_jsonl,
)

GOOD = json.dumps(
    {
        "messages": [
            {"role": "user", "content": "Extract triplets from the following sentence:\n\nA b c."},
            {"role": "assistant", "content": '[{"s": "A", "relation": "b", "object": "c"}]'},
        ]
    }
)


def _chat(*messages: tuple[str, str]) -> str:
    return json.dumps({"messages": [{"role": r, "content": c} for r, c in messages]})


@pytest.fixture(scope="module")
def train_examples():
    return load_dataset("sample:train")


def test_export_writes_the_reference_format_exactly(train_examples, tmp_path: Path):
    by_sentence = {e.sentence: e for e in train_examples}
    records = export_openai(train_examples, n=12, seed=3, system=False)
    out = tmp_path / "train.jsonl"
    write_openai_jsonl(out, records)

    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 12
    for line in lines:
        record = json.loads(line)
        assert list(record) == ["messages"]
        user, assistant = record["messages"]
        prefix = "Extract triplets from the following sentence:\n\n"
        assert user["role"] == "user" and user["content"].startswith(prefix)
        example = by_sentence[user["content"].removeprefix(prefix)]
        assert assistant == {"role": "assistant", "content": answer_text(example.triples)}
        assert json.loads(assistant["content"]) == [t.model_dump() for t in example.triples]
    report = validate_openai_file(out)
    assert (report.examples, report.with_system, report.warnings) == (12, 0, [])
    assert report.triples == sum(
        len(json.loads(json.loads(x)["messages"][1]["content"])) for x in lines
    )


def test_export_with_system_puts_the_system_prompt_first(train_examples):
    records = export_openai(train_examples, n=3, seed=0, system=True)
    assert [m["role"] for m in records[0]["messages"]] == ["system", "user", "assistant"]
    assert records[0]["messages"][0]["content"] == SYSTEM_PROMPT


def test_export_draw_is_seeded(train_examples):
    first = export_openai(train_examples, n=10, seed=7, system=False)
    assert export_openai(train_examples, n=10, seed=7, system=False) == first
    assert export_openai(train_examples, n=10, seed=8, system=False) != first


def test_export_more_than_the_dataset_holds_is_a_clear_error(train_examples):
    usable = sum(1 for e in train_examples if e.triples)
    with pytest.raises(
        DatasetError, match=rf"asked for 500 examples .* only {usable} .*--n {usable}"
    ):
        export_openai(train_examples, n=500, seed=0, system=False)
    with pytest.raises(DatasetError, match="empty"):
        export_openai([], n=5, seed=0, system=False)


def test_cli_export_writes_a_valid_file_from_the_train_split(tmp_path: Path):
    out = tmp_path / "train.jsonl"
    result = CliRunner().invoke(
        app, ["openai", "export", "--dataset", "sample", "--n", "20", "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["examples"] == 20 and report["warnings"] == []
    test_sentences = {e.sentence for e in load_dataset("sample:test")}
    users = [json.loads(line)["messages"][0]["content"] for line in out.read_text().splitlines()]
    assert not any(u.split("\n\n", 1)[1] in test_sentences for u in users)


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"prompt": "x", "completion": "y"}', '"messages" is required'),
        (_chat(("user", "hi")), "last message must be the assistant"),
        (_chat(("tool", "hi"), ("assistant", "[]")), "messages.0.role"),
        (_chat(("user", "  "), ("assistant", "[]")), "messages.0.content"),
        (_chat(("user", "hi"), ("assistant", "[]"), ("user", "more")), "last message"),
        (_chat(("user", "hi"), ("system", "x"), ("assistant", "[]")), "system message"),
        (_chat(("user", "hi"), ("assistant", "s, r, o")), "assistant answer must be a JSON list"),
        (_chat(("user", "hi"), ("assistant", '[{"s": "a", "relation": "b"}]')), "JSON list"),
        (
            _chat(
                ("user", "hi"), ("assistant", '[{"subject": "a", "relation": "b", "object": "c"}]')
            ),
            "JSON list",
        ),
        (
            _chat(("user", "hi"), ("assistant", '{"s": "a", "relation": "b", "object": "c"}')),
            "list",
        ),
    ],
)
def test_bad_line_is_reported_with_file_and_line(tmp_path: Path, bad_line: str, expected: str):
    path = tmp_path / "train.jsonl"
    path.write_text(f"{GOOD}\n{bad_line}\n{GOOD}\n", encoding="utf-8")
    with pytest.raises(DatasetError) as caught:
        validate_openai_file(path)
    message = str(caught.value)
    assert f"{path}:2: " in message and expected in message
    assert f"{path}:1:" not in message and f"{path}:3:" not in message


def test_every_bad_line_is_listed(tmp_path: Path):
    path = tmp_path / "train.jsonl"
    path.write_text(f"{GOOD}\n\n{GOOD}\nnope\n{GOOD}\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="2 invalid line") as caught:
        validate_openai_file(path)
    assert f"{path}:2: blank line" in str(caught.value)
    assert f"{path}:4: invalid JSON" in str(caught.value)


def test_empty_file_and_undecodable_bytes_are_refused(tmp_path: Path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="no examples"):
        validate_openai_file(empty)
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(GOOD.encode() + b"\n\xff\xfe\n")
    with pytest.raises(DatasetError, match=r"binary.jsonl:2: undecodable"):
        validate_openai_file(binary)


def test_fewer_than_openai_minimum_warns_or_refuses(tmp_path: Path):
    path = tmp_path / "small.jsonl"
    path.write_text((GOOD + "\n") * 9, encoding="utf-8")
    report = validate_openai_file(path)
    assert report.examples == 9 and "at least 10" in report.warnings[0]
    with pytest.raises(DatasetError, match="at least 10"):
        validate_openai_file(path, require_minimum=True)
    path.write_text((GOOD + "\n") * 10, encoding="utf-8")
    assert validate_openai_file(path, require_minimum=True).warnings == []
