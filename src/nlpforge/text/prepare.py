"""Turn a raw corpus into one token file, phrases joined, with its token counts: what word2vec reads.

Normalising and phrase-joining happen once, in streaming passes that spill to disk; word2vec's
epochs then read the token file in gensim's compiled `corpus_file` mode, so no epoch pays for
Python text processing again and every worker thread reads its own part of the file.

    prepared = prepare_corpus(corpus_settings, phrase_settings, workdir="runs/tmp")
    prepared.path      # one sentence a line, tokens separated by spaces
    prepared.counts    # Counter of the tokens in that file (phrases counted as one token)

Passes over the raw data: one, tokenised on every core (`Corpus.encoded`). Phrase pass k reads pass
k-1's spilled token ids, not the text.
"""
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nlpforge.text.corpus import Corpus, CorpusSettings, empty_corpus
from nlpforge.text.pair_counts import write_sentences
from nlpforge.text.phrases import PhraseLearner, PhraseModel, PhraseSettings


@dataclass
class PreparedCorpus:
    path: Path
    counts: Counter
    sentences: int
    corpus_tokens: int  # tokens before phrases were joined
    phrases: PhraseModel | None
    seconds: dict = field(default_factory=dict)  # time per stage

    @property
    def tokens(self) -> int:
        """Tokens in the prepared file (a phrase counts once)."""
        return sum(self.counts.values())


def prepare_corpus(text: CorpusSettings, phrase: PhraseSettings, workdir) -> PreparedCorpus:
    """Read, normalise and tokenise the corpus, learn and join phrases; write `workdir/tokens.txt`."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    corpus = Corpus(text)
    final = workdir / "tokens.txt"
    seconds = {}
    start = time.perf_counter()
    if phrase.phrase_passes == 0:
        counts, sentences = write_sentences(final, ((np.array(words, dtype=object), ids, lengths)
                                                    for words, ids, lengths in corpus.encoded()))
        seconds["read, normalise, tokenise"] = time.perf_counter() - start
        phrases, corpus_tokens = None, sum(counts.values())
    else:
        with PhraseLearner(phrase, spill_dir=workdir) as learner:
            phrases = learner.learn_chunks(learner.ids.encode(corpus.encoded()))
            seconds["read, normalise, tokenise, learn phrases"] = time.perf_counter() - start
            start = time.perf_counter()
            counts, sentences = learner.write_joined(final)
            seconds["join phrases"] = time.perf_counter() - start
        corpus_tokens = phrases.corpus_tokens
    if not counts:
        raise empty_corpus(text)
    return PreparedCorpus(final, counts, sentences, corpus_tokens, phrases, seconds)
