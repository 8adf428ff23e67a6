"""outdir.py: only directories sftprep wrote are replaced, one writer per output directory, stale locks recovered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sftprep.errors import ConfigError
from sftprep.outdir import (
    STAGING_MARKER,
    OutDirBusy,
    check_replaceable,
    lock_path,
    make_staging,
    normalized,
    out_dir_lock,
    replace_dir,
)

MARK = ("manifest.json",)


def test_absent_and_empty_are_replaceable(tmp_path: Path) -> None:
    check_replaceable(tmp_path / "new", MARK)
    (tmp_path / "empty").mkdir()
    check_replaceable(tmp_path / "empty", MARK)


def test_marked_dir_is_replaceable(tmp_path: Path) -> None:
    d = tmp_path / "out"
    d.mkdir()
    (d / "manifest.json").write_text("{}")
    (d / "data-00000.parquet").write_bytes(b"x")
    check_replaceable(d, MARK)
    check_replaceable(d, MARK, expected=("manifest.json", "data-*.parquet"))


def test_user_dir_is_refused_with_its_contents(tmp_path: Path) -> None:
    d = tmp_path / "mydata"
    d.mkdir()
    for i in range(7):
        (d / f"notes{i}.txt").write_text("mine")
    with pytest.raises(ConfigError) as e:
        check_replaceable(d, MARK)
    msg = str(e.value)
    assert str(d) in msg and "not written by sftprep" in msg and "notes0.txt" in msg and "7 entries" in msg
    assert "choose another -o" in msg
    assert e.value.exit_code == 2


def test_marked_dir_with_foreign_file_is_refused_when_expected_given(tmp_path: Path) -> None:
    d = tmp_path / "out"
    d.mkdir()
    (d / "manifest.json").write_text("{}")
    (d / "notes.txt").write_text("mine")
    check_replaceable(d, MARK)  # without `expected` a marked directory is sftprep's
    with pytest.raises(ConfigError, match=r"notes\.txt"):
        check_replaceable(d, MARK, expected=("manifest.json", "data-*.parquet"))


def test_file_symlink_and_file_parent_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "f.txt"
    f.write_text("mine")
    with pytest.raises(ConfigError, match="is a file"):
        check_replaceable(f, MARK)
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        check_replaceable(f / "sub" / "out", MARK)
    target = tmp_path / "real"
    target.mkdir()
    (target / "manifest.json").write_text("{}")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match="symbolic link"):
        check_replaceable(link, MARK)


def test_root_and_cwd_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for bad in (".", "/", "..", str(tmp_path)):
        with pytest.raises(ConfigError, match=r"root|current directory"):
            normalized(bad)
    assert normalized("out") == tmp_path.resolve() / "out"
    assert lock_path("./out") == lock_path(tmp_path / "out") == tmp_path.resolve() / ".out.lock"


def test_replace_dir_swaps_and_refuses_user_dir(tmp_path: Path) -> None:
    final = tmp_path / "out"
    final.mkdir()
    (final / "manifest.json").write_text('{"run": 1}')
    staging = make_staging(final, MARK)
    assert (staging / STAGING_MARKER).is_file()
    (staging / "manifest.json").write_text('{"run": 2}')
    replace_dir(staging, final, MARK)
    assert json.loads((final / "manifest.json").read_text()) == {"run": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging, no .old, no marker left
    assert sorted(p.name for p in final.iterdir()) == ["manifest.json"]

    user = tmp_path / "mydata"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    staging = make_staging(user, MARK)
    with pytest.raises(ConfigError):
        replace_dir(staging, user, MARK)
    assert (user / "notes.txt").read_text() == "mine"


def test_make_staging_never_deletes_a_user_dir_in_its_place(tmp_path: Path) -> None:
    squatter = tmp_path / ".out.tmp"
    squatter.mkdir()
    (squatter / "precious.txt").write_text("mine")
    with pytest.raises(ConfigError, match="precious"):
        make_staging(tmp_path / "out", MARK)
    assert (squatter / "precious.txt").read_text() == "mine"


def test_lock_is_exclusive_and_names_the_holder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with out_dir_lock(out, "prepare"):
        info = json.loads(lock_path(out).read_text())
        assert info["pid"] == os.getpid() and info["sftprep"] == "prepare"
        with pytest.raises(OutDirBusy) as e, out_dir_lock(tmp_path / "." / "out", "prepare"):
            pass
        assert f"pid {os.getpid()}" in str(e.value) and e.value.exit_code == 2
    assert not lock_path(out).exists()  # released and removed
    with out_dir_lock(out, "prepare"):  # and can be taken again
        pass


def test_lock_held_by_another_process_and_stale_lock_recovered(tmp_path: Path) -> None:
    out = tmp_path / "out"
    holder = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from sftprep.outdir import out_dir_lock
        with out_dir_lock(Path({str(out)!r}), "prepare"):
            print("locked", flush=True)
            time.sleep(60)
        """
    )
    p = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "locked"
        with pytest.raises(OutDirBusy, match=f"pid {p.pid}"), out_dir_lock(out, "prepare"):
            pass
    finally:
        p.kill()  # SIGKILL: the lock file stays behind, the lock does not
        p.wait()
    assert lock_path(out).exists()
    with out_dir_lock(out, "prepare"):
        assert json.loads(lock_path(out).read_text())["pid"] == os.getpid()


