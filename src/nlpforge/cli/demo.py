"""`nlpforge demo`: the flagship job end to end (train, evaluate against the baseline, predict)."""
from nlpforge.cli import app


@app.command("demo")
def demo_command():
    """Fine-tune MiniLM on Amazon reviews (or, without ../shared/data, packaged movie reviews)."""
    from nlpforge.demo import run_demo

    run_demo()
