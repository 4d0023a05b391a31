"""Frozen lower layers: no gradient, no dropout, and, while training, each text's output computed once.

    freeze_lowest_layers(model, 8)            # the embeddings and layers 0-7 learn nothing, drop nothing
    with frozen_outputs_cached(model, 8, pad_id):
        ...train...                            # the layers above 7 are all a step computes

A frozen layer is a fixed function of its text: no gradient reaches it, and here it drops nothing out
(SageMaker's `freeze_bert_layer` only stops the gradient). So the output of the frozen stack for a text
is the same in every epoch, and training needs only the layers above it. Inside `frozen_outputs_cached`
the embeddings module returns the frozen stack's output, kept in memory per text (its token ids), and the
frozen layers themselves pass their input through. The training engine computes the training texts' outputs
before the first step, in the first epoch's batches (`warm`); any other text (validation, test) is computed
alone, unpadded, when first seen. Both are the same in a resumed run, so resume stays bit-exact. A step then
costs the unfrozen layers' forward and backward only: with the lowest 8 of 12 layers frozen, about a third
of the full step. Kept outputs take up to a quarter of the machine's memory; texts beyond that are computed
each time they come. On leaving the block the model is as it was.

Encoders: BERT (MiniLM and the from-scratch shapes) and MPNet; other model types train frozen without the cache.
"""
import contextlib
import os

import torch

from nlpforge.errors import ConfigError

CACHED_TYPES = ("bert", "mpnet")
# With no count given, a pretrained base deeper than SHALLOW layers trains its top TRAINED_ON_TOP layers only:
# all-mpnet-base-v2 (12 layers) so reached its full fine-tune's validation accuracy on the flagship at about a
# third of the time per epoch (docs/benchmarks.md, "A larger base in the time budget").
SHALLOW, TRAINED_ON_TOP = 6, 4


def _encoder_layers(model):
    """The encoder's layers where they sit in BERT's layout (`encoder.layer`: BERT, RoBERTa, MPNet, ...), else None
    (DistilBERT keeps them in `transformer.layer`, ALBERT shares one group between all)."""
    return getattr(getattr(model.base_model, "encoder", None), "layer", None)


def _frozen_modules(model, count: int) -> list:
    base = model.base_model
    layers = base.encoder.layer
    if count > len(layers):
        raise ConfigError(f"freeze-layers is {count} but the model has {len(layers)} layers")
    return [base.embeddings, *layers[:count]]


def _stay_in_eval(module) -> None:
    """`module.train()` leaves it in eval mode from now on, so that the training loop's `model.train()`
    turns no dropout back on inside it."""
    module.eval()
    module.train = lambda mode=True: torch.nn.Module.train(module, False)


def freeze_lowest_layers(model, count: int) -> None:
    """Freeze the embeddings and the lowest `count` encoder layers: no gradient, no dropout. Weights the
    encoder shares between all its layers (MPNet's relative-position table) are frozen too, since the frozen
    layers read them."""
    if count <= 0:
        return
    for module in _frozen_modules(model, count):
        for parameter in module.parameters():
            parameter.requires_grad = False
        _stay_in_eval(module)
    for name, parameter in model.base_model.encoder.named_parameters():
        if not name.startswith("layer."):
            parameter.requires_grad = False


def frozen_layer_count(model, requested: int | None, pretrained: bool) -> int:
    """How many layers to freeze: `requested`, or where it is None, all but the top `TRAINED_ON_TOP` layers of a
    pretrained base deeper than `SHALLOW` layers (which train whole), and none of a base trained from scratch."""
    layers = _encoder_layers(model)
    if layers is None:
        if requested:
            raise ConfigError(f"--freeze-layers {requested} needs an encoder of BERT's layout (layers in "
                              f"encoder.layer), and this model is {model.config.model_type!r}; use --freeze-layers 0")
        return 0
    if requested is not None:
        return requested
    return len(layers) - TRAINED_ON_TOP if pretrained and len(layers) > SHALLOW else 0


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


