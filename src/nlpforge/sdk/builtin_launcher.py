"""Entry point of nlpforge's built-in estimators inside a training job: train the job settings file.

    python builtin_launcher.py <job>/input/config/nlpforge-job.json

The built-in estimator (sdk/estimator.py) writes that file; this script is copied into the job's
code folder like any user script, and hands it to the training library's entry point.
"""
import sys

from nlpforge.training.run import main

if __name__ == "__main__":
    main(sys.argv[1:])
