"""Serves the workshop's review classifier the way SageMaker's PyTorch container does.

The training script (src/train_simple.py) saves to SM_MODEL_DIR:

    model.pth          the state_dict of torch.nn.EmbeddingBag(len(vocabulary), len(classes), mode="mean")
    vocabulary.json    {"vocabulary": [word, ...], "classes": [-1, 0, 1]}: word i has id i ("<unk>", id 0, stands
                       for every word not in it), and output column i is the sentiment classes[i]

A review is its lower-cased, whitespace-separated words, the first MAX_SEQ_LENGTH of them, as in
training.

Requests are what the notebook's predictor sends: a JSON list of {"features": ["review text"]}
(or one such object), or JSON Lines, one object per line, as the workshop's JSONLinesSerializer
sends. The answer is one {"predicted_label": ..., "probability": ...} per review, as JSON, or as
JSON Lines when asked.
"""
import json
import os

import torch

JSON_CONTENT_TYPE = "application/json"
JSONLINES_CONTENT_TYPE = "application/jsonlines"
MAX_SEQ_LENGTH = 128


def model_fn(model_dir):
    with open(os.path.join(model_dir, "vocabulary.json"), encoding="utf-8") as handle:
        saved = json.load(handle)
    state = torch.load(os.path.join(model_dir, "model.pth"), map_location="cpu")
    vocabulary_size, classes = state["weight"].shape
    model = torch.nn.EmbeddingBag(vocabulary_size, classes, mode="mean")
    model.load_state_dict(state)
    model.eval()
    vocabulary = {word: index for index, word in enumerate(saved["vocabulary"])}
    return {"model": model, "vocabulary": vocabulary, "classes": saved["classes"]}


def input_fn(serialized_input_data, content_type=JSON_CONTENT_TYPE):
    """The review texts of the request: features[0] of each object."""
    if isinstance(serialized_input_data, bytes):
        serialized_input_data = serialized_input_data.decode("utf-8")
    if content_type == JSON_CONTENT_TYPE:
        records = json.loads(serialized_input_data)
        records = records if isinstance(records, list) else [records]
    elif content_type == JSONLINES_CONTENT_TYPE:
        records = [json.loads(line) for line in serialized_input_data.splitlines() if line.strip()]
    else:
        raise ValueError("Requested unsupported ContentType in content_type: {}".format(content_type))
    reviews = []
    for record in records:
        if not isinstance(record, dict) or not isinstance(record.get("features"), list) or not record["features"]:
            raise ValueError('each input must be {{"features": ["review text"]}}, not {}'.format(
                json.dumps(record)[:80]))
        reviews.append(str(record["features"][0]))
    return reviews


def predict_fn(input_data, model):
    ids, offsets = [], []
    for review in input_data:
        offsets.append(len(ids))
        ids.extend(model["vocabulary"].get(word, 0) for word in review.lower().split()[:MAX_SEQ_LENGTH])
    with torch.no_grad():
        logits = model["model"](torch.tensor(ids, dtype=torch.long), torch.tensor(offsets, dtype=torch.long))
        probabilities = torch.softmax(logits, dim=1)  # (reviews, classes)
    best, index = probabilities.max(dim=1)
    return [{"predicted_label": model["classes"][i], "probability": round(p, 6)}
            for i, p in zip(index.tolist(), best.tolist())]


def output_fn(prediction_output, accept=JSON_CONTENT_TYPE):
    if accept == JSONLINES_CONTENT_TYPE:
        return "\n".join(json.dumps(p) for p in prediction_output), accept
    if accept == JSON_CONTENT_TYPE:
        return json.dumps(prediction_output), accept
    raise Exception("Requested unsupported ContentType in Accept: {}".format(accept))
