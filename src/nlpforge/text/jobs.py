"""The corpus stage's jobs: each reads a corpus and writes one thing (tokens, phrases, a vocabulary).

They compose the stage's parts (`corpus` streams sentences, `phrases` joins them, `vocabulary`
counts them), so those parts never import each other. `nlpforge corpus tokenize|phrases|vocab`
calls these functions with settings built from its flags.

    lines = tokenized_lines(TokenizeJob.of(corpus=["notes.txt"], format="markers"))
    sentences = write_tokenized(TokenizeJob.of(corpus=["notes.txt"], output="tokens.txt"))
    model = phrases_from_corpus(PhraseJob.of(corpus=["imdb_50k.csv.gz"], column="review"))
    vocabulary, stats = vocabulary_from_corpus(VocabularyJob.of(corpus=["train.txt"], held_out="test.txt"))
"""
from collections import Counter
from dataclasses import dataclass, replace
from typing import Iterator, Literal

from nlpforge.settings import Settings, check_apart, check_writable, group, replacing, setting
from nlpforge.text.corpus import Corpus, CorpusSettings, corpus_files
from nlpforge.text.phrases import PhraseLearningSettings, PhraseModel, learn_phrases
from nlpforge.text.tokenize import render_markers
from nlpforge.text.vocabulary import Vocabulary, VocabularySettings, VocabularyStats, build_vocabulary, vocabulary_stats


@dataclass
class TokenizeJob(Settings):
    """Write a corpus as tokens: one sentence a line, space-separated or in the <BOS>/<SP>/<EOS> rendering."""

    text: CorpusSettings = group(CorpusSettings)
    output: str | None = setting(None, "file to write (default: print to the terminal)")
    format: Literal["tokens", "markers"] = setting("tokens", "tokens (space-separated) or markers "
                                                             "(<BOS>hello<SP>world<SP>!<EOS>)")
    phrases: str | None = setting(None, "phrase file from `nlpforge corpus phrases` to join phrases with")


def tokenized_lines(job: TokenizeJob) -> Iterator[str]:
    """The corpus's sentences rendered as `job.format` lines, phrases joined when `job.phrases` is set."""
    phrases = PhraseModel.load(job.phrases) if job.phrases else None
    sentences = iter(Corpus(job.text))
    if phrases:
        sentences = phrases.apply_all(sentences)
    render = render_markers if job.format == "markers" else " ".join
    for tokens in sentences:
        yield render(tokens)


def write_tokenized(job: TokenizeJob) -> int:
    """Write `tokenized_lines` to `job.output` and return how many: through a temporary file beside it, renamed
    into place at the end, so a failure (a binary corpus, a missing phrase file) leaves an earlier file as it was."""
    check_apart(job.output, [*job.text.source.corpus, job.phrases])
    check_writable(job.output, "--output", folder=False)
    lines = 0
    with replacing(job.output) as partial, open(partial, "w", encoding="utf-8") as out:
        for line in tokenized_lines(job):
            out.write(line + "\n")
            lines += 1
    return lines


@dataclass
class PhraseJob(Settings):
    """Learn multi-word phrases from a corpus and save them as a JSON file."""

    text: CorpusSettings = group(CorpusSettings)
    phrase: PhraseLearningSettings = group(PhraseLearningSettings)
    output: str = setting("phrases.json", "phrase file to write")


def phrases_from_corpus(job: PhraseJob) -> PhraseModel:
    """Stream the corpus once per pass, learn the phrases, save them to `job.output`."""
    check_apart(job.output, job.text.source.corpus)
    check_writable(job.output, "--output", folder=False)
    model = learn_phrases(Corpus(job.text), job.phrase)
    model.save(job.output)
    return model


@dataclass
class VocabularyJob(Settings):
    """Count a corpus's tokens into a vocabulary file, and report coverage and held-out OOV."""

    text: CorpusSettings = group(CorpusSettings)
    vocabulary: VocabularySettings = group(VocabularySettings)
    output: str = setting("vocab.tsv", "vocabulary file to write")
    held_out: str | None = setting(None, "held-out file read like the corpus, for the OOV rate")
    phrases: str | None = setting(None, "phrase file from `nlpforge corpus phrases` to join phrases first")

    def check(self):
        if self.held_out:
            corpus_files([self.held_out])


def vocabulary_from_corpus(job: VocabularyJob) -> tuple[Vocabulary, VocabularyStats]:
    """Stream the corpus once, build and save the vocabulary, and measure it (on the held-out file too)."""
    check_apart(job.output, [*job.text.source.corpus, job.held_out, job.phrases])
    check_writable(job.output, "--output", folder=False)
    phrases = PhraseModel.load(job.phrases) if job.phrases else None
    counts = Counter()
    sentences = iter(Corpus(job.text))
    for tokens in phrases.apply_all(sentences) if phrases else sentences:
        counts.update(tokens)
    vocabulary = build_vocabulary(counts, job.vocabulary)
    held_out = None
    if job.held_out:
        source = replace(job.text.source, corpus=[job.held_out], max_documents=None)
        held_out = iter(Corpus(replace(job.text, source=source)))
        held_out = phrases.apply_all(held_out) if phrases else held_out
    stats = vocabulary_stats(vocabulary, counts, held_out)  # first: a held-out file that fails leaves the output
    vocabulary.save(job.output)
    return vocabulary, stats
