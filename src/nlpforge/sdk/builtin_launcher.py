"""Entry point of nlpforge's built-in estimators: runs the `nlpforge` command line inside a training job.

    python builtin_launcher.py train text-classification --train ... --output $SM_MODEL_DIR

`TextClassifier` (sdk/estimator.py) builds the arguments; this file is copied into the job's
code folder like any user script.
"""
import sys

from nlpforge.cli import main

if __name__ == "__main__":
    main(sys.argv[1:])
