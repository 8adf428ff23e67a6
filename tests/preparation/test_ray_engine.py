"""The Ray Data engine gives the local engine's outputs: same Parquet bytes, rejects and manifest counts.

Skipped when Ray is not installed (pip install "ray[data]"). The README's "Preparing on a Ray cluster"
commands are run here: `ray start --head`, `prepare_ray(..., ray_address=...)`, `map_prepare`, and the
CLI's `--engine ray --ray-address`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray", reason='the Ray engine needs Ray: pip install "ray[data]"')

from sftprep.errors import ConfigError, StrictModeError  # noqa: E402
from sftprep.preparation.options import PrepareOptions  # noqa: E402
from sftprep.preparation.run import prepare  # noqa: E402
from sftprep.read.records import read_records  # noqa: E402

ray_engine = pytest.importorskip("sftprep.preparation.ray_engine")

RAY_BIN = Path(sys.executable).parent / "ray"


def msgs(*turns: str) -> dict[str, Any]:
    roles = ("user", "assistant")
    return {"messages": [{"role": roles[i % 2], "content": t} for i, t in enumerate(turns)]}


GOOD = msgs("Capital of France?", "Paris.")
MULTI = msgs("Hi", "Hello!", "2+2?", "4", "And 3+3?", "6, of course.")
LONG = msgs("Tell me a long story. " * 40, "Once upon a time " * 60)


def line(record: Any) -> bytes:
    return (json.dumps(record) + "\n").encode()


def write_corpus(d: Path) -> list[str]:
    """Files in every input shape, with good, multi-turn and bad records."""
    d.mkdir(parents=True, exist_ok=True)
    mixed = [
        b"\xef\xbb\xbf" + line(GOOD),
        b"\n",
        line(MULTI),
        b'{"messages": [\n',
        b"[1, 2]\n",
        b'{"messages": NaN}\n',
        b'{"messages": "\xff"}\n',
        line({"conversations": [{"from": "human", "value": "Hey"}, {"from": "gpt", "value": "Hi there"}]}),
        line({"instruction": "Add 1 and 2", "input": "", "output": "3"}),
        line(msgs("only a user turn")),
        b"   \n",
        line(LONG),
        line(msgs("Hi", "Hello!", "Story?", "Once upon a time " * 30)),  # its second turn is dropped
        line({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}),
        b'{"messages": [{"role"',
    ]
    (d / "mixed.jsonl").write_bytes(b"".join(mixed))
    array = [GOOD, 5, msgs("Why?", "Because."), MULTI, {"messages": []}]
    (d / "array.json").write_text(json.dumps(array, indent=1), "utf-8")
    many = b"".join(line(msgs(f"Question {i}?", f"Answer {i}.", "More?", f"More {i}.")) for i in range(23))
    (d / "many.jsonl.gz").write_bytes(gzip.compress(many, mtime=0))
    noise = b"".join(line(msgs(os.urandom(6000).hex(), "ok")) for _ in range(20))  # too long: rejected
    (d / "cut.jsonl.gz").write_bytes(gzip.compress(noise, mtime=0)[:-40])  # a read error after some lines
    (d / "pretty.json").write_text(json.dumps(GOOD, indent=2) + "\n", "utf-8")
    (d / "empty.jsonl").write_bytes(b"")
    return [
        str(d / n) for n in ("mixed.jsonl", "array.json", "many.jsonl.gz", "cut.jsonl.gz", "pretty.json", "empty.jsonl")
    ]


def options(inputs: list[str], out: Path, **kw: Any) -> PrepareOptions:
    base = {"batch_size": 4, "shard_size": 6, "mask": "split-turns", "max_length": 96, "workers": 2}
    return PrepareOptions(inputs=inputs, out_dir=str(out), **{**base, **kw})


def prepare_locally(opts: PrepareOptions) -> dict[str, Any]:
    """The local engine, in this process (no fork: Ray may be running here)."""
    return prepare(dataclasses.replace(opts, workers=1))


def assert_same_outputs(local: Path, other: Path) -> None:
    """Same shards (Parquet equal row for row and byte for byte), rejects.jsonl, and manifest but "engine"."""
    m_local, m_other = (json.loads((d / "manifest.json").read_text("utf-8")) for d in (local, other))
    assert m_other.pop("engine") == "ray"
    assert m_local == m_other
    assert m_local["shards"] and m_local["records_rejected"] and m_local["examples_written"]
    for name in m_local["shards"]:
        assert pq.read_table(local / name).equals(pq.read_table(other / name)), name
        assert (local / name).read_bytes() == (other / name).read_bytes(), name
    assert (local / "rejects.jsonl").read_bytes() == (other / "rejects.jsonl").read_bytes()
    assert sorted(p.name for p in local.iterdir()) == sorted(p.name for p in other.iterdir())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def local_out(corpus: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("local") / "out"
    prepare_locally(options(corpus, out))
    return out


def test_prepare_ray_on_its_own_local_instance_matches_local_engine(
    corpus: list[str], local_out: Path, tmp_path: Path
) -> None:
    if ray.is_initialized():
        pytest.skip("Ray is already initialized in this process; this test checks prepare_ray starts its own")
    manifest = ray_engine.prepare_ray(options(corpus, tmp_path / "out"))
    assert not ray.is_initialized()  # the instance it started is shut down
    assert manifest["engine"] == "ray"
    assert_same_outputs(local_out, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging directory left


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


def test_overwrite_up_to_date_and_strict_rules(ray_local: None, corpus: list[str], tmp_path: Path) -> None:
    small = corpus[:1]  # mixed.jsonl: good and bad records
    out = tmp_path / "out"
    prepare_locally(options(small, out, mask="last-turn"))  # an earlier output made with other options
    with pytest.raises(ConfigError, match="--overwrite"):
        ray_engine.prepare_ray(options(small, out))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not written by sftprep"):
        ray_engine.prepare_ray(options(small, mine, overwrite=True))
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    (mine / "notes.txt").unlink()
    mine.rmdir()
    first = ray_engine.prepare_ray(options(small, out, overwrite=True, mask="assistant"))
    again = ray_engine.prepare_ray(options(small, out, mask="assistant"))
    assert again["up_to_date"] and again["cache_key"] == first["cache_key"]
    with pytest.raises(StrictModeError, match="strict mode"):
        ray_engine.prepare_ray(options(small, tmp_path / "strict", strict=True))
    with pytest.raises(ConfigError, match="--resume"):
        ray_engine.prepare_ray(options(small, tmp_path / "resume", resume=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert ray.is_initialized()  # an instance it did not start is left running


def example_key(row: dict[str, Any]) -> tuple[str, int, int]:
    return row["source_file"], row["source_line"], row["turn"]


def plain_sorted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Example rows as plain values (token lists, not arrays), ordered by source_file, source_line, turn."""
    rows = [{**r, "input_ids": list(r["input_ids"]), "labels": list(r["labels"])} for r in rows]
    return sorted(rows, key=example_key)


