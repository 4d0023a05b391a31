"""The training fast paths change no result: the [CLS]-only last layer gives the full forward's logits and
gradients, and CPU dropout drops at dropout's rate with dropout's scale, from torch's generator."""
import json

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from nlpforge.models.dropout import ATTENTION, CpuDropout, cpu_dropout_attention, drop, use_cpu_dropout
from nlpforge.models.pooling import cls_pooled_classifier, cls_pooled_mpnet_classifier


def tiny_config(attention: str = "sdpa", dropout: float = 0.0) -> BertConfig:
    config = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                        intermediate_size=64, num_labels=5, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout)
    config._attn_implementation = attention
    return config


def padded_batch(seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (4, 11), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 2:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def twins(config) -> tuple:
    torch.manual_seed(0)
    plain = BertForSequenceClassification(config)
    fast = cls_pooled_classifier()(config)
    fast.load_state_dict(plain.state_dict())
    return plain, fast


def assert_same_logits_and_gradients(plain, fast, batch: dict) -> None:
    for model in (plain, fast):
        model.train()  # dropout is 0 here, so training mode must agree too
        model(**batch).logits.square().sum().backward()
    assert torch.allclose(fast(**batch).logits, plain(**batch).logits, atol=1e-6)
    for (name, a), (_, b) in zip(plain.named_parameters(), fast.named_parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name
    no_mask = {"input_ids": batch["input_ids"]}
    assert torch.allclose(fast(**no_mask).logits, plain(**no_mask).logits, atol=1e-6)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_the_cls_only_last_layer_gives_the_full_forwards_logits_and_gradients(attention):
    assert_same_logits_and_gradients(*twins(tiny_config(attention)), padded_batch())


def mpnet_twins(dropout: float = 0.0) -> tuple:
    from transformers import MPNetConfig, MPNetForSequenceClassification

    config = MPNetConfig(vocab_size=60, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                         intermediate_size=64, num_labels=5, hidden_dropout_prob=dropout,
                         attention_probs_dropout_prob=dropout)
    torch.manual_seed(0)
    plain = MPNetForSequenceClassification(config)
    fast = cls_pooled_mpnet_classifier()(config)
    fast.load_state_dict(plain.state_dict())
    return plain, fast


def test_the_mpnet_cls_only_last_layer_gives_the_full_forwards_logits_and_gradients():
    plain, fast = mpnet_twins()
    batch = {k: v for k, v in padded_batch().items() if k != "token_type_ids"}
    assert_same_logits_and_gradients(plain, fast, batch)
    labels = torch.tensor([0, 1, 2, 3])  # what asks for more than logits takes the full forward
    assert torch.allclose(fast(**batch, labels=labels).loss, plain(**batch, labels=labels).loss)
    assert type(fast).__name__ == "MPNetForSequenceClassification"  # config.json names transformers' own class


def test_what_the_cls_only_path_skips_is_real_work():
    from torch.utils.flop_counter import FlopCounterMode

    plain, fast = twins(tiny_config())
    flops = []
    for model in (plain, fast):
        with FlopCounterMode(display=False) as counter:
            model(**padded_batch())
        flops.append(counter.get_total_flops())
    # 3 layers, 11 positions: the last layer's queries, output and feed-forward for 10 of them are skipped
    assert flops[1] < 0.8 * flops[0]
    flops = []
    for model in mpnet_twins():
        with FlopCounterMode(display=False) as counter:
            model(input_ids=padded_batch()["input_ids"], attention_mask=padded_batch()["attention_mask"])
        flops.append(counter.get_total_flops())
    assert flops[1] < 0.8 * flops[0]


def test_calls_asking_for_more_than_logits_take_the_full_forward():
    plain, fast = twins(tiny_config("eager"))
    batch = padded_batch()
    out = fast(**batch, output_attentions=True, output_hidden_states=True)
    assert len(out.attentions) == 3 and out.attentions[-1].shape == (4, 4, 11, 11)
    assert out.hidden_states[-1].shape == (4, 11, 32)
    labels = torch.tensor([0, 1, 2, 3])
    assert torch.allclose(fast(**batch, labels=labels).loss, plain(**batch, labels=labels).loss)


def test_a_trained_cls_classifier_is_transformers_own_class_on_disk(tiny_model):
    from transformers import AutoModelForSequenceClassification

    from nlpforge.tasks import get

    folder = tiny_model.output
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"] and "_attn_implementation" not in config
    ours = get("text-classification").load_weights(folder).eval()
    assert type(ours) is cls_pooled_classifier()
    plain = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    batch = padded_batch()
    batch["input_ids"] = batch["input_ids"].clamp(max=plain.config.vocab_size - 1)
    assert torch.allclose(ours(**batch).logits, plain(**batch).logits, atol=1e-5)


def test_cpu_dropout_drops_at_the_rate_and_keeps_the_mean():
    torch.manual_seed(0)
    x = torch.ones(1_000_000)
    y = drop(x, 0.1)
    dropped = (y == 0).float().mean().item()
    assert dropped == pytest.approx(0.1, abs=0.002)
    kept = y[y != 0]
    assert torch.all(kept == kept[0]) and kept[0].item() == pytest.approx(65536 / (65536 - 6554))
    assert y.mean().item() == pytest.approx(1.0, abs=0.005)
    assert drop(x, 0.0) is x and torch.all(drop(x, 1.0) == 0)
    # masks come from torch's generator: the same seed gives the same mask, and the next call another
    torch.manual_seed(1)
    first, second = drop(x, 0.5), drop(x, 0.5)
    torch.manual_seed(1)
    assert torch.equal(drop(x, 0.5), first) and not torch.equal(first, second)


def test_cpu_dropout_module_is_dropout_in_training_only():
    module = CpuDropout(0.3)
    x = torch.randn(64, 32, requires_grad=True)
    module.train()
    y = module(x)
    y.sum().backward()
    zeroed = y == 0
    assert 0.15 < zeroed.float().mean().item() < 0.45
    assert torch.all(x.grad[zeroed] == 0) and torch.allclose(x.grad[~zeroed], torch.tensor(65536 / (65536 - 19661)))
    module.eval()
    assert torch.equal(module(x), x)


@pytest.mark.parametrize("bool_mask", [True, False])
def test_cpu_dropout_attention_without_drops_is_sdpa(bool_mask):
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 7, 8, generator=generator) for _ in range(3))
    keep = torch.ones(2, 1, 7, 7, dtype=torch.bool)
    keep[0, ..., 4:] = False
    mask = keep if bool_mask else torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min)
    # a dropout probability below 1/65536 drops nothing but still takes the probabilities path
    ours, _ = cpu_dropout_attention(None, q, k, v, mask, dropout=1e-9, scaling=0.3)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3).transpose(1, 2)
    assert torch.allclose(ours, expected, atol=1e-5)


