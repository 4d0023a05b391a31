"""The question-answering baseline every QA report shows: the SQuAD paper's sliding-window baseline.

Rajpurkar et al. (2016), section 5.1: every span of up to four words is a candidate (the paper used
a parser's constituents); a candidate's sentence (the candidate itself left out) is compared with
the question by unigram and bigram overlap, the candidates of maximal overlap are kept, and among
them a sliding window after Richardson et al. (2013) picks one: windows around the candidate, as
long as the question and the candidate together, score the question words they hold, each weighted
by log(1 + 1 / its count in the context); ties go to the shorter, earlier candidate. With spans
instead of constituents, counting the candidate's own words would favour long spans, so only the
question's words count.

    answer_question("Who won Super Bowl 50?", context)   # -> "Denver Broncos"
"""
import math
import re
from collections import Counter

from nlpforge.tasks.token_classification import split_words

MAX_WORDS = 4
STOPWORDS = frozenset("a an the of in on at to for by with from and or is are was were be been what which who whom "
                      "whose when where why how did do does that this these those it its as".split())
_SENTENCE_END = re.compile(r"^[.!?]$")


def _grams(words: list[str]) -> set:
    return set(words) | {(a, b) for a, b in zip(words, words[1:])}


def answer_question(question: str, context: str) -> str:
    words = split_words(context)
    lower = [w.lower() for w, _, _ in words]
    question_words = [w.lower() for w, _, _ in split_words(question)]
    question_grams = _grams(question_words)
    sentences, start = [], 0
    for i, word in enumerate(lower):
        if _SENTENCE_END.match(word) or i == len(lower) - 1:
            sentences.append((start, i + 1))
            start = i + 1
    best, candidates = -1, []
    for s_start, s_end in sentences:
        for i in range(s_start, s_end):
            for j in range(i + 1, min(i + MAX_WORDS, s_end) + 1):
                span = lower[i:j]
                if all(w in STOPWORDS or not w.isalnum() for w in span) or set(span) <= set(question_words):
                    continue
                rest = lower[s_start:i] + lower[j:s_end]
                overlap = len(_grams(rest) & question_grams)
                if overlap > best:
                    best, candidates = overlap, [(i, j)]
                elif overlap == best:
                    candidates.append((i, j))
    if not candidates:
        return ""
    counts = Counter(lower)
    weight = {w: math.log(1 + 1 / counts[w]) for w in counts}
    target = set(question_words)
    scored = []
    for i, j in candidates:
        size = len(target) + (j - i)
        window_best = max(sum(weight[w] for w in set(lower[k:k + size]) & target)
                          for k in range(max(0, j - size), i + 1))
        scored.append((window_best, -(j - i), -i, i, j))
    _, _, _, i, j = max(scored)
    return context[words[i][1]:words[j - 1][2]]