def text_rows(path: str) -> list[dict[str, Any]]:
    """A JSONL file as map_prepare rows: source_file, 1-based line, the line's text (blank lines skipped)."""
    lines = Path(path).read_text("utf-8").splitlines()
    return [{"source_file": path, "line": n, "text": t} for n, t in enumerate(lines, 1) if t.strip()]


def test_map_prepare_on_from_items_and_read_inputs(ray_local: None, tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(line(GOOD) + b"\n" + line(MULTI) + b"{oops\n" + line(msgs("no answer")) + line(LONG))
    opts = options([str(path)], tmp_path / "local", mask="split-turns", max_length=96)
    manifest = prepare_locally(opts)
    want = plain_sorted(
        [r for name in manifest["shards"] for r in pq.read_table(tmp_path / "local" / name).to_pylist()]
    )
    local_rejects = [json.loads(x) for x in (tmp_path / "local" / "rejects.jsonl").read_text("utf-8").splitlines()]
    want_rejects = sorted((r["reason"], r["source_file"], r["source_line"]) for r in local_rejects)
    counts = ("records_read", "examples_written", "records_rejected", "tokens")

    for ds in (ray.data.from_items(text_rows(str(path))), ray_engine.read_inputs([path])):
        examples, rejects, stats = ray_engine.split_prepared(ray_engine.map_prepare(ds, opts))
        assert plain_sorted(examples.take_all()) == want
        assert sorted((r.reason, r.source_file, r.line) for r in rejects) == want_rejects
        assert (stats.records_read, stats.examples, stats.records_rejected, stats.tokens) == tuple(
            manifest[k] for k in counts
        )


# ---------------------------------------------------------------------------- the README's cluster commands


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Head:
    address: str
    env: dict[str, str]  # what a driver needs to connect: Ray's token authentication


@pytest.fixture(scope="module")
def ray_head() -> Iterator[Head]:
    """`ray start --head` (in its own process group, stopped by its id, never by `ray stop`), with token
    authentication on and a token of its own (RAY_AUTH_TOKEN: ~/.ray/auth_token is neither read nor written)."""
    if not RAY_BIN.is_file():
        pytest.skip(f"{RAY_BIN} not found")
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="sftray-", dir="/tmp")  # short: Ray's socket paths are length-limited
    cmd = [str(RAY_BIN), "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false"]
    cmd += ["--disable-usage-stats", f"--temp-dir={temp_dir}", "--block"]
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    quick = {**env, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}  # stop at SIGTERM, without 30 s of draining
    head = subprocess.Popen(
        cmd, env=quick, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        wait_for_port(port, head)
        yield Head(f"127.0.0.1:{port}", env)
    finally:
        stop_group(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"ray start --head exited with {proc.returncode}")
        with socket.socket() as s, contextlib.suppress(OSError):
            s.connect(("127.0.0.1", port))
            return
        time.sleep(0.3)
    pytest.fail("ray start --head did not listen in time")


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to `ray start` (it drains and stops the Ray processes it started), then SIGKILL to whatever
    is left in its own process group."""
    proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=40)
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


PYTHON_API = """
import json, sys
from sftprep.preparation.ray_engine import prepare_ray
from sftprep.preparation.options import PrepareOptions
print(prepare_ray(PrepareOptions(**json.loads(sys.argv[1])), ray_address=sys.argv[2])["engine"])
"""


def test_prepare_ray_on_a_started_cluster(ray_head: Head, corpus: list[str], local_out: Path, tmp_path: Path) -> None:
    """The README's Python call, in a process of its own (as a user's script connects to the cluster)."""
    opts = json.dumps(dataclasses.asdict(options(corpus, tmp_path / "out")))
    r = run([sys.executable, "-c", PYTHON_API, opts, ray_head.address], ray_head.env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == "ray"
    assert_same_outputs(local_out, tmp_path / "out")


def run(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, check=False)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "sftprep.cli", *args], env)


def test_cli_engine_ray(ray_head: Head, corpus: list[str], tmp_path: Path) -> None:
    """`sftprep prepare ... --engine ray --ray-address ADDR`."""
    local = options(corpus, tmp_path / "local", batch_size=PrepareOptions.batch_size)  # the CLI's batches
    prepare_locally(local)
    args = ["prepare", *corpus, "-o", str(tmp_path / "out"), "--shard-size", str(local.shard_size), "-q"]
    args += ["--mask", local.mask, "--max-length", str(local.max_length)]
    r = cli(*args, "--engine", "ray", "--ray-address", ray_head.address, env=ray_head.env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_outputs(tmp_path / "local", tmp_path / "out")


def test_reader_rows_become_the_records_read_records_makes(corpus: list[str]) -> None:
    """No Ray needed: the read tasks' rows, parsed as the actors parse them, are records.read_records'."""
    for index, path in enumerate(corpus):
        rows = [row for table in ray_engine.read_blocks(path, path, index, 3) for row in table.to_pylist()]
        assert [ray_engine.raw_record(row) for row in rows] == list(read_records(path)), path
        assert [row["batch"] for row in rows] == [(index << 32) + n // 3 for n in range(len(rows))]


def test_an_actor_with_other_components_refuses_to_run(corpus: list[str], tmp_path: Path) -> None:
    opts = options(corpus, tmp_path / "out")
    with pytest.raises(ConfigError, match="same sftprep on every node"):
        ray_engine.PrepareBatches(opts, {"sftprep": "0.0.0", "tokenizer": "other"})


def test_options_are_shipped_with_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tpl.jinja").write_text("x", "utf-8")
    monkeypatch.chdir(tmp_path)
    opts = dataclasses.replace(options(["a.jsonl"], tmp_path / "o"), template="tpl.jinja", tokenizer="default")
    shipped = ray_engine._portable(opts)
    assert shipped.template == str(tmp_path / "tpl.jinja") and shipped.tokenizer == "default"


def test_ray_reader_cuts_batches_where_the_local_engine_does(tmp_path: Path) -> None:
    """Batches end after batch_size records or BATCH_BYTES of input, in both engines (shards close at batch
    ends, so the same batches give the same shard files): long records, a bad line, a blank line."""
    from sftprep.preparation.run import BATCH_BYTES, batched

    body = "x" * (BATCH_BYTES // 3)
    lines = [json.dumps({"messages": [{"role": "user", "content": body}, {"role": "assistant", "content": "k"}]})] * 20
    lines[3], lines[9] = "{not json", ""
    path = tmp_path / "long.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    local = [len(b) for b in batched(read_records(path), 5)]
    ray_sizes = [t.num_rows for t in ray_engine.read_blocks(str(path), str(path), 0, 5)]
    assert ray_sizes == local
    assert max(local) < 5 < sum(local)  # the byte budget cut them, not the record count


def test_new_containers_and_column_maps_give_the_local_bytes(ray_local: None, tmp_path: Path) -> None:
    """Parquet (rows of 1 KB: batches cut by bytes too), CSV, a save_to_disk directory and --columns: the
    Ray engine reads them through the same walk (records.iter_raw_lines) and writes the local engine's bytes."""
    import pyarrow as pa

    rows = [{"question": f"question {i} " + "word " * (i % 200), "answer": f"answer {i}"} for i in range(60)]
    rows.append({"question": None, "answer": "a row without a question: a reject"})
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "qa.parquet", row_group_size=7)
    (tmp_path / "qa.csv").write_text("question,answer\n" + "".join(f'"q{i}, with a comma",a{i}\n' for i in range(9)))
    inputs = [str(tmp_path / "qa.parquet"), str(tmp_path / "qa.csv")]
    try:
        import datasets

        datasets.Dataset.from_list(rows[:20]).save_to_disk(str(tmp_path / "ds"))
        inputs.append(str(tmp_path / "ds"))
    except ImportError:
        pass
    cols = {"columns": {"instruction": "question", "output": "answer"}, "mask": "assistant", "batch_size": 8}
    prepare_locally(options(inputs, tmp_path / "local", **cols))
    ray_engine.prepare_ray(options(inputs, tmp_path / "ray", **cols))
    assert_same_outputs(tmp_path / "local", tmp_path / "ray")
