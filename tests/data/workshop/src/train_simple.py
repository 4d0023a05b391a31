"""A review classifier trained the way the data-science-on-aws workshop's `train_simple.py` is (notebook
03_Train_Reviews_RoBERTa_Transformers_PyTorch_ScriptMode), with a bag-of-words model in place of RoBERTa.

It uses SageMaker's contract as that script does: argparse defaults from the SM_* variables, booleans
parsed with `type=eval`, TSV channels `train` and `validation` read with pandas, the Debugger hook's
settings read from SMDEBUG_CONFIG_FILE_PATH (smdebug is not installed, so the file is read here, and a
missing file is an error as it is for smdebug), one process per host joined with torch.distributed, and
`model.pth` saved into SM_MODEL_DIR by every host.

The model folder holds:
    model.pth          the state_dict of `torch.nn.EmbeddingBag(len(vocabulary), 3, mode="mean")`
    vocabulary.json    {"vocabulary": [word, ...], "classes": [-1, 0, 1]} (label_id i is sentiment classes[i])
    host.txt           the host that wrote the folder
"""
import argparse
import glob
import json
import os

import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F

MODEL_NAME = "model.pth"
CLASSES = [-1, 0, 1]


def parse_args():
    parser = argparse.ArgumentParser()
    # CLI args
    parser.add_argument("--train_batch_size", type=int, default=64)
    parser.add_argument("--train_steps_per_epoch", type=int, default=64)
    parser.add_argument("--validation_batch_size", type=int, default=64)
    parser.add_argument("--validation_steps_per_epoch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--freeze_bert_layer", type=eval, default=False)
    parser.add_argument("--learning_rate", type=float, default=0.01)
    parser.add_argument("--momentum", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--log_interval", type=int, default=100)
    parser.add_argument("--backend", type=str, default=None)
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--run_validation", type=eval, default=False)
    parser.add_argument("--enable_sagemaker_debugger", type=eval, default=False)
    # Container environment
    parser.add_argument("--hosts", type=list, default=json.loads(os.environ["SM_HOSTS"]))
    parser.add_argument("--current_host", type=str, default=os.environ["SM_CURRENT_HOST"])
    parser.add_argument("--model_dir", type=str, default=os.environ["SM_MODEL_DIR"])
    parser.add_argument("--train_data", type=str, default=os.environ["SM_CHANNEL_TRAIN"])
    parser.add_argument("--validation_data", type=str, default=os.environ["SM_CHANNEL_VALIDATION"])
    parser.add_argument("--output_dir", type=str, default=os.environ["SM_OUTPUT_DIR"])
    parser.add_argument("--num_gpus", type=int, default=os.environ["SM_NUM_GPUS"])
    # Debugger args
    parser.add_argument("--save_frequency", type=int, default=10)
    return parser.parse_args()


def create_list_input_files(path):
    return glob.glob("{}/*.tsv".format(path))


def read_reviews(path, max_seq_length):
    frames = [pd.read_csv(file, sep="\t", usecols=["label_id", "review_body"])
              for file in create_list_input_files(path)]
    df = pd.concat(frames, ignore_index=True)
    words = [str(body).lower().split()[:max_seq_length] for body in df["review_body"]]
    return words, df["label_id"].astype(int).tolist()


def read_hook_config():
    """What smdebug's Hook.create_from_json_file() reads."""
    path = os.environ.get("SMDEBUG_CONFIG_FILE_PATH", "/opt/ml/input/config/debughookconfig.json")
    with open(path) as handle:
        config = json.load(handle)
    print("smdebug hook config from {}: local path {}, collections {}".format(
        path, config["LocalPath"], [c["CollectionName"] for c in config.get("CollectionConfigurations", [])]))
    return config


def encode(batch_words, vocabulary):
    ids, offsets = [], []
    for words in batch_words:
        offsets.append(len(ids))
        ids.extend(vocabulary.get(word, 0) for word in words)
    return torch.tensor(ids, dtype=torch.long), torch.tensor(offsets, dtype=torch.long)


def batches(words, labels, batch_size, steps):
    for step, start in enumerate(range(0, len(words), batch_size)):
        if step >= steps:
            return
        yield step, words[start:start + batch_size], torch.tensor(labels[start:start + batch_size])


def main():
    args = parse_args()
    torch.manual_seed(args.seed)
    print("current_host={} model_dir={} freeze_bert_layer={} run_validation={}".format(
        args.current_host, args.model_dir, args.freeze_bert_layer, args.run_validation))
    is_distributed = len(args.hosts) > 1 and args.backend is not None
    if is_distributed:
        dist.init_process_group(backend=args.backend)
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if is_distributed else (0, 1)
    hook = read_hook_config() if args.enable_sagemaker_debugger else None

    train_words, train_labels = read_reviews(args.train_data, args.max_seq_length)
    vocabulary = {"<unk>": 0}
    for words in train_words:
        for word in words:
            vocabulary.setdefault(word, len(vocabulary))
    train_words, train_labels = train_words[rank::world_size], train_labels[rank::world_size]

    model = torch.nn.EmbeddingBag(len(vocabulary), len(CLASSES), mode="mean")
    if is_distributed:
        model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.learning_rate, momentum=args.momentum)
    losses = []
    for epoch in range(args.epochs):
        for step, words, labels in batches(train_words, train_labels, args.train_batch_size,
                                           args.train_steps_per_epoch):
            logits = model(*encode(words, vocabulary))
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            accuracy = (logits.argmax(dim=1) == labels).float().mean().item() * 100
            print("[epoch: {0} / {1}, step: {2}] train_loss: {3:.4f} - train_acc: {4:.2f}%".format(
                epoch + 1, args.epochs, step, loss.item(), accuracy))
        if args.run_validation:
            words, labels = read_reviews(args.validation_data, args.max_seq_length)
            with torch.no_grad():
                logits = model(*encode(words, vocabulary))
                loss = F.cross_entropy(logits, torch.tensor(labels))
                accuracy = (logits.argmax(dim=1) == torch.tensor(labels)).float().mean().item() * 100
            print("[epoch: {0} / {1}] val_loss: {2:.4f} - val_acc: {3:.2f}%".format(
                epoch + 1, args.epochs, loss.item(), accuracy))

    if hook is not None:
        os.makedirs(hook["LocalPath"], exist_ok=True)
        with open(os.path.join(hook["LocalPath"], "{}-losses.json".format(args.current_host)), "w") as handle:
            json.dump({"worker": args.current_host, "losses": losses}, handle)
    module = model.module if is_distributed else model
    torch.save(module.state_dict(), os.path.join(args.model_dir, MODEL_NAME))
    with open(os.path.join(args.model_dir, "vocabulary.json"), "w") as handle:
        json.dump({"vocabulary": list(vocabulary), "classes": CLASSES}, handle)
    with open(os.path.join(args.model_dir, "host.txt"), "w") as handle:
        handle.write(args.current_host)
    if is_distributed:
        dist.destroy_process_group()
    print("saved {} on {}".format(MODEL_NAME, args.current_host), end="", flush=True)  # no newline


if __name__ == "__main__":
    main()
