"""Stages 1-2 of the pipeline: input files -> RawRecord -> canonical Conversation (or a Reject that says why).

records.py          files to RawRecords (JSON/JSONL, gzip; other formats recognised and refused up front)
format_hints.py     what a file sftprep does not read is, and the command that converts it
formats.py          the chat shapes (OpenAI messages, ShareGPT) -> Messages
formats_instruct.py the instruction shapes (Alpaca, prompt/completion)
normalize_conversations.py  detect the shape per record, check roles: Conversation or Reject
system_prompt.py    --system-prompt / --system-policy
"""
