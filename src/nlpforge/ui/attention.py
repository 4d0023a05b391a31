"""Attention: explain a text with a model folder: the answer, the token attributions and the head and model
views (the self-contained page `nlpforge explain --output` writes, in a frame)."""
import threading

from fastapi import APIRouter, Request

from nlpforge.errors import NlpforgeError
from nlpforge.ui.app import render, settings_of
from nlpforge.ui.models import model_folders

router = APIRouter()
_loaded: dict = {}
_lock = threading.Lock()


def loaded_model(path):
    """The model of a folder, loaded once per folder and kept."""
    from nlpforge.tasks import load

    with _lock:
        if str(path) not in _loaded:
            _loaded[str(path)] = load(path)
        return _loaded[str(path)]


@router.get("/attention")
def attention_page(request: Request, model: str = "", text: str = "", text_pair: str = ""):
    from nlpforge.evaluation.attention_view import answer_summary, explain_text, render_html

    folders = model_folders(settings_of(request))
    chosen = next((key for key, found in folders.items() if model in (key, str(found["path"]))), None)
    if chosen is None and folders and not model:
        chosen = next(iter(folders))
    context = {"folders": folders, "chosen": chosen, "text": text, "text_pair": text_pair, "view": None,
               "summary": "", "top": [], "note": None, "error": None}
    if model and chosen is None:
        context["error"] = f"{model} is not a model folder this app knows; pick one of the list"
    elif chosen and text.strip():
        folder = folders[chosen]["path"]
        try:
            explanation = explain_text(loaded_model(folder), text, text_pair or None)
        except NlpforgeError as error:
            context["error"] = str(error)
        else:
            pairs = zip(explanation.get("words", []), explanation.get("importances", []))
            context.update(view=render_html(explanation, f"{folder.name}: {text[:80]}"),
                           summary=answer_summary(explanation), note=explanation["attention"].get("note"),
                           top=sorted(pairs, key=lambda pair: -abs(pair[1]))[:10])
    return render(request, "attention.html", title="Attention", **context)
