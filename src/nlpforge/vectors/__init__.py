"""Word vectors: word2vec training on gensim, queries, maps and benchmark evaluation."""
