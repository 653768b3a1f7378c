"""Where builds go: only earthvl's own earlier builds are replaced, links and unwritable places are refused, and
scratch folders of killed builds are cleaned by the next build into the same place."""

import json
import logging
import os
import socket
import subprocess
import sys

import pytest

from earthvl.atomic import check_writable
from earthvl.builders.folder import output_folder
from earthvl.dataset_folder import BUILD_MARKER
from earthvl.errors import EarthvlError


def build(out, dataset="GAIA", files=("build_report.json", "data/default/train-00000-of-00001.parquet")):
    with output_folder(out, dataset) as staging:
        for name in files:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_text(name)


def test_every_build_lists_what_it_wrote_in_its_marker(tmp_path):
    build(tmp_path / "out")
    marker = json.loads((tmp_path / "out" / BUILD_MARKER).read_text())
    assert marker["built_by"] == "earthvl" and marker["dataset"] == "GAIA" and marker["version"]
    assert marker["files"] == [
        "build_report.json", "data", "data/default", "data/default/train-00000-of-00001.parquet"
    ]


def test_a_folder_with_a_build_report_but_no_marker_is_not_replaced(tmp_path):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "build_report.json").write_text("{}")
    (out / "thesis.tex").write_text("three years of work")
    with pytest.raises(EarthvlError, match=f"output {out} exists and is not an earlier GAIA build by earthvl"):
        build(out)
    assert (out / "thesis.tex").read_text() == "three years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis"]


def test_an_earlier_build_is_replaced_only_while_it_holds_nothing_else(tmp_path):
    out = tmp_path / "out"
    build(out)
    build(out, files=("build_report.json", "README.md"))
    assert sorted(p.name for p in out.iterdir()) == [BUILD_MARKER, "README.md", "build_report.json"]

    (out / "notes").mkdir()
    (out / "notes" / "thesis.tex").write_text("mine")
    with pytest.raises(EarthvlError, match=r"holds files earthvl did not write \(notes, notes/thesis.tex\)"):
        build(out)
    assert (out / "notes" / "thesis.tex").read_text() == "mine"
    with pytest.raises(EarthvlError, match="is an earlier GAIA build, not ChatEarthNet"):
        build(out, dataset="ChatEarthNet")
    (out / BUILD_MARKER).write_text('{"built_by": "earthvl", "dataset": "GAIA", "files": ["notes", "notes/thesis.tex"]}')
    with pytest.raises(EarthvlError, match=r"holds files earthvl did not write \(README.md, build_report.json\)"):
        build(out)


def test_an_output_that_is_a_symbolic_link_is_refused_and_nothing_is_left_behind(tmp_path):
    real = tmp_path / "real"
    build(real)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(EarthvlError, match=f"{link} is a symbolic link \\(to {real}\\): not replacing it"):
        build(link)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]  # no .link.old-*, no scratch folder
    assert (real / "build_report.json").is_file() and link.resolve() == real


@pytest.mark.parametrize(
    "where, reason",
    [
        ("/proc/earthvl-test/out", "cannot create anything in /proc"),
        ("file.txt/out", "file.txt is not a folder"),
        ("file.txt", "it is not a folder"),
    ],
)
def test_unwritable_outputs_are_named_before_anything_is_written(tmp_path, where, reason):
    (tmp_path / "file.txt").write_text("x")
    out = tmp_path / where
    with pytest.raises(EarthvlError, match=f"cannot write the GAIA build {out}: .*{reason}"):
        build(out)
    with pytest.raises(EarthvlError, match="it is a folder"):
        check_writable(tmp_path, "results file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_a_killed_build_leaves_a_scratch_folder_that_the_next_build_cleans(tmp_path, caplog):
    out = tmp_path / "out"
    killed = f"""
import os, sys
from earthvl.atomic import staged_dir
with staged_dir(sys.argv[1], replace=True) as staging:
    (staging / "shard.partial").write_bytes(b"x" * 1000)
    os._exit(9)
"""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    assert subprocess.run([sys.executable, "-c", killed, str(out)], env=environment).returncode == 9
    [stale] = [p for p in tmp_path.iterdir() if p.name.startswith(".out.building-")]
    assert (stale / "shard.partial").is_file()
    host = socket.gethostname()
    running = tmp_path / f".out.building-{'a' * 12}-{os.getpid()}@{host}"  # a build still going on
    elsewhere = tmp_path / f".out.building-{'b' * 12}-{stale.name.rsplit('-', 1)[1]}"  # same pid, another host
    elsewhere = elsewhere.with_name(elsewhere.name.replace(f"@{host}", "@another-host"))
    other = tmp_path / stale.name.replace(".out.", ".other.")  # another target's
    for folder in (running, elsewhere, other):
        folder.mkdir()

    with caplog.at_level(logging.INFO, logger="earthvl"):
        build(out)
    assert not stale.exists() and running.is_dir() and elsewhere.is_dir() and other.is_dir()
    assert f"removed {stale}, left behind by process" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (out, running, elsewhere, other))
