"""Explanations: Integrated Gradients attributions and per-head eager attention in one shape, the
self-contained HTML view and PNG, `nlpforge explain` and `nlpforge.explain`."""
import json
import re
import sys

import numpy as np
import pytest
from conftest import assert_user_error, run_cli
from ui_support import browser, needs_browser, screenshot

import nlpforge
from nlpforge.evaluation.attention_view import explain_text, render_html, render_png
from nlpforge.tasks import explanations


@pytest.fixture(scope="module")
def loaded(tiny_model):
    return nlpforge.load(tiny_model.output)


def test_attention_is_per_head_eager_rows_sum_to_one_and_padding_is_stripped(loaded):
    short, long = loaded.explain(["great movie", "the movie was a great film and the acting was superb"])
    attention = short["attention"]
    assert short["words"] == attention["tokens"] == ["[CLS]", "great", "movie", "[SEP]"]
    weights = np.array(attention["weights"])
    assert weights.shape == (2, 2, 4, 4) == (attention["layers"], attention["heads"], 4, 4)  # bert-tiny
    assert np.allclose(weights.sum(-1), 1, atol=1e-3)
    assert attention["total_layers"] == 2 and attention["note"] is None
    assert np.array(long["attention"]["weights"]).shape[-1] == len(long["words"]) > 4
    # the model that predicts runs SDPA; explanations use an eager copy, whose weights are real
    assert loaded.model.config._attn_implementation != "eager"
    assert explanations.eager_model(loaded).config._attn_implementation == "eager"


def test_attributions_follow_torchserve_format_and_point_at_the_deciding_word(loaded):
    # the toy model learns the negative words (a text without one is positive), so "awful" decides
    result = loaded.explain("the movie was really awful", steps=40)[0]
    assert result["label"] == "neg"
    assert len(result["importances"]) == len(result["words"])
    assert np.linalg.norm(result["importances"]) == pytest.approx(1, abs=1e-3)
    assert np.isfinite(result["delta"])
    ranked = sorted(zip(result["words"], result["importances"]), key=lambda pair: -pair[1])
    assert ranked[0][0] == "awful", ranked


def test_rows_that_do_not_sum_to_one_are_refused(loaded):
    import torch

    class Fake:
        attentions = (torch.full((1, 2, 3, 3), 0.5),)

    with pytest.raises(nlpforge.errors.ArtifactError, match="do not sum to 1"):
        explanations.attention_of(Fake(), ["a", "b", "c"])


def test_a_missing_captum_is_a_config_error_that_names_the_package(loaded, monkeypatch):
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    with pytest.raises(nlpforge.errors.ConfigError, match="pip install captum"):
        loaded.explain("great movie")


def test_a_question_needs_its_context(loaded):
    class QuestionModel:
        task = type("QuestionAnswering", (), {"name": "question-answering"})()

    with pytest.raises(nlpforge.errors.InputError, match="--text-pair"):
        explain_text(QuestionModel(), "Who wrote it?")
    with pytest.raises(nlpforge.errors.InputError, match="empty"):
        explain_text(loaded, "  ")


def test_a_pair_is_refused_by_a_one_text_model_and_needed_by_a_pair_model(loaded, monkeypatch):
    with pytest.raises(nlpforge.errors.InputError, match=r"reads one text \(trained on text\), not a pair"):
        explain_text(loaded, "great movie", "a second text")
    monkeypatch.setitem(loaded.info, "text_columns", ["premise", "hypothesis"])
    with pytest.raises(nlpforge.errors.InputError, match=r"trained on text pairs \(premise, hypothesis\)"):
        explain_text(loaded, "great movie")


def test_a_task_without_explanations_says_so_before_judging_the_input(tmp_path):
    from nlpforge import tasks
    from nlpforge.tasks.base import LoadedModel

    fill_mask = LoadedModel(tasks.get("masked-lm"), tmp_path, tokenizer=None, metadata={}, info={})
    with pytest.raises(nlpforge.errors.InputError, match="a masked-lm model gives no explanations"):
        fill_mask.explain("a text without the mask token")


