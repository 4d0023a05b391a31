"""A sequence classifier on the mean of the token vectors, the way sentence-transformers encoders
(all-MiniLM among them) were trained, instead of BERT's pooler on the [CLS] token.

    cls = mean_pooled_classifier()
    model = cls.from_pretrained("models/stars")       # config.json says "pooling": "mean"
    model(input_ids=ids, attention_mask=mask).logits  # (B, num_labels)

Its weights are BertForSequenceClassification's without the pooler, and its config.json names it.
Plain transformers would load the folder as a [CLS] classifier with a fresh pooler; `nlpforge.load`
reads the "pooling" entry and builds this class.
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