class _FrozenStack:
    """The embeddings and the frozen layers as they were (their own forwards), with their outputs kept per text."""

    def __init__(self, model, count: int, pad_id: int, limit_bytes: int):
        base = model.base_model
        self.kind, self.encoder, self.pad_id, self.limit = model.config.model_type, base.encoder, pad_id, limit_bytes
        self.config, self.frozen = model.config, _frozen_modules(model, count)
        for module in self.frozen:  # modules swapped in after freezing (CPU dropout) start in training mode
            module.eval()
        self.embeddings = base.embeddings.forward
        self.layers = [layer.forward for layer in base.encoder.layer[:count]]
        self.kept, self.kept_bytes = {}, 0

    @staticmethod
    def key(ids: torch.Tensor, types: torch.Tensor | None) -> bytes:
        return ids.cpu().numpy().tobytes() + (b"" if types is None else types.cpu().numpy().tobytes())

    def length(self, row: torch.Tensor) -> int:
        """A right-padded row's length: up to its last non-pad id (a pad id inside the text counts as text)."""
        real = (row != self.pad_id).nonzero()
        return int(real[-1]) + 1 if len(real) else row.shape[0]

    def stack(self, ids: torch.Tensor, types: torch.Tensor | None, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T) token ids (and token types, padding mask) -> the frozen stack's output, (B, T, H). Computed
        outside inference mode, so that what evaluation computes can be kept and read by training."""
        with torch.inference_mode(False), torch.no_grad():
            hidden = self.embeddings(input_ids=ids, **({} if types is None else {"token_type_ids": types}))
            if mask is not None:
                from transformers.masking_utils import create_bidirectional_mask

                mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=mask)
            bias = self.encoder.compute_position_bias(hidden) if self.kind == "mpnet" else None
            for forward in self.layers:
                out = forward(hidden, mask, bias) if self.kind == "mpnet" else forward(hidden, mask)
                hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def keep(self, key: bytes, hidden: torch.Tensor) -> None:
        size = hidden.numel() * hidden.element_size()
        if self.kept_bytes + size <= self.limit:
            self.kept[key] = hidden
            self.kept_bytes += size

    def one(self, ids: torch.Tensor, types: torch.Tensor | None) -> torch.Tensor:
        """(T,) token ids (and token types) -> the frozen stack's output, (T, H), computed for the text alone."""
        key = self.key(ids, types)
        hidden = self.kept.get(key)
        if hidden is None:
            hidden = self.stack(ids[None], None if types is None else types[None], None)[0]
            self.keep(key, hidden)
        return hidden

    def warm(self, batches) -> int:
        """Compute and keep the frozen stack's output for the texts of these batches (dicts of padded
        input_ids, attention_mask and token_type_ids), a batch at a time: faster than one text at a time (on 2
        CPU cores the flagship's default run took 12.7 minutes instead of 14.8). Stops when the memory for kept
        outputs is full. Returns the texts kept."""
        before = len(self.kept)
        for batch in batches:
            if self.kept_bytes >= self.limit:
                break
            ids, types, mask = batch["input_ids"], batch.get("token_type_ids"), batch.get("attention_mask")
            rows = [(i, self.length(row)) for i, row in enumerate(ids)]
            rows = [(i, n, self.key(ids[i, :n], None if types is None else types[i, :n])) for i, n in rows]
            rows = [(i, n, key) for i, n, key in rows if key not in self.kept]
            if not rows:
                continue
            pick, width = [i for i, _, _ in rows], max(n for _, n, _ in rows)
            hidden = self.stack(ids[pick, :width], None if types is None else types[pick, :width],
                                None if mask is None else mask[pick, :width])
            for j, (_, n, key) in enumerate(rows):
                self.keep(key, hidden[j, :n].clone())  # a copy: a view would hold the whole batch's memory
        return len(self.kept) - before

    def batch(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None, **kwargs):
        """What the embeddings module returns inside the block: the padded batch's frozen-stack output, (B, T, H),
        zeros at the padding (which the attention mask hides from every real position)."""
        if input_ids is None or position_ids is not None or inputs_embeds is not None:
            raise ConfigError("frozen layers' cached outputs need token ids as input; train without --freeze-layers "
                              "to pass embeddings or positions")
        rows = []
        for i, row in enumerate(input_ids):
            length = self.length(row)
            rows.append(self.one(row[:length], None if token_type_ids is None else token_type_ids[i, :length]))
        out = rows[0].new_zeros(input_ids.shape[0], input_ids.shape[1], rows[0].shape[-1])
        for i, hidden in enumerate(rows):
            out[i, :hidden.shape[0]] = hidden
        return out


def _pass_through(kind: str):
    if kind == "mpnet":
        return lambda hidden_states, *args, **kwargs: (hidden_states,)
    return lambda hidden_states, *args, **kwargs: hidden_states


@contextlib.contextmanager
def frozen_outputs_cached(model, count: int, pad_id: int, limit_bytes: int | None = None):
    """Inside the block, `model` computes its frozen stack once per text (see the module's docstring). Yields
    the cache (its `kept` texts and `kept_bytes`), or None where nothing is frozen or the model type is not
    one the cache knows (then the model runs as it is)."""
    if count <= 0 or model.config.model_type not in CACHED_TYPES:
        yield None
        return
    stack = _FrozenStack(model, count, pad_id, _memory_bytes() // 4 if limit_bytes is None else limit_bytes)
    frozen = stack.frozen  # the embeddings, then the frozen layers
    saved = [module.__dict__.get("forward") for module in frozen]
    frozen[0].forward = stack.batch
    for layer in frozen[1:]:
        layer.forward = _pass_through(stack.kind)
    try:
        yield stack
    finally:
        for module, forward in zip(frozen, saved):
            if forward is None:
                del module.forward
            else:
                module.forward = forward
        stack.kept.clear()
