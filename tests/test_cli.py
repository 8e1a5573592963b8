"""The CLI reports user mistakes as one line with exit code 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mineralseg.cli import main


def _run(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _one_error_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith("error: "), text
    assert "Traceback" not in text
    return lines[0]


def test_missing_prepare_config(tmp_path, capsys):
    out = tmp_path / "dataset"
    code, text = _run(capsys, "prepare", str(tmp_path / "nope.yaml"), "--out", str(out))
    assert code == 2
    assert "nope.yaml" in _one_error_line(text)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_unknown_train_config_key_lists_valid_keys(tmp_path, capsys):
    cfg = tmp_path / "train.yaml"
    cfg.write_text("dataset: somewhere\ntrainer: {max_epoch: 3}\n")
    code, text = _run(capsys, "train", str(cfg))
    assert code == 2
    line = _one_error_line(text)
    assert "max_epoch" in line and "max_epochs" in line


def test_train_needs_config_or_resume(capsys):
    code, text = _run(capsys, "train")
    assert code == 2
    assert "--resume" in _one_error_line(text)


def test_synth_refuses_existing_output(tmp_path, capsys):
    out = tmp_path / "synth"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    code, text = _run(capsys, "synth", str(out), "--samples", "1", "--size", "512")
    assert code == 2
    assert "exists" in _one_error_line(text)
    assert (out / "keep.txt").read_text() == "user data"


def test_evaluate_missing_run(tmp_path, capsys):
    code, text = _run(capsys, "evaluate", str(tmp_path / "no-run"), "--dataset", str(tmp_path))
    assert code == 2
    assert "no-run" in _one_error_line(text)


def test_usage_error_exit_code(capsys):
    code, _ = _run(capsys, "prepare")
    assert code == 2


def test_console_script_entry_point(tmp_path):
    """The installed `mineralseg` command goes through main() (exit 2, no traceback)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from mineralseg.cli import main; sys.exit(main())",
         "prepare", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "d")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_train_is_quiet_when_not_on_a_terminal_and_verbose_brings_detail(tmp_path, tiny_dataset):
    """Piped output (not a TTY): a few summary lines, no progress bars, no Lightning chatter."""
    import os

    import yaml

    from conftest import tiny_train_config

    cfg = tiny_train_config(tiny_dataset, tmp_path / "runs", **{"trainer.max_epochs": 1,
                                                                "trainer.progress_bar": True})
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    env.pop("MINERALSEG_VERBOSE", None)
    command = [sys.executable, "-m", "mineralseg"]

    quiet = subprocess.run([*command, "train", str(path)], capture_output=True, text=True, timeout=300, env=env)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    lines = [ln for ln in (quiet.stdout + quiet.stderr).splitlines() if ln.strip()]
    assert len(lines) <= 3, lines
    assert lines[0].startswith("training finished, 4 steps, 1 epochs") and lines[-1].startswith("run folder: ")
    for noise in ("GPU available", "Tip", "Epoch 0", "it/s", "Params", "Warning", "`Trainer.fit` stopped"):
        assert noise not in quiet.stdout + quiet.stderr, noise

    verbose = subprocess.run([*command, "--verbose", "train", str(path)], capture_output=True, text=True,
                             timeout=300, env=env)
    assert verbose.returncode == 0, verbose.stderr[-2000:]
    assert "GPU available" in verbose.stdout + verbose.stderr  # Lightning's detail is back
    assert "Epoch 0" in verbose.stdout + verbose.stderr  # and the progress bar, although piped
