"""Stages 1-2 of the pipeline: inputs -> RawRecord -> canonical Conversation (or a Reject that says why).

inputs.py           input paths to files: directories, globs, save_to_disk dirs; formats refused up front
records.py          the one walk over a file (every engine): JSON/JSONL here, the others below; RawRecords
json_stream.py      large JSON arrays, element by element
columnar.py         Parquet (by row group), Arrow IPC, datasets.save_to_disk directories: rows as records
delimited.py        CSV/TSV rows as records
containers.py       plain or gzip/zstd/bz2/xz-compressed bytes; sniff.py: what a file holds
format_hints.py     what a file sftprep does not read is, and the command that converts it
columns.py          --columns / --tags: the data's field names and message tags to sftprep's
sources.py          a source of a mixture (paths, reading, per-source options, sampling)
dataconfig.py       a data config file (YAML/TOML); llamafactory.py: LLaMA-Factory's dataset_info.json
formats.py          the chat shapes (OpenAI messages, ShareGPT) -> Messages
formats_instruct.py the instruction shapes (Alpaca, prompt/completion)
normalize_conversations.py  detect the shape per record, check roles: Conversation or Reject
system_prompt.py    --system-prompt / --system-policy
"""