def test_use_cpu_dropout_changes_neither_weights_nor_evaluation(tmp_path):
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_config(dropout=0.1))
    reference = BertForSequenceClassification(tiny_config(dropout=0.1))
    reference.load_state_dict(model.state_dict())
    use_cpu_dropout(model)
    assert list(model.state_dict()) == list(reference.state_dict())
    assert model.config._attn_implementation == ATTENTION
    # the embeddings', 3 per layer (the attention's, 2 on the residual branches), the head's
    assert sum(isinstance(m, CpuDropout) for m in model.modules()) == 11
    assert not any(type(m) is torch.nn.Dropout for m in model.modules())
    batch = padded_batch()
    model.eval()
    reference.eval()
    assert torch.allclose(model(**batch).logits, reference(**batch).logits, atol=1e-6)
    model.train()
    torch.manual_seed(3)
    first = model(**batch).logits
    # training with the padding mask: below 1/65536 nothing is dropped, so the math path must be SDPA's
    almost = BertForSequenceClassification(tiny_config(dropout=1e-9))
    almost.load_state_dict(reference.state_dict())
    almost.train()
    use_cpu_dropout(almost)
    assert torch.allclose(almost(**batch).logits, reference(**batch).logits, atol=1e-5)
    torch.manual_seed(3)
    assert torch.equal(model(**batch).logits, first)  # reproducible from the seed, as a resume needs
    model.save_pretrained(tmp_path)
    assert "_attn_implementation" not in json.loads((tmp_path / "config.json").read_text())


def test_the_cls_only_answer_does_not_depend_on_the_thread_count():
    # PyTorch's fused CPU attention splits a single query's keys between threads; the [CLS] query is not
    # computed with it, so one instance and two (different thread counts) write the same bytes.
    _, fast = twins(tiny_config())
    fast.eval()
    batch = padded_batch()
    threads = torch.get_num_threads()
    try:
        answers = []
        for count in (1, 2):
            torch.set_num_threads(count)
            answers.append(fast(**batch).logits)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(answers[0], answers[1])


def test_hooks_on_the_last_layer_see_every_token():
    plain, fast = twins(tiny_config())
    seen = []
    fast.bert.encoder.layer[-1].register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    assert torch.allclose(fast(**padded_batch()).logits, plain(**padded_batch()).logits, atol=1e-6)
    assert seen == [(4, 11, 32)]


def test_the_cls_only_layer_reads_every_mask_form():
    from nlpforge.models.pooling import cls_only_layer

    _, fast = twins(tiny_config())
    fast.eval()
    batch = padded_batch()
    hidden = fast.bert.embeddings(input_ids=batch["input_ids"])
    last = fast.bert.encoder.layer[-1]
    padding = batch["attention_mask"].bool()                                    # (B, T)
    square = padding[:, None, None, :].expand(-1, 1, 11, -1)                   # (B, 1, T, T)
    additive = torch.zeros(square.shape).masked_fill(~square, torch.finfo(torch.float32).min)
    answers = [cls_only_layer(last, hidden, mask) for mask in (padding, square, additive)]
    assert torch.allclose(answers[0], answers[1]) and torch.allclose(answers[1], answers[2], atol=1e-6)
    assert not torch.allclose(cls_only_layer(last, hidden, None), answers[0], atol=1e-4)  # the mask matters


def test_a_cuda_device_takes_cudnn_out_of_attention_and_a_cpu_leaves_it():
    """cuDNN builds an attention plan per (batch, length) shape, and padded batches vary in length."""
    from nlpforge.models.attention import attention_for_varying_lengths

    before = torch.backends.cuda.cudnn_sdp_enabled()
    try:
        torch.backends.cuda.enable_cudnn_sdp(True)
        attention_for_varying_lengths("cpu")
        assert torch.backends.cuda.cudnn_sdp_enabled()
        attention_for_varying_lengths(torch.device("cuda", 0))  # a setting only: no GPU is touched
        assert not torch.backends.cuda.cudnn_sdp_enabled()
    finally:
        torch.backends.cuda.enable_cudnn_sdp(before)
