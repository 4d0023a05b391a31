"""`nlpforge ui`: the web app over jobs, experiments, tuning, models, endpoints, drift and the review queue.

    nlpforge ui --jobs-root jobs --models models --server http://127.0.0.1:8080
"""
import logging

from nlpforge.cli import app
from nlpforge.cli.options import command_from_settings
from nlpforge.ui.app import UISettings


def _run_ui(settings: UISettings) -> None:
    from nlpforge.ui.app import serve

    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(settings)


command_from_settings(app, "ui", UISettings, _run_ui,
                      help="Open the web app (http://127.0.0.1:8090): jobs, experiments, tuning, models, endpoints, "
                           "monitoring, attention and the review queue.")
