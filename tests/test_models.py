"""The embedded model loads from its converted cache; bad names get clear errors."""

import pytest

from triplesmith import models
from triplesmith.errors import ModelError


@pytest.mark.slow
def test_embedded_model_loads_and_generates():
    model, tokenizer = models.load("smollm2")
    assert type(model).__name__ == "LlamaForCausalLM"
    assert models.converted_dir("smollm2").joinpath("model.safetensors").is_file()
    ids = tokenizer("Paris is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 3


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        models.resolve(str(tmp_path))


def test_unknown_name_is_rejected_with_the_accepted_forms():
    with pytest.raises(ModelError, match="not an embedded model"):
        models.resolve("no-such-model")


def test_hub_id_offline_error_says_a_network_is_needed(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="need a network connection"):
        models.load("nobody-here/no-such-model-xyz")


def test_list_reports_the_embedded_model_installed():
    rows = {row["name"]: row for row in models.list_models()}
    assert rows["smollm2"]["installed"]
