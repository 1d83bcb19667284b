"""report.html for a browser: the verdict first, chains by readable name, tables that fit,
each chain's scores linked to its examples; precision shown with the answers it is over."""

import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_experiments import EXAMPLES, OracleChatModel, gold_answer, half_right

from triplesmith.chains.registry import register_chat_model
from triplesmith.experiments.compare import build_comparison, compare
from triplesmith.experiments.report import (
    chain_name,
    chain_names,
    render_html,
    render_markdown,
    score_table,
    write_report,
)
from triplesmith.experiments.report_tables import WITH_TRIPLES
from triplesmith.experiments.seeds import mean_of_seeds
from triplesmith.training.manifest import AdapterManifest, write_manifest
from triplesmith.verdict import verdict_lines

NONE, HALF, ALL = "zero-shot:html-none", "zero-shot:html-half", "zero-shot:html-all"
XSS = '<script>alert("x")</script>'
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """Three chains on six sentences: one answers nothing, one half right, one all right."""
    register_chat_model("html-none", OracleChatModel(answers={}, default="[]"))
    half_right("html-half")
    answers = {e.sentence: gold_answer(e) for e in EXAMPLES}
    answers[EXAMPLES[0].sentence] = json.dumps([{"s": XSS, "relation": "is", "object": "x"}])
    register_chat_model("html-all", OracleChatModel(answers=answers))
    store = tmp_path_factory.mktemp("store") / "s.sqlite"
    return compare([NONE, HALF, ALL], EXAMPLES, "triple-f1,format", store=store, upload=False)


@pytest.fixture(scope="module")
def verdict(result) -> str:  # noqa: ANN001
    return "\n".join(verdict_lines(result, HALF, ALL, whole_carb_test=False))


