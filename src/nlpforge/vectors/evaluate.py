"""Score word vectors on the standard benchmarks that ship inside the gensim wheel.

- Google analogies (`questions-words.txt`, 19,544 questions): accuracy over the questions whose
  four words are among the `restrict_vocab` most frequent words (30,000 by default, as in
  Mikolov et al.); the others are counted as skipped.
- WordSim353 (`wordsim353.tsv`) and SimLex-999 (`simlex999.txt`): Spearman correlation between
  the cosine similarities and human ratings, with the pairs that have an unknown word counted.

    report = evaluate_vectors(load_vectors("vectors/imdb"))
    print(report.text())
"""
from dataclasses import asdict, dataclass

BENCHMARKS = {"wordsim353": "wordsim353.tsv", "simlex999": "simlex999.txt"}


@dataclass
class AnalogyScore:
    accuracy: float  # over the questions answered
    correct: int
    answered: int
    skipped: int  # questions with a word outside the restricted vocabulary


@dataclass
class SimilarityScore:
    spearman: float
    pearson: float
    pairs: int
    oov_pairs: int  # pairs with a word the vectors do not know (left out of the correlation)


@dataclass
class EvaluationReport:
    analogies: AnalogyScore
    similarity: dict  # benchmark name -> SimilarityScore
    restrict_vocab: int

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        a = self.analogies
        lines = [f"Google analogies   accuracy {a.accuracy:.1%} ({a.correct:,}/{a.answered:,} answered; "
                 f"{a.skipped:,} skipped: a word outside the {self.restrict_vocab:,} most frequent)"]
        for name, score in self.similarity.items():
            lines.append(f"{name:<18} Spearman {score.spearman:.3f} (Pearson {score.pearson:.3f}; "
                         f"{score.oov_pairs}/{score.pairs} pairs with an unknown word)")
        return "\n".join(lines)


def _line_count(path: str, comment: str = "#") -> int:
    """Questions or pairs in a benchmark file: its lines that are neither blank nor comments/headers."""
    with open(path, encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip() and not line.startswith(comment))


def evaluate_vectors(vectors, restrict_vocab: int = 30_000) -> EvaluationReport:
    """Analogy accuracy and word-similarity correlations of a `WordVectors` (or gensim KeyedVectors)."""
    from gensim.test.utils import datapath

    keyed_vectors = getattr(vectors, "keyed_vectors", vectors)
    _, sections = keyed_vectors.evaluate_word_analogies(datapath("questions-words.txt"),
                                                        restrict_vocab=restrict_vocab, case_insensitive=True)
    total = next(s for s in sections if s["section"] == "Total accuracy")
    correct, incorrect = len(total["correct"]), len(total["incorrect"])
    questions = _line_count(datapath("questions-words.txt"), comment=":")
    analogies = AnalogyScore(correct / (correct + incorrect) if correct + incorrect else 0.0, correct,
                             correct + incorrect, questions - correct - incorrect)
    similarity = {}
    for name, filename in BENCHMARKS.items():
        path = datapath(filename)
        pairs = _line_count(path)
        try:
            pearson, spearman, oov_percent = keyed_vectors.evaluate_word_pairs(
                path, restrict_vocab=restrict_vocab * 10, case_insensitive=True)
        except ValueError:  # gensim raises when every pair has an unknown word
            similarity[name] = SimilarityScore(float("nan"), float("nan"), pairs, pairs)
            continue
        similarity[name] = SimilarityScore(float(spearman[0]), float(pearson[0]), pairs,
                                           round(oov_percent / 100 * pairs))
    return EvaluationReport(analogies, similarity, restrict_vocab)
