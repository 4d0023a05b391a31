"""BERT's sequence classifiers, by what the head reads.

    cls = mean_pooled_classifier()
    model = cls.from_pretrained("models/stars")       # config.json says "pooling": "mean"
    model(input_ids=ids, attention_mask=mask).logits  # (B, num_labels)

* `mean_pooled_classifier()`: the mean of the token vectors, the way sentence-transformers encoders
  (all-MiniLM among them) were trained. Its weights are BertForSequenceClassification's without the
  pooler, and its config.json names it. Plain transformers would load the folder as a [CLS] classifier
  with a fresh pooler; `nlpforge.load` reads the "pooling" entry and builds this class.
* `cls_pooled_classifier()`: BERT's pooler on the [CLS] token, as transformers' own class (same weights,
  same config.json), whose last layer computes the [CLS] position only. The pooler reads nothing
  else, so the other positions' last-layer attention output and feed-forward (5/6 of the last layer's
  weights' work, about 14% of a 6-layer encoder's matmuls) were computed for nothing. Keys and values
  still come from every position, so the logits are the full forward's.
"""
import functools

POOLING_KEY = "pooling"


@functools.cache
def mean_pooled_classifier():
    """The class (built on first use, so that importing nlpforge does not import transformers)."""
    import torch
    from transformers import BertForSequenceClassification
    from transformers.modeling_outputs import SequenceClassifierOutput

    class BertMeanPooledForSequenceClassification(BertForSequenceClassification):
        def __init__(self, config):
            setattr(config, POOLING_KEY, "mean")
            super().__init__(config)
            self.bert.pooler = None  # unused: no weights that never get a gradient (DDP would refuse them)

        def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
            kwargs.pop("return_dict", None)
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                            return_dict=True, **kwargs)
            hidden = out.last_hidden_state  # (B, T, H)
            mask = (torch.ones(hidden.shape[:2], device=hidden.device) if attention_mask is None
                    else attention_mask).unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, H)
            logits = self.classifier(self.dropout(pooled))
            loss = None if labels is None else torch.nn.functional.cross_entropy(logits, labels)
            return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                            attentions=out.attentions)

    return BertMeanPooledForSequenceClassification


