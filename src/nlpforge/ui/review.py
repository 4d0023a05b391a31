"""Review: the human-review queue of captured predictions (`nlpforge.monitoring.review`). A person reads the
text and the model's probabilities, picks the right label (keys 1-9; s or → skips), and the label lands in
the labels file `nlpforge train` reads."""
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse

from nlpforge.errors import NlpforgeError
from nlpforge.ui.app import NotFound, render, settings_of

router = APIRouter()


def captured_models(request: Request) -> list[str]:
    folder = settings_of(request).capture_folder
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder and folder.is_dir() else []


def queue_of(request: Request, model: str):
    from nlpforge.monitoring.review import ReviewQueue  # it brings torch: loaded on the first visit only

    settings = settings_of(request)
    if model not in captured_models(request):
        raise NotFound(f"no data capture of model {model!r} in {settings.capture_folder}")
    return ReviewQueue(settings.capture_folder, model, threshold=settings.review_threshold)


@router.get("/review")
def review_page(request: Request, model: str = "", offset: int = 0):
    settings = settings_of(request)
    models = captured_models(request)
    context = {"folder": settings.capture_folder, "models": models, "model": model or (models[0] if models else ""),
               "threshold": settings.review_threshold, "item": None, "labels": [], "progress": None, "error": None,
               "offset": max(offset, 0), "labels_file": None}
    if context["model"]:
        queue = queue_of(request, context["model"])
        context["labels_file"] = queue.labels_file
        try:
            pending, context["progress"] = queue.overview()
        except NlpforgeError as error:  # a damaged capture file: say which, keep the page
            context["error"] = str(error)
            pending = []
        if pending:
            context["offset"] %= len(pending)
            context["item"] = pending[context["offset"]]
            context["labels"] = queue.labels_of(context["item"])
    return render(request, "review.html", title="Review", **context)


@router.post("/review/label")
def review_label(request: Request, model: str = Form(...), capture_id: str = Form(...), label: str = Form(...),
                 offset: int = Form(0)):
    queue_of(request, model).save(capture_id, label)
    return RedirectResponse("/review?" + urlencode({"model": model, "offset": max(offset, 0)}), status_code=303)
