"""Every `earthvl` subcommand given nonsense (negative or zero counts, unwritable or impossible outputs, missing
inputs, bad ports, unknown choices): exit code 2 and one error line naming the problem, never a traceback, and
nothing loaded or written first. Runs the CLI in this process (a subprocess per case would cost seconds each)."""

import pytest

from earthvl.cli import COMMANDS, main

UNWRITABLE = "/proc/earthvl-nonsense/out"
"""A path no process can create, whoever runs the tests (root included)."""


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """A regular file (for FILE/out paths), an existing folder, an earlier build reached through a symbolic link."""
    root = tmp_path_factory.mktemp("nonsense")
    (root / "file.txt").write_text("a regular file")
    (root / "folder").mkdir()
    return root


def cases(places, sample_world) -> dict[str, list[tuple[list[str], str]]]:
    """Command -> (arguments, a fragment the error line must hold)."""
    file_out = str(places / "file.txt" / "out")
    folder = str(places / "folder")
    cen = str(sample_world.chatearthnet.root)
    gaia = str(sample_world.gaia.root)
    scenes = str(sample_world.scenes)
    missing = str(places / "missing")
    training = {
        "vlm": ["--config", "vlm/tiny"],
        "clip": ["--config", "clip/tiny"],
        "blip2": ["--config", "blip2/tiny"],
    }
    train = {
        f"train {name}": [
            (recipe + ["--datasets", missing, "--output_dir", UNWRITABLE], "/proc"),
            (recipe + ["--datasets", missing, "--output_dir", file_out], "is not a folder"),
            (recipe + ["--datasets", missing, "--per_device_train_batch_size", "0"], "per_device_train_batch_size"),
            (recipe + ["--datasets", missing, "--per_device_eval_batch_size", "-2"], "per_device_eval_batch_size"),
            (recipe + ["--datasets", missing, "--gradient_accumulation_steps", "0"], "gradient_accumulation_steps"),
            (recipe + ["--datasets", missing, "--num_train_epochs", "-1"], "num_train_epochs"),
            (recipe + ["--datasets", missing, "--num_train_epochs", "0", "--max_steps", "-1"], "num_train_epochs"),
            (recipe + ["--datasets", missing, "--max_pixels", "-1"], "max_pixels"),
            (recipe + ["--datasets", missing, "--max_eval_samples", "0"], "max_eval_samples"),
            (recipe + ["--datasets", missing, "--dataset_weights", "-1"], "dataset_weights"),
            (recipe + ["--datasets", missing, "--on_bad_image", "ignore"], "invalid choice: 'ignore'"),
            (recipe + ["--datasets", missing, "--output_dir", str(places / "run")], missing),
        ]
        for name, recipe in training.items()
    }
    # a chat template file is checked at parsing, before the (here missing) data and the model are loaded
    train["train vlm"].append(
        (training["vlm"] + ["--datasets", missing, "--chat_template", f"{missing}.jinja"], "missing.jinja: no such file")
    )
    evaluation = {
        f"eval {task}": [
            (["--model", "tiny-clip", "--dataset", scenes, "--out", f"{UNWRITABLE}/e.json"], "/proc"),
            (["--model", "tiny-clip", "--dataset", scenes, "--out", f"{file_out}/e.json"], "is not a folder"),
            (["--model", "tiny-clip", "--dataset", scenes, "--out", folder], "is a folder"),
            (["--model", "tiny-clip", "--dataset", scenes, "--max_samples", "0"], "max_samples"),
            (["--model", "tiny-clip", "--dataset", scenes, "--batch_size", "-1"], "batch_size"),
            (["--model", "tiny-clip", "--dataset", scenes, "--num_workers", "-1"], "num_workers"),
            (["--model", "tiny-clip", "--dataset", scenes, "--max_pixels", "0"], "max_pixels"),
            (["--model", "tiny-clip", "--dataset", scenes, "--dtype", "float8"], "invalid choice: 'float8'"),
            (["--model", "tiny-clip", "--dataset", missing, "--out", str(places / "e.json")], missing),
        ]
        for task in ("caption", "classify", "retrieve")
    }
    evaluation["eval caption"] += [
        (["--model", "tiny-blip2", "--dataset", scenes, "--max_new_tokens", "0"], "max_new_tokens"),
        (["--model", "tiny-blip2", "--dataset", scenes, "--num_beams", "0"], "num_beams"),
    ]
    evaluation["eval classify"] += [(["--model", "tiny-llava", "--dataset", scenes, "--max_new_tokens", "-3"], "max_new_tokens")]
    evaluation["eval retrieve"] += [
        (["--model", "tiny-clip", "--dataset", scenes, "--max_text_chunks", "0"], "max_text_chunks"),
        (["--model", "tiny-clip", "--dataset", scenes, "--long_text", "all"], "invalid choice: 'all'"),
    ]
    return {
        "quickstart": [
            (["--out", UNWRITABLE], "/proc"),
            (["--out", file_out], "is not a folder"),
            (["--out", str(places / "quickstart"), "--tiles", "0"], "tiles"),
            (["--out", str(places / "quickstart"), "--max_train_steps", "-1"], "max_train_steps"),
            (["--out", str(places / "quickstart"), "--seed", "-1"], "seed"),
        ],
        "sample": [
            (["--out", UNWRITABLE], "/proc"),
            (["--out", file_out], file_out),
            (["--out", folder, "--tiles", "0"], "tiles"),
            (["--out", folder, "--tiles", "-4"], "tiles"),
            (["--out", folder, "--gaia_images", "-1"], "gaia_images"),
            (["--out", folder, "--seed", "-1"], "seed"),
        ],
        "build chatearthnet": [
            (["--source", cen, "--out", UNWRITABLE], "/proc"),
            (["--source", cen, "--out", file_out], "is not a folder"),
            (["--source", cen, "--out", str(places / "cen"), "--num_proc", "0"], "num_proc"),
            (["--source", cen, "--out", str(places / "cen"), "--num_proc", "-1"], "num_proc"),
            (["--source", missing, "--out", str(places / "cen")], missing),
            (["--source", cen, "--out", str(places / "cen"), "--configs", "gpt5"], "gpt5"),
            (["--source", cen, "--out", folder + "/../file.txt"], "not a folder"),
        ],
        "generate chatearthnet": [
            (["--images", cen, "--labels", folder, "--out", UNWRITABLE], "/proc"),
            (["--images", cen, "--labels", folder, "--out", file_out], "is not a folder"),
            (["--images", missing, "--labels", folder, "--out", str(places / "gen")], missing),
            (["--images", cen, "--labels", missing, "--out", str(places / "gen")], missing),
            (["--images", cen, "--labels", folder, "--out", str(places / "gen")], "no usable patch"),
            (["--images", cen, "--labels", folder, "--out", str(places / "gen"), "--styles", "gpt5"], "gpt5"),
            (["--images", cen, "--labels", folder, "--out", str(places / "gen"), "--split_by", "x"], "invalid choice: 'x'"),
            (["--images", cen, "--labels", folder, "--out", str(places / "gen"), "--backend", "gpt"], "invalid choice: 'gpt'"),
            (["--images", cen, "--labels", folder, "--out", str(places / "gen"), "--concurrency", "0"], "concurrency"),
            (["--images", cen, "--labels", folder, "--out", str(places / "gen"), "--budget", "-1"], "budget"),
            (["--images", cen, "--labels", folder, "--out", str(places / "gen"), "--timeout", "0"], "timeout"),
            (["--images", cen, "--labels", folder, "--out", str(places / "gen"), "--reflectance_max", "0"], "reflectance_max"),
            (["--images", cen, "--labels", folder, "--out", str(places / "gen"), "--dates", missing], missing),
            (["--images", cen, "--labels", folder, "--out", str(places / "gen"), "--backend", "openai"], "--model"),
            (["--images", cen, "--labels", folder, "--out", cen], f"is --images {cen}"),
            (["--images", cen, "--labels", folder, "--out", f"{folder}/gen"], f"lies inside --labels {folder}"),
        ],
        "eval faithfulness": [
            (["--labels", folder], "exactly one of --dataset and --predictions"),
            (["--labels", folder, "--dataset", missing], missing),
            (["--labels", folder, "--predictions", str(places / "file.txt")], "file.txt"),
            (["--labels", folder, "--dataset", cen, "--split", "dev"], "invalid choice: 'dev'"),
            (["--labels", folder, "--dataset", cen, "--out", f"{UNWRITABLE}/f.json"], "/proc"),
            (["--labels", folder, "--dataset", cen], "no caption has a usable map"),
            (["--labels", missing, "--dataset", cen], missing),
            (["--labels", folder, "--dataset", cen, "--out", f"{folder}/f.json"], f"lies inside --labels {folder}"),
        ],
        "build gaia": [
            (["--source", gaia, "--out", UNWRITABLE], "/proc"),
            (["--source", gaia, "--out", file_out], "is not a folder"),
            (["--source", gaia, "--out", str(places / "gaia"), "--max_pixels", "-1"], "max_pixels"),
            (["--source", gaia, "--out", str(places / "gaia"), "--max_pixels", "0"], "max_pixels"),
            (["--source", gaia, "--out", str(places / "gaia"), "--resize", "0"], "resize"),
            (["--source", missing, "--out", str(places / "gaia")], missing),
            (["--source", gaia, "--out", str(places / "gaia"), "--images", "ftp"], "invalid choice: 'ftp'"),
        ],
        "annotate gaia": [
            (["--records", missing, "--out", UNWRITABLE, "--backend", "openai", "--model", "m"], "/proc"),
            (["--records", missing, "--out", file_out, "--backend", "openai", "--model", "m"], "is not a folder"),
            (["--records", missing, "--out", str(places / "ann"), "--backend", "openai", "--model", "m"], missing),
            (["--records", missing, "--out", str(places / "ann")], "needs a language model"),
            (["--records", missing, "--out", str(places / "ann"), "--backend", "openai"], "--model"),
            (["--records", missing, "--out", str(places / "ann"), "--min_words", "0"], "min_words"),
            (["--records", missing, "--out", str(places / "ann"), "--schema_retries", "-1"], "schema_retries"),
            (["--records", missing, "--out", str(places / "ann"), "--near_duplicate_distance", "65"], "near_duplicate"),
            (["--records", missing, "--out", str(places / "ann"), "--concurrency", "0"], "concurrency"),
            (["--records", missing, "--out", str(places / "ann"), "--backend", "claude"], "invalid choice: 'claude'"),
            (["--records", missing, "--out", str(places / "ann"), "--columns", "body"], "OURS=THEIRS"),
            (["--records", str(places / "file.txt"), "--out", str(places), "--backend", "openai", "--model", "m"],
             "holds --records"),
        ],
        "convert geochat": [
            (["--src", folder, "--out", UNWRITABLE], "/proc"),
            (["--src", folder, "--out", file_out], "is not a folder"),
            (["--src", folder, "--out", str(places / "llava"), "--image_size", "0"], "image_size"),
            (["--src", folder, "--out", str(places / "llava"), "--dtype", "float8"], "invalid choice: 'float8'"),
            (["--src", missing, "--out", str(places / "llava")], missing),
        ],
        "publish": [
            ([folder, "--repo", "not a repo id!"], "not a repo id!"),
            ([folder, "--repo", "org/name/extra"], "org/name/extra"),
            ([folder, "--space", "<b>--- x"], "<b>--- x"),
            ([missing, "--repo", "me/x"], missing),
            ([folder, "--repo", "me/x", "--repo_type", "notebook"], "invalid choice: 'notebook'"),
        ],
        **train,
        **evaluation,
        "card": [
            (["--results", missing, "--out", str(places / "card.md"), "--model_id", "<b>--- x"], "<b>--- x"),
            (["--results", missing, "--out", str(places / "card.md"), "--model_id", "a/b/c"], "a/b/c"),
            (["--results", missing, "--out", f"{UNWRITABLE}/card.md"], "/proc"),
            (["--results", missing, "--out", str(places / "card.md")], missing),
        ],
        "demo": [
            (["--port", "99999"], "port"),
            (["--port", "-1"], "port"),
            (["--max_pixels", "0"], "max_pixels"),
            (["--gallery", missing], missing),
        ],
    }


def run(argv: list[str], capsys) -> tuple[int | str, str]:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse's own errors
        code = exit_info.code
    except Exception as error:  # reported with the other failures rather than ending the walk
        code = f"{type(error).__name__}: {error}"
    return code, capsys.readouterr().err


def test_every_command_refuses_nonsense_with_one_line_and_exit_2(places, sample_world, capsys, monkeypatch):
    monkeypatch.chdir(places)  # where outputs with default names would land
    table = cases(places, sample_world)
    assert sorted(table) == sorted(COMMANDS)
    failures = []
    for command, command_cases in table.items():
        for args, fragment in command_cases:
            argv = command.split() + args
            code, err = run(argv, capsys)
            lines = [line for line in err.splitlines() if line.strip()]
            errors = [line for line in lines if line.startswith(f"earthvl {command}: error: ")]
            if code != 2 or "Traceback" in err or len(errors) != 1 or lines[-1] != errors[0] or fragment not in errors[0]:
                failures.append(f"{' '.join(argv)} -> exit {code}: {err[-600:]!r}")
    assert not failures, "\n".join(failures)
    assert sorted(p.name for p in places.iterdir()) == ["file.txt", "folder"]  # nothing written, no scratch folders
    assert not any((places / "folder").iterdir())
