"""The console contract: medray's own lines on the terminal, what Ray and TensorFlow say in the run's log."""

import os
import re
import sys

from medray import console

PROGRESS_LINE = re.compile(r"^(decode|explain): \d+/\d+ images$")
EPOCH_LINE = re.compile(r"^epoch (\d+)/2  loss ", re.MULTILINE)
# What Ray, Ray Data, Ray Train and TensorFlow print on their own.
INTERNALS = ("TrainingReport", "RayTrainWorker", "TrainController", "oneDNN", "cuda", "Running Dataset",
             "Execution plan", "streaming_executor", "absl", "Deprecat")


def test_a_run_prints_one_line_per_epoch_and_no_ray_or_tensorflow_internals(finished_run):
    shown = (finished_run / "console.txt").read_text()
    assert [int(epoch) for epoch in EPOCH_LINE.findall(shown)] == [1, 2]
    assert not [word for word in INTERNALS if word.lower() in shown.lower()], shown
    assert "decode: 104/104 images" in shown and "explain: 24/24 images" in shown
    assert "data: 104 rows in, 104 used, 0 reported" in shown and "test       accuracy" in shown
    # a screen, not a scroll: the summary and a dozen lines of progress (how many progress lines
    # depends on how fast blocks finish, so they are counted apart)
    progress = [line for line in shown.splitlines() if PROGRESS_LINE.match(line)]
    assert len(progress) <= 12, shown
    assert len(shown.splitlines()) - len(progress) < 40, shown


def test_the_run_log_holds_what_ray_and_tensorflow_said(finished_run):
    log = (finished_run / "logs" / "ray.log").read_text()
    assert "TrainingReport" in log and "RayTrainWorker" in log  # every worker's reports
    assert "oneDNN" in log  # TensorFlow's C++ start-up lines, from the driver and the workers


def test_quiet_logs_python_and_c_level_output_and_says_its_own_lines(tmp_path, capfd):
    with console.quiet():
        print("a library's print")
        os.write(2, b"a C++ line on descriptor 2\n")
        console.say("medray's own line")
        log = console.keep_log_in(tmp_path / "logs")
        print("after the log found its run folder", file=sys.stderr)
    shown = capfd.readouterr()
    assert shown.out == "medray's own line\n" and shown.err == ""
    assert log.read_text().splitlines() == ["a library's print", "a C++ line on descriptor 2",
                                            "after the log found its run folder"]


def test_verbose_shows_the_log_live_and_still_writes_it(tmp_path, capfd):
    with console.quiet(verbose=True):
        log = console.keep_log_in(tmp_path / "logs")
        os.write(1, b"what Ray said\n")
        console.say("medray's own line")
    shown = capfd.readouterr().out
    assert "what Ray said" in shown and "medray's own line" in shown
    assert log.read_text() == "what Ray said\n"


def test_progress_on_a_pipe_is_a_line_per_quarter(capfd):
    with console.ProgressBar("decode", 8) as progress:
        for _ in range(8):
            progress.advance(1)
    assert capfd.readouterr().out.splitlines() == [
        "decode: 0/8 images", "decode: 2/8 images", "decode: 4/8 images", "decode: 6/8 images", "decode: 8/8 images"]
