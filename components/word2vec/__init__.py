"""Word2VecGen: offline post and query-token vectors (docs/word2vec.md)."""
