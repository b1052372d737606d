"""Task data readers (no TensorFlow): labelled texts, input/target pairs, SQuAD, tables and templates."""
