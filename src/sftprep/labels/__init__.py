"""Stages 5-6: token ids and loss labels from a rendered conversation, then --max-length.

Glossary
  rendered text   the template's render of a conversation (templates/), with the character spans of every
                  trained turn (TurnSpan: generation-prompt end through the stop the model emits)
  piece           a stretch of the rendered text between two cuts (the boundaries of trained turns and of
                  user text that spells a special token); each piece is encoded on its own, so no token
                  straddles a boundary
  plain piece     user/system/tool text spelling an added token: encoded as plain text, never as the token
  literal         template text between added tokens (`<|im_start|>assistant\\n`): encoded once per run and
                  looked up (tokenize/literal_segments.py)
  part            what a piece is made of: its own text (HF or tiktoken encodes it) or cached literals
  recipe          per piece, its parts in order: how its ids are put together after the batch encode
  boundary check  a joint encoding around each cut, compared with the piecewise ids; a conversation whose
                  cuts a joint encoding would merge becomes one example per turn

build_loss_labels.py  pieces -> ids and labels (-100 where the model does not learn)
boundary_check.py     the cuts a joint encoding would merge
truncation.py         --truncation drop|right|history
"""