def test_long_inputs_keep_the_last_layers_and_say_so(loaded, monkeypatch):
    monkeypatch.setattr(explanations, "ATTENTION_BUDGET", 2 * 12 * 12)
    result = loaded.explain("great " * 10)[0]
    attention = result["attention"]
    assert attention["layers"] == 1 and attention["total_layers"] == 2 and attention["first_layer"] == 1
    assert "showing the last 1 of 2 layers" in attention["note"]
    assert "showing the last 1 of 2 layers" in render_html(result)


def test_the_html_view_is_self_contained_and_escapes_tokens(loaded, tmp_path):
    result = loaded.explain("great movie")[0]
    result["words"][1] = result["attention"]["tokens"][1] = "<b>&\"</script>"
    page = render_html(result, "a <title>")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<script src" not in page and "<b>&" not in page and "a &lt;title&gt;" in page
    assert page.count("</script>") == 2  # the data block and the script, nothing closed early
    assert len(re.findall(r'<canvas class="cell"', page)) == 4  # the model view: 2 layers x 2 heads
    assert "window.top" not in page and "window.parent" not in page  # works inside the UI's iframe
    png = render_png(result, tmp_path / "view.png")
    import matplotlib.image

    assert matplotlib.image.imread(png).std() > 0.01


@needs_browser
def test_the_view_draws_every_layer_and_head_and_reacts_to_a_click(loaded, tmp_path):
    path = tmp_path / "view.html"
    path.write_text(render_html(loaded.explain("great movie")[0], "tiny: great movie"))
    with browser(offline=True) as open_page:
        page, problems = open_page(path.as_uri())
        assert problems == []
        assert page.locator(".model-view canvas.cell").count() == 4  # 2 layers x 2 heads
        assert page.locator("#head-svg line.edge").count() > 0
        page.locator('.model-view canvas.cell[data-layer="0"][data-head="1"]').click()
        assert page.locator("#head-svg").get_attribute("data-layer") == "0"
        assert page.locator(".model-view canvas.cell.selected").count() == 1
        assert page.locator(".head-toggle:checked").count() == 1
        everything = page.locator("#head-svg line.edge").count()
        page.locator("#head-svg text.token.left").nth(1).click()
        assert 0 < page.locator("#head-svg line.edge").count() < everything
        screenshot(page, "attention-view")


def test_cli_writes_the_views_and_prints_the_answer(tiny_model, tmp_path):
    out = tmp_path / "out"
    result = run_cli(["explain", str(tiny_model.output), "a superb film", "--output", str(out / "v.html"),
                      "--png", str(out / "v.png"), "--json", str(out / "v.json"), "--steps", "10"])
    assert result.returncode == 0, result.stderr
    assert "label pos" in result.stdout and "superb" in result.stdout
    saved = json.loads((out / "v.json").read_text())
    assert {"words", "importances", "delta", "attention", "label"} <= set(saved)
    assert (out / "v.html").stat().st_size > 1000 and (out / "v.png").stat().st_size > 1000


@pytest.mark.parametrize("args, message", [
    (["{model}", " "], "empty"),
    (["{missing}", "text"], "no such model folder"),
    (["{model}", "text", "--steps", "0"], "steps must be a whole number"),
    (["{model}", "text", "--output", "{file}/v.html"], "no folder can be made"),
])
def test_cli_bad_inputs_get_one_line_errors(tiny_model, tmp_path, args, message):
    (tmp_path / "a-file").write_text("x")
    values = {"model": tiny_model.output, "missing": tmp_path / "nope", "file": tmp_path / "a-file"}
    assert_user_error(run_cli(["explain", *[a.format(**values) for a in args]]), message)


def test_python_api_writes_the_view(tiny_model, tmp_path):
    result = nlpforge.explain(tiny_model.output, "awful", output=tmp_path / "v.html")
    assert result["label"] == "neg" and (tmp_path / "v.html").exists()