class Page(HTMLParser):
    """What the tests read from a page: ids, in-page links, row labels with their titles."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.links: list[str] = []
        self.row_labels: list[tuple[str, str]] = []  # (visible text, title)
        self.first_in_body: tuple[str, dict] | None = None
        self._body = False
        self._row: list[str] | None = None
        self._title = ""
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        found = dict(attrs)
        if self._body and self.first_in_body is None:
            self.first_in_body = (tag, found)
        self._body = self._body or tag == "body"
        if "id" in found:
            self.ids.append(found["id"])
        if tag == "a" and found.get("href", "").startswith("#"):
            self.links.append(found["href"][1:])
        if tag == "th" and found.get("scope") == "row":
            self._row, self._title = [], found.get("title", "")

    def handle_data(self, data: str) -> None:
        if self._row is not None:
            self._row.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "th" and self._row is not None:
            self.row_labels.append(("".join(self._row).strip(), self._title))
            self._row = None


def test_the_page_opens_with_the_verdict(result, verdict: str) -> None:  # noqa: ANN001
    page = Page(render_html(result, verdict=verdict))
    assert page.first_in_body == ("section", {"class": "verdict", "id": "verdict"})
    text = render_html(result, verdict=verdict)
    body = text[text.index("<body>") :]
    assert body.index("Prompt or fine-tune?") < body.index("Chain comparison on")
    # The verdict's Markdown table is an HTML table in its own scroll box; outcomes are coloured.
    verdict_html = text[: text.index("</section>")]
    assert '<div class="table-box"><table>' in verdict_html
    assert '<strong class="bad">not met</strong>' in verdict_html  # 6 sentences: p = 0.25
    assert '<strong class="good">met</strong>' in verdict_html  # no format errors


def test_without_a_verdict_the_page_starts_with_the_comparison(result) -> None:  # noqa: ANN001
    page = Page(render_html(result))
    assert page.first_in_body[0] == "h1" and "verdict" not in page.ids


def test_markdown_starts_with_the_same_verdict(result, verdict: str) -> None:  # noqa: ANN001
    markdown = render_markdown(result, verdict=verdict)
    assert markdown.startswith("## Prompt or fine-tune? The fine-tuned chain against few-shot")
    assert markdown.index("| triple F1 (per sentence) |") < markdown.index("# Chain comparison")
    assert not render_markdown(result).startswith("## Prompt or fine-tune?")


def test_write_report_puts_the_verdict_in_both_reports(result, verdict, tmp_path) -> None:  # noqa: ANN001
    paths = write_report(result, tmp_path, verdict=verdict)
    assert paths["report.md"].read_text().startswith("## Prompt or fine-tune?")
    assert Page(paths["report.html"].read_text()).first_in_body[1].get("id") == "verdict"
    # The call shapes of before still work.
    assert write_report(result, tmp_path / "plain")["report.html"].is_file()
    assert "Prompt or fine-tune?" not in result.to_html()


def test_chains_are_labelled_by_name_with_the_spec_on_hover(result) -> None:  # noqa: ANN001
    page = Page(render_html(result))
    labels = dict(page.row_labels)
    assert labels["zero-shot html-half"] == HALF
    assert {"zero-shot html-none", "zero-shot html-all"} <= set(labels)
    assert not any(label.startswith("zero-shot:") for label, _ in page.row_labels)


def test_readable_names_never_show_the_machines_folders() -> None:
    assert chain_name("few-shot:smollm2+k=3+shots=/tmp/x1/data/train.jsonl") == (
        "few-shot SmolLM2-135M-Instruct (k=3)"
    )
    assert chain_name("zero-shot:smollm2+max_new_tokens=24") == "zero-shot SmolLM2-135M-Instruct"
    name = chain_name("hf:smollm2+adapter=/tmp/tmpab12/adapter", {"adapter_hash": "0123456789ab"})
    assert name == "fine-tuned SmolLM2-135M-Instruct (adapter 01234567)"
    assert chain_name("few-shot:openai:gpt-4o-mini+k=5") == "few-shot gpt-4o-mini (k=5, OpenAI)"
    assert chain_name("openai-ft:ft:gpt-4o-mini-2024-07-18:acme::abc123") == (
        "fine-tuned gpt-4o-mini-2024-07-18 (OpenAI)"
    )
    assert chain_name("openai-ft:my-lora+base_url=http://user:key@127.0.0.1:8000/v1") == (
        "fine-tuned my-lora (127.0.0.1:8000)"
    )
    assert chain_name("few-shot:/home/me/models/Qwen2.5-0.5B+k=2") == "few-shot Qwen2.5-0.5B (k=2)"


def test_the_default_k_is_the_one_the_experiment_ran_with() -> None:
    assert chain_name("few-shot:smollm2", {"settings": {"few_shot_k": 7}}).endswith("(k=7)")


def test_a_fine_tuned_chain_is_named_by_the_method_in_its_manifest(tmp_path: Path) -> None:
    write_manifest(tmp_path, _manifest(method="qlora"))
    assert (
        chain_name(f"hf:smollm2+adapter={tmp_path}") == "fine-tuned SmolLM2-135M-Instruct (QLoRA)"
    )


def test_chains_with_the_same_name_are_told_apart_by_their_options() -> None:
    specs = [
        "few-shot:smollm2+k=3+max_new_tokens=24+shots=/tmp/a/train.jsonl",
        "few-shot:smollm2+k=3+max_new_tokens=48+shots=/tmp/a/train.jsonl",
        "zero-shot:smollm2",
        "zero-shot:smollm2",
    ]
    names = chain_names(SimpleNamespace(chains=specs, experiments=[]))
    assert names == [
        "few-shot SmolLM2-135M-Instruct (k=3) [max_new_tokens=24]",
        "few-shot SmolLM2-135M-Instruct (k=3) [max_new_tokens=48]",
        "zero-shot SmolLM2-135M-Instruct #1",
        "zero-shot SmolLM2-135M-Instruct #2",
    ]


def test_precision_of_a_chain_that_answers_nothing_is_undefined_not_one(result) -> None:  # noqa: ANN001
    table = score_table(result)
    columns = list(table.columns)
    assert columns[columns.index("triple_precision") + 1] == WITH_TRIPLES
    assert table.loc[NONE, "triple_precision"] == "n/a"
    assert table.loc[NONE, WITH_TRIPLES] == "0"
    assert table.loc[HALF, WITH_TRIPLES] == "6"
    assert table.loc[NONE, "triple_f1"].startswith("0.000")
    html = render_html(result)
    assert f"the mean over the <em>{WITH_TRIPLES}</em>" in html


def test_the_mean_of_seeds_has_scores_but_no_answers_of_its_own(result) -> None:  # noqa: ANN001
    seeds = result.experiments[1:]
    mean = mean_of_seeds(seeds, "fine-tuned (mean of 2 seeds)")
    extended = build_comparison([*result.experiments, mean], result.dataset, None, 0)
    table = score_table(extended)
    assert table.loc["fine-tuned (mean of 2 seeds)", WITH_TRIPLES] == "n/a"
    means = [extended.table.loc[label, "triple_f1"] for label in extended.chains[1:3]]
    assert table.loc["fine-tuned (mean of 2 seeds)", "triple_f1"].startswith(
        f"{sum(means) / 2:.3f}"
    )
    text = render_html(extended)
    summary = text[text.index('id="examples-4"') :].split("</summary>")[0]
    assert "no answers of its own; its scores are the means of" in summary
    assert 'href="#examples-2"' in summary and 'href="#examples-3"' in summary
    assert "<article" not in text[text.index('id="examples-4"') :].split("</details>")[0]


def test_every_score_leads_to_the_chains_examples(result) -> None:  # noqa: ANN001
    text = render_html(result)
    page = Page(text)
    anchors = [f"examples-{i}" for i in (1, 2, 3)]
    assert set(anchors) <= set(page.ids)
    assert set(page.links) <= set(page.ids)  # no link without its target
    # The chain's name and each of its cells in the score table link to its examples.
    cells = len(score_table(result).columns) + 1
    assert all(page.links.count(anchor) >= cells for anchor in anchors)
    details = text[text.index('id="examples-2"') : text.index('id="examples-3"')]
    assert details.count('<article class="example"') == len(EXAMPLES)


def test_an_example_shows_raw_answer_parsed_triples_gold_and_tags(result) -> None:  # noqa: ANN001
    text = render_html(result)
    half = text[text.index('id="examples-2"') : text.index('id="examples-3"')]
    second = half[half.index('id="examples-2-2"') : half.index('id="examples-2-3"')]
    assert "raw answer" in second and "parsed triples (1)" in second
    assert f"gold ({len(EXAMPLES[1].triples)})" in second
    assert "Homer Simpson" in second and EXAMPLES[1].triples[0].s in second
    assert '<span class="tag" title="subject' in second and ">hallucination</span>" in second
    assert "triple_f1 <b>0.000</b>" in second


def test_model_output_is_escaped_in_the_examples(result) -> None:  # noqa: ANN001
    text = render_html(result)
    assert XSS not in text and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text


def test_the_page_is_self_contained(result) -> None:  # noqa: ANN001
    text = render_html(result)
    assert "<script src" not in text and '<link rel="stylesheet"' not in text
    assert "http://" not in text and "https://" not in text


@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="needs Chromium (apt install chromium)"
)
def test_the_report_fits_a_1280_px_browser_window(result, verdict, tmp_path) -> None:  # noqa: ANN001
    """Acceptance 6, on a small comparison: headless Chromium measures the page."""
    write_report(result, tmp_path / "report", verdict=verdict)
    shot = tmp_path / "shot.png"
    script = ROOT / "benchmarks" / "screenshot_report.py"
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "report" / "report.html"), "--out", str(shot)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok   page within the window width" in done.stdout
    assert "ok   verdict visible in the first screen" in done.stdout
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _manifest(method: str) -> AdapterManifest:
    """A manifest as `triplesmith train` writes it; only `method` matters here."""
    reason = "test"
    return AdapterManifest(
        created_at="2026-01-01T00:00:00", base_model="smollm2", base_model_path="smollm2",
        base_model_hash="0" * 16, dataset="sample", dataset_split="train", dataset_hash="0" * 16,
        examples=1, max_example_tokens=64, format="chat_template", prompt_id="p", preset="demo",
        method=method, method_reason=reason, dtype="float32", dtype_reason=reason,
        gradient_checkpointing=False, gradient_checkpointing_reason=reason, packing=False,
        packing_reason=reason, hyperparameters={}, steps=1, epochs=1.0, loss_start=1.0,
        loss_end=0.5, tokens_trained=1, tokens_per_s=1.0, train_wall_s=1.0, wall_s=1.0,
        peak_memory_bytes=0, device="cpu", adapter_hash="0" * 16, packages={},
    )  # fmt: skip