def test_lock_in_unwritable_parent_is_a_config_error(tmp_path: Path) -> None:
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        if os.access(parent, os.W_OK):
            pytest.skip("running as root: permissions are not enforced")
        with pytest.raises(ConfigError, match="cannot create the lock file"), out_dir_lock(parent / "out", "x"):
            pass
    finally:
        parent.chmod(0o700)


# ---------------------------------------------------------------------------- two `sftprep prepare` runs, one OUT_DIR


def _records(tag: str, n: int) -> str:
    turns = [{"role": "user", "content": f"{tag} q"}, {"role": "assistant", "content": f"{tag} a"}]
    return "".join(json.dumps({"messages": turns}) + "\n" for _ in range(n))


def _consistent(out: Path) -> dict[str, object]:
    """OUT_DIR's manifest and data come from one run: counts equal Parquet rows, sources equal per_file."""
    import pyarrow.parquet as pq

    manifest = json.loads((out / "manifest.json").read_text())
    assert {p.name for p in out.iterdir()} == {"manifest.json", "rejects.jsonl", *manifest["shards"]}
    tables = [pq.read_table(out / s) for s in manifest["shards"]]
    assert sum(t.num_rows for t in tables) == manifest["examples_written"]
    sources = {s for t in tables for s in t.column("source_file").to_pylist()}
    assert sources == set(manifest["per_file"])
    assert manifest["per_file"][next(iter(sources))]["records_read"] == manifest["examples_written"]
    return manifest


SLOW_RUN = """
import sys, time
from sftprep.preparation.options import PrepareOptions
from sftprep.preparation.run import prepare
def slow(records, tokens):
    print("batch", flush=True)
    time.sleep(0.3)
prepare(PrepareOptions(inputs=[sys.argv[1]], out_dir=sys.argv[2], batch_size=10, overwrite=True), on_batch=slow)
"""


def test_a_second_run_is_refused_naming_the_first(tmp_path: Path) -> None:
    from cli_helpers import cli

    (tmp_path / "a.jsonl").write_text(_records("a", 60))
    (tmp_path / "b.jsonl").write_text(_records("b", 30))
    first = subprocess.Popen([sys.executable, "-c", SLOW_RUN, "a.jsonl", "out"], cwd=tmp_path, stdout=subprocess.PIPE)
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == b"batch"  # it holds the lock now
        r = cli(tmp_path, "prepare", "b.jsonl", "-o", "out", "--overwrite", "--workers", "1")
        assert r.returncode == 2, r.stderr
        assert "being written by another sftprep run" in r.stderr and f"pid {first.pid}" in r.stderr
        assert "Traceback" not in r.stderr
    finally:
        first.wait(timeout=120)
    assert first.returncode == 0
    manifest = _consistent(tmp_path / "out")
    assert manifest["examples_written"] == 60
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "b.jsonl", "out"]  # no staging, no lock


def test_two_runs_started_together_leave_one_runs_output(tmp_path: Path) -> None:
    """Issue #16: the two runs shared `.out.tmp`; one crashed and `out` held one run's manifest over the other's
    Parquet. Now each pair ends with one run's output, whole; a run that lost the race exits 2."""
    from cli_helpers import sftprep_cmd

    (tmp_path / "a.jsonl").write_text(_records("a", 3000))  # big enough that the runs overlap
    (tmp_path / "b.jsonl").write_text(_records("b", 2000))
    for _ in range(3):
        procs = [
            subprocess.Popen(
                [*sftprep_cmd(), "prepare", f"{x}.jsonl", "-o", "out", "--overwrite", "--workers", "1", "-q"],
                cwd=tmp_path,
                stderr=subprocess.PIPE,
                text=True,
            )
            for x in "ab"
        ]
        results = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in procs]
        for code, err in results:
            assert "Traceback" not in err, err
            assert code in (0, 2), err
            if code == 2:
                assert "being written by another sftprep run" in err, err
        assert any(code == 0 for code, _ in results)
        _consistent(tmp_path / "out")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "b.jsonl", "out"]


@pytest.mark.parametrize("worker_forgets", [True, False])
def test_a_worker_outliving_a_killed_parent_does_not_hold_its_lock(tmp_path: Path, worker_forgets: bool) -> None:
    """flock belongs to the open file a fork shares: a pool worker (its initializer forgets the lock) left
    behind by a SIGKILLed parent must not keep OUT_DIR busy; a plain forked child would (the control)."""
    out = tmp_path / "out"
    holder = textwrap.dedent(
        f"""
        import os, time
        from pathlib import Path
        from sftprep.outdir import out_dir_lock
        from sftprep.preparation.run import _init_worker
        with out_dir_lock(Path({str(out)!r}), "prepare"):
            ready, go = os.pipe()
            pid = os.fork()
            if pid == 0:
                if {worker_forgets!r}:
                    _init_worker([])
                os.write(go, b"x")
                time.sleep(60)
                os._exit(0)
            os.read(ready, 1)  # the worker has initialized
            print(pid, flush=True)
            time.sleep(60)
        """
    )
    p = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    child = 0
    try:
        assert p.stdout is not None
        child = int(p.stdout.readline())
        p.kill()
        p.wait()
        if worker_forgets:
            with out_dir_lock(out, "prepare"):
                assert json.loads(lock_path(out).read_text())["pid"] == os.getpid()
        else:
            with pytest.raises(OutDirBusy), out_dir_lock(out, "prepare"):
                pass
    finally:
        p.kill()
        if child:
            os.kill(child, 9)
