"""Imported once by the forkserver, so that every worker process starts with torch and transformers loaded."""
import torch  # noqa: F401
import transformers  # noqa: F401
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: F401
from transformers.models.bert import modeling_bert  # noqa: F401

import nlpforge.models.artifact  # noqa: F401
import nlpforge.serving.handler  # noqa: F401
import nlpforge.serving.workers  # noqa: F401
