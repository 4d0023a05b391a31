"""`nlpforge ui`: a local web app over the jobs folder, the MLflow store, tuning studies, model folders,
running servers, monitoring runs and the human-review queue.

    nlpforge ui --jobs-root jobs --models models/ --server http://127.0.0.1:8080
    # open http://127.0.0.1:8090

Pages are server-rendered (FastAPI + Jinja2); every script and style sheet ships in `ui/static`, so the
app works on a machine with no internet. Each page is one module that exposes an APIRouter `router`.
"""
from nlpforge.ui.app import UISettings, create_app

__all__ = ["UISettings", "create_app"]
