"""`nlpforge corpus stats|tokenize|phrases|vocab`: look at a raw corpus and derive tokens, phrases, vocabularies.

    nlpforge corpus stats --corpus imdb_50k.csv.gz --column review
    nlpforge corpus tokenize --corpus notes.txt --format markers     # <BOS>hello<SP>world<SP>!<EOS>
    nlpforge corpus phrases --corpus imdb_50k.csv.gz --output phrases.json
    nlpforge corpus vocab --corpus imdb_50k.csv.gz --min-count 5 --held-out test.txt --output vocab.tsv
"""
import typer

from nlpforge.cli import app
from nlpforge.cli.options import command_from_settings
from nlpforge.text.corpus import CorpusSettings
from nlpforge.text.jobs import PhraseJob, TokenizeJob, VocabularyJob

corpus_app = typer.Typer(no_args_is_help=True, help="Look at a raw corpus; derive tokens, phrases and a vocabulary.")
app.add_typer(corpus_app, name="corpus")


def _stats(settings: CorpusSettings) -> None:
    from nlpforge.text.corpus import Corpus, corpus_stats

    typer.echo(corpus_stats(Corpus(settings)).text())


def _tokenize(job: TokenizeJob) -> None:
    from nlpforge.text.jobs import tokenized_lines, write_tokenized

    if job.output is None:
        for line in tokenized_lines(job):
            typer.echo(line)
        return
    typer.echo(f"wrote {write_tokenized(job):,} sentences to {job.output}")


def _phrases(job: PhraseJob) -> None:
    from nlpforge.text.jobs import phrases_from_corpus

    model = phrases_from_corpus(job)
    phrases = sorted(model.phrases.items(), key=lambda item: -item[1])
    typer.echo(f"{len(phrases):,} phrases from {model.corpus_tokens:,} tokens -> {job.output}")
    if phrases:
        typer.echo("highest scores: " + ", ".join(phrase for phrase, _ in phrases[:20]))


def _vocab(job: VocabularyJob) -> None:
    from nlpforge.text.jobs import vocabulary_from_corpus

    _, stats = vocabulary_from_corpus(job)
    typer.echo(stats.text())
    typer.echo(f"-> {job.output}")


command_from_settings(corpus_app, "stats", CorpusSettings, _stats,
                      help="Documents, sentences, tokens, types and the most common tokens.")
command_from_settings(corpus_app, "tokenize", TokenizeJob, _tokenize,
                      help="Write the corpus as tokens, one sentence a line (or <BOS>/<SP>/<EOS> markers).")
command_from_settings(corpus_app, "phrases", PhraseJob, _phrases,
                      help="Learn multi-word phrases (rio_de_janeiro) with gensim Phrases; save them as JSON.")
command_from_settings(corpus_app, "vocab", VocabularyJob, _vocab,
                      help="Build a vocabulary file (counts, min-count, max-size, special tokens) and its stats.")
