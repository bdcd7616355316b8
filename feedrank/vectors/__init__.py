"""Offline vectorization (58.com style): Word2Vec post and query-token vectors.

`corpus` turns the event log into per-user click sequences and per-query token
lists over the ``window_days`` days that end where the ranker's train split
starts (the example generator's warm-up days: every example is later than every
event the vectors saw); `train` fits gensim skip-gram Word2Vec on them;
`artifact` reads and writes the vectors directory the `Word2VecGen` component
outputs and the Trainer reads.  See docs/word2vec.md.
"""
