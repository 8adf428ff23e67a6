"""Text to token ids, exactly as the tokenizer's owners encode it.

tokenizer.py        BPETokenizer: HF `tokenizers` (Rust) loaded from a tokenizer.json, a directory (encoded as
                    transformers configures it), a .tiktoken file, or the embedded default
fast_bpe.py         an exact tiktoken stand-in for HF, where it provably gives the same ids
regex_agree.py      the non-ASCII characters both regex engines read alike (fast_bpe takes text of them)
cache.py            where tokenizer analyses are cached
tiktoken_convert.py a .tiktoken rank file as an HF byte-level BPE
special_text.py     where user text spells a special token (encoded as plain text)
literal_segments.py template text between added tokens, encoded once per run
train_bpe.py        `sftprep tokenizer train`; corpus.py its corpus of rendered conversations
add_tokens.py       `sftprep tokenizer add-tokens`: a template's markers as special tokens of a copy
"""
