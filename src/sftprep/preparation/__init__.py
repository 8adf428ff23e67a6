"""The `prepare` command: a run over the pipeline and what it writes.

options.py    PrepareOptions, validated once at the edge (modes are Literals); flags + data config resolved
pipeline.py   Preparer: a batch of records through read -> templates -> tokenize -> labels
run.py        the whole run: inputs checked, batches (workers, encode overlapped), shards in record order,
              resume, up-to-date check, one writer per OUT_DIR (sftprep/outdir.py)
sourcing.py   the sources of a run, their files and batches (--dedup in record order)
mixture.py    sampling per source and the eval split, after every record is prepared
stats.py      the counters of a run (merged from workers)
manifest.py   the manifest: written and read by this module only (a typed Manifest)
output.py     Parquet shards, rejects.jsonl
progress.py, summary.py   what the terminal shows
ray_engine.py the same run on a Ray cluster (optional `ray` extra)
"""