def first_query_context(hidden, mask, query, key, value, heads: int, scale, dropout, bias=None):
    """The first position's attention context, (B, T, H) -> (B, 1, H): its query against every key, with plain
    matmuls. PyTorch's fused CPU kernel splits a single query's keys between threads, so its answer would depend
    on the thread count. `mask` is the encoder's attention mask (None, (B, 1, 1 or T, T) boolean or additive, or
    a (B, T) padding mask); `scale` scales the raw scores as the layer does; `bias` (B, heads, T, T) is added
    to them (MPNet's relative positions)."""
    import torch

    from nlpforge.models.attention import masked_softmax

    first = hidden[:, :1]
    shape = (hidden.shape[0], -1, heads, hidden.shape[-1] // heads)
    q = query(first).view(shape).transpose(1, 2)                                  # (B, heads, 1, d)
    k = key(hidden).view(shape).transpose(1, 2)                                   # (B, heads, T, d)
    v = value(hidden).view(shape).transpose(1, 2)
    scores = scale(torch.matmul(q, k.transpose(-1, -2)))                          # (B, heads, 1, T)
    if bias is not None:
        scores = scores + bias[:, :, :1]
    if mask is not None:
        # the first query's row; a (B, T) padding mask (flash attention's) becomes (B, 1, 1, T)
        mask = mask[:, :, :1] if mask.dim() == 4 else mask[:, None, None, :].bool()
    probabilities = dropout(masked_softmax(scores, mask))                         # a no-op in eval mode
    return torch.matmul(probabilities, v).transpose(1, 2).reshape(hidden.shape[0], 1, -1)


def asks_for_more_than_logits(labels, input_ids, kwargs: dict, last_layer) -> bool:
    """Whether a classifier call needs the full forward rather than the [CLS]-only one: labels (a loss),
    embeddings instead of ids, tuple output, any other option set (attentions, hidden states, positions,
    token types the fast path does not read), or hooks watching the last layer (the Debugger's)."""
    return (labels is not None or input_ids is None or kwargs.get("return_dict") is False
            or any(value is not None and value is not False for key, value in kwargs.items() if key != "return_dict")
            or any(m._forward_hooks or m._forward_pre_hooks for m in last_layer.modules()))


def cls_only_layer(layer, hidden, mask):
    """A transformers BertLayer's forward for the first position's query only: (B, T, H) -> (B, 1, H).

    `mask` is the encoder's attention mask as BertModel makes it (None, (B, 1, 1 or T, T) boolean or
    additive, or a (B, T) padding mask)."""
    attention = layer.attention.self
    context = first_query_context(hidden, mask, attention.query, attention.key, attention.value,
                                  attention.num_attention_heads, lambda scores: scores * attention.scaling,
                                  attention.dropout)
    return layer.feed_forward_chunk(layer.attention.output(context, hidden[:, :1]))


@functools.cache
def cls_pooled_classifier():
    """transformers' BertForSequenceClassification (its name, weights and config) with the [CLS]-only last
    layer. Calls that ask for more than logits (labels, attentions, hidden states), and forwards watched by
    hooks on the last layer (the Debugger's), take the full forward."""
    from transformers import BertForSequenceClassification as TransformersBertForSequenceClassification
    from transformers.masking_utils import create_bidirectional_mask
    from transformers.modeling_outputs import SequenceClassifierOutput

    # Named as its base so that config.json says "BertForSequenceClassification", which it is: plain
    # transformers loads the folder as before.
    class BertForSequenceClassification(TransformersBertForSequenceClassification):
        def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
            full = (asks_for_more_than_logits(labels, input_ids, kwargs, self.bert.encoder.layer[-1])
                    or self.config.add_cross_attention or self.config.is_decoder or self.bert.pooler is None)
            if full:
                return super().forward(input_ids=input_ids, attention_mask=attention_mask,
                                       token_type_ids=token_type_ids, labels=labels, **kwargs)
            bert = self.bert
            hidden = bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)  # (B, T, H)
            # the public mask builder: the same in transformers 5.17 and 5.24, where BertModel's private one is not
            mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=attention_mask)
            *lower, last = bert.encoder.layer
            for layer in lower:
                hidden = layer(hidden, mask)
            first = cls_only_layer(last, hidden, mask)                                      # (B, 1, H)
            logits = self.classifier(self.dropout(bert.pooler(first)))                      # (B, num_labels)
            return SequenceClassifierOutput(logits=logits)

    return BertForSequenceClassification


def cls_only_mpnet_layer(layer, hidden, mask, position_bias):
    """A transformers MPNetLayer's forward for the first position's query only: (B, T, H) -> (B, 1, H).

    `mask` is MPNetModel's attention mask (None, or (B, 1, 1 or T, T) boolean or additive) and
    `position_bias` the encoder's relative-position bias, (B, heads, T, T)."""
    attention = layer.attention.attn
    root = attention.attention_head_size ** 0.5
    context = first_query_context(hidden, mask, attention.q, attention.k, attention.v, attention.num_attention_heads,
                                  lambda scores: scores / root, attention.dropout, position_bias)
    attended = layer.attention.LayerNorm(layer.attention.dropout(attention.o(context)) + hidden[:, :1])
    return layer.output(layer.intermediate(attended), attended)


@functools.cache
def cls_pooled_mpnet_classifier():
    """transformers' MPNetForSequenceClassification (its name, weights and config), whose head reads the first
    position only, with the [CLS]-only last layer, as `cls_pooled_classifier` is for BERT."""
    from transformers import MPNetForSequenceClassification as TransformersMPNetForSequenceClassification
    from transformers.masking_utils import create_bidirectional_mask
    from transformers.modeling_outputs import SequenceClassifierOutput

    class MPNetForSequenceClassification(TransformersMPNetForSequenceClassification):
        def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
            if asks_for_more_than_logits(labels, input_ids, kwargs, self.mpnet.encoder.layer[-1]):
                return super().forward(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
            mpnet = self.mpnet
            hidden = mpnet.embeddings(input_ids=input_ids)                                     # (B, T, H)
            mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=attention_mask)
            bias = mpnet.encoder.compute_position_bias(hidden)                                 # (B, heads, T, T)
            *lower, last = mpnet.encoder.layer
            for layer in lower:
                hidden = layer(hidden, mask, bias)[0]
            first = cls_only_mpnet_layer(last, hidden, mask, bias)                             # (B, 1, H)
            return SequenceClassifierOutput(logits=self.classifier(first))                     # (B, num_labels)

    return MPNetForSequenceClassification
