"""LAQ on generated sim episodes: training, checkpoints and resume, labelling, evaluation, bad data."""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from lapa_models.data.episodes import DatasetInfo, Episode, EpisodeWriter
from lapa_models.data.errors import EpisodeFormatError
from lapa_models.laq import CheckpointError, LAQModel, get_config
from lapa_models.laq import evaluate as laq_evaluate
from lapa_models.laq import label as laq_label
from lapa_models.laq import train as laq_train
from lapa_models.laq.evaluate import (evaluate, fit_linear_probe, fit_pixel_idm, one_hot_tokens, r2_scores, score_probe,
                                     split_by_episode, split_by_task)
from lapa_models.laq.label import LatentLabelError, label_dataset, load_latents
from lapa_models.laq.modeling import read_safetensors
from lapa_models.laq.train import train

os.environ.setdefault("MUJOCO_GL", "egl")
TASKS = "reach,drawer-close,button-press-topdown"
TRAIN_STEPS = 200


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """Expert episodes of three tasks (64x64, 20 Hz), and held-out episodes of the same tasks (other seeds)."""
    from lapa_sim.generate import generate

    root = tmp_path_factory.mktemp("laq_sim")
    generate(root / "train", tasks=TASKS, episodes_per_task=6, image_size=(64, 64), workers=1, progress=False)
    generate(root / "held_out", tasks=TASKS, episodes_per_task=3, seed=1000, image_size=(64, 64), workers=1,
             progress=False)
    return root


@pytest.fixture(scope="module")
def run(sim, tmp_path_factory):
    """The tiny config trained for a CI-sized budget."""
    out = tmp_path_factory.mktemp("laq_run") / "run"
    # Seed 1: whether a code goes unused for a whole logged window between replacements (steps 100-200
    # replace only at 200) is a matter of the random stream; seed 0's stream lets one do so since the pairs
    # are drawn per step (lapa_models.data.sampling), with the same final loss.
    summary = train(get_config("tiny"), sim / "train", out, steps=TRAIN_STEPS, log_every=25, save_every=100,
                    warmup_steps=20, progress=False, seed=1)
    return out, summary


@pytest.fixture(scope="module")
def report(run, sim):
    return evaluate(run[0] / "final", sim / "held_out", progress=False)


def _parse(module, argv):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------- training
def test_training_beats_the_copy_frame_baseline_on_held_out_episodes(run, report):
    out, summary = run
    assert summary["final"]["loss"] < 0.85 * summary["final"]["copy_mse"]
    recon = report["reconstruction"]
    assert recon["mse"] < 0.85 * recon["copy_mse"], recon  # nearest codes, episodes never seen in training


def test_every_code_is_in_use_after_training(run, report):
    out, summary = run
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(25, TRAIN_STEPS + 1, 25))
    assert all(m["codes_used"] == 8 for m in metrics[-2:]) and summary["collapse_warnings"] == 0
    assert report["codebook"]["codes_used"] == 8 and report["codebook"]["perplexity"] > 4
    assert not report["codebook"]["collapse"]


def test_training_writes_safetensors_checkpoints_metrics_and_figures(run):
    out, _ = run
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-100", "checkpoint-200"]
    for directory in (out / "checkpoint-200", out / "final"):
        assert (directory / "config.json").is_file() and read_safetensors(directory / "model.safetensors")
    state = out / "checkpoint-200"
    assert "exp_avg/quantizer.codebook" in read_safetensors(state / "training_state.safetensors")
    assert json.loads((state / "training_state.json").read_text())["step"] == 200
    assert not [p for p in out.rglob("*") if p.suffix in (".pt", ".pth", ".bin", ".pkl", ".ckpt")]
    for figure in ("training.png", "reconstructions.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == TRAIN_STEPS and summary["final"]["codes_used"] == 8


def test_resume_continues_exactly_where_the_run_stopped(sim, tmp_path):
    kwargs = dict(batch_size=8, log_every=3, save_every=6, warmup_steps=4, num_monitor_pairs=16, progress=False)
    straight = tmp_path / "straight"
    train(get_config("tiny"), sim / "train", straight, steps=12, **kwargs)
    interrupted = tmp_path / "interrupted"
    train(get_config("tiny"), sim / "train", interrupted, steps=6, **kwargs)
    train(get_config("tiny"), sim / "train", interrupted, steps=12, resume=True, **kwargs)
    a, b = (read_safetensors(d / "final" / "model.safetensors") for d in (straight, interrupted))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the code replacement at step 10 included
    a, b = (read_safetensors(d / "checkpoint-12" / "training_state.safetensors") for d in (straight, interrupted))
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [[json.loads(line)["loss"] for line in (d / "metrics.jsonl").read_text().splitlines()]
              for d in (straight, interrupted)]
    assert losses[0] == losses[1] and len(losses[0]) == 4


def test_a_run_is_not_overwritten_and_resumes_only_with_its_own_config(run, sim):
    out, _ = run
    with pytest.raises(FileExistsError, match="already holds checkpoints; pass --resume"):
        train(get_config("tiny"), sim / "train", out, steps=5, progress=False)
    with pytest.raises(CheckpointError, match="cannot resume with a different LAQ config.*frame_gap: 2 vs 3"):
        train(get_config("tiny", frame_gap=2), sim / "train", out, steps=5, resume=True, progress=False)


def test_a_collapsed_codebook_is_reported_loudly(tmp_path, capsys):
    # Static video: every transition is the same, so each of the 2 token positions always gets one code.
    frame = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    writer = EpisodeWriter(tmp_path / "static", DatasetInfo(fps=20.0, image_height=64, image_width=64))
    for _ in range(2):
        writer.write(Episode(frames=np.stack([frame] * 12), timestamps=np.arange(12) / 20.0))
    summary = train(get_config("tiny", num_latent_tokens=2), tmp_path / "static", tmp_path / "run", steps=20,
                    batch_size=8, log_every=10, num_monitor_pairs=16, progress=False)
    assert re.search(r"WARNING codebook collapse: [12]/8 codes in use over steps 1-10", capsys.readouterr().err)
    assert summary["collapse_warnings"] == 2
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(m["collapse"] for m in metrics)


def test_training_reads_a_folder_of_videos(sim, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("episode_000000.mp4", "episode_000007.mp4"):
        shutil.copy(sim / "train" / "videos" / name, videos / name.replace("episode", "clip"))
    summary = train(get_config("tiny"), videos, tmp_path / "run", steps=4, batch_size=4, val_fraction=0,
                    num_monitor_pairs=16, progress=False)
    assert summary["steps"] == 4 and (tmp_path / "run" / "final" / "model.safetensors").is_file()
    result = label_dataset(tmp_path / "run" / "final", videos, progress=False)
    info, labels = load_latents(videos)
    assert sorted(labels) == [0, 1] and result["episodes"] == 2 and info["frame_gap"] == 3


@pytest.mark.parametrize("content", [b"", b"\x00garbage" * 64], ids=["empty", "garbage"])
def test_an_empty_or_unreadable_video_is_named(tmp_path, content):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "broken.mp4").write_bytes(content)
    with pytest.raises(EpisodeFormatError, match="broken.mp4: not a readable video"):
        train(get_config("tiny"), videos, tmp_path / "run", steps=2, progress=False)


# ---------------------------------------------------------------------------- labelling
def test_labelling_writes_the_latent_format_deterministically(run, sim):
    out, _ = run
    first = label_dataset(out / "final", sim / "held_out", progress=False)
    directory = sim / "held_out" / "latents" / "laq"
    snapshot = {p.name: p.read_bytes() for p in directory.iterdir()}
    label_dataset(out / "final", sim / "held_out", progress=False)
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == snapshot
    assert first["codes_used"] == 8

    info, labels = load_latents(sim / "held_out")
    config = get_config("tiny")
    assert info == {"laq_checkpoint": str((out / "final").resolve()), "config": config.to_dict(), "frame_gap": 3,
                    "codebook_size": 8, "num_tokens": 4, "config_sha256": config.sha256()}
    model = LAQModel.from_pretrained(out / "final").eval()
    from lapa_models.data.episodes import EpisodeDataset

    dataset = EpisodeDataset(sim / "held_out")
    assert sorted(labels) == [e["episode_index"] for e in dataset.entries]
    episode = dataset.load(4)
    tokens = labels[episode.index]
    n = len(episode)
    assert tokens.dtype == np.int16 and tokens.shape == (n, 4)
    assert (tokens[n - 3:] == -1).all() and tokens[: n - 3].min() >= 0 and tokens[: n - 3].max() < 8
    expected = model.encode(episode.frames[: n - 3], episode.frames[3:]).numpy()
    assert np.array_equal(tokens[: n - 3], expected)


def test_reading_labels_that_are_missing_or_incomplete_names_the_problem(run, sim, tmp_path):
    with pytest.raises(LatentLabelError, match="no latent labels named 'nope'"):
        load_latents(sim / "held_out", name="nope")
    label_dataset(run[0] / "final", sim / "held_out", name="partial", progress=False)
    (sim / "held_out" / "latents" / "partial" / "episode_000002.npy").unlink()
    with pytest.raises(LatentLabelError, match="episode_000002.npy: missing"):
        load_latents(sim / "held_out", name="partial")


def test_label_command_runs_from_the_model_layers_entry_point(run, sim):
    result = subprocess.run([sys.executable, "-m", "lapa_models", "laq", "label", "--checkpoint", str(run[0] / "final"),
                             "--data", str(sim / "held_out"), "--name", "cli", "--no-progress"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["episodes"] == 9 and summary["latents"].endswith("latents/cli")


def test_commands_report_bad_input_in_one_error_line(run, sim, tmp_path, capsys):
    args = _parse(laq_label, ["--checkpoint", str(tmp_path / "nowhere"), "--data", str(sim / "held_out")])
    assert laq_label.main(args) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nowhere'}: checkpoint directory not found\n"
    args = _parse(laq_train, ["--data", str(sim / "train"), "--out", str(run[0]), "--steps", "5"])
    assert laq_train.main(args) == 2
    assert "already holds checkpoints; pass --resume" in capsys.readouterr().err


# ---------------------------------------------------------------------------- evaluation
def test_evaluation_reports_a_probe_scored_on_held_out_episodes(report, run, sim, tmp_path):
    probe = report["probe"]
    assert probe["target"] == "mean action over t..t+2" and probe["action_names"] == ["vx", "vy", "vz", "gripper"]
    assert probe["fit_episodes"] == 6 and probe["test_episodes"] == 3  # one held-out episode per task
    for result in probe["probes"].values():
        assert set(result["r2"]) == {"vx", "vy", "vz", "gripper"}
        assert all(0.0 <= a <= 1.0 for a in result["sign_accuracy"].values())
    args = _parse(laq_evaluate, ["--checkpoint", str(run[0] / "final"), "--data", str(sim / "held_out"),
                                 "--out", str(tmp_path / "eval.json"), "--no-progress"])
    assert laq_evaluate.main(args) == 0
    assert json.loads((tmp_path / "eval.json").read_text())["reconstruction"] == report["reconstruction"]
    assert (tmp_path / "eval.png").read_bytes()[:4] == b"\x89PNG"


def test_probe_recovers_actions_that_the_tokens_encode_and_not_random_ones():
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (2000, 3))
    informative = np.stack([np.digitize(actions[:, i], [-0.5, 0, 0.5]) for i in range(3)], 1)  # 4 bins per axis
    noise = rng.integers(0, 8, (2000, 3))
    fit, test = np.arange(1500), np.arange(1500, 2000)
    for tokens, low, high in ((informative, 0.85, 1.0), (noise, -0.05, 0.05)):
        x = one_hot_tokens(tokens, 8)
        r2 = r2_scores(actions[test], fit_linear_probe(x[fit], actions[fit])(x[test]))
        assert ((low < r2) & (r2 <= high)).all(), r2


def test_probe_split_keeps_every_task_in_both_halves():
    tasks = ["reach"] * 5 + ["push"] * 2 + ["drawer"] * 3
    fit, test = split_by_episode(tasks, 0.3, seed=0)
    assert not set(fit) & set(test) and sorted(fit + test) == list(range(10))
    assert {tasks[i] for i in fit} == {tasks[i] for i in test} == {"reach", "push", "drawer"}


def test_cross_task_probe_is_fitted_on_the_other_tasks_and_scored_on_the_named_ones(run, sim, tmp_path, capsys):
    tasks = ["reach"] * 2 + ["push"] * 2 + ["drawer"]
    assert split_by_task(tasks, ["push"]) == ([0, 1, 4], [2, 3])
    with pytest.raises(ValueError, match=r"\['fly'\] not in the data"):
        split_by_task(tasks, ["fly"])
    held_out_task = TASKS.split(",")[0]
    out = tmp_path / "cross.json"
    args = _parse(laq_evaluate, ["--checkpoint", str(run[0] / "final"), "--data", str(sim / "held_out"), "--out",
                                 str(out), "--probe-test-tasks", held_out_task, "--no-progress"])
    assert laq_evaluate.main(args) == 0
    probe = json.loads(out.read_text())["probe"]
    assert probe["split"] == {"by": "task", "test_tasks": [held_out_task]}
    assert probe["fit_episodes"] == 6 and probe["test_episodes"] == 3
    capsys.readouterr()
    args = _parse(laq_evaluate, ["--checkpoint", str(run[0] / "final"), "--data", str(sim / "held_out"), "--out",
                                 str(tmp_path / "bad.json"), "--probe-test-tasks", "fly-to-the-moon", "--no-progress"])
    assert laq_evaluate.main(args) == 2
    assert "'fly-to-the-moon'] not in the data" in capsys.readouterr().err and not (tmp_path / "bad.json").exists()


def test_probe_fit_data_adds_its_pairs_to_the_fit_side_only(run, sim, tmp_path, capsys):
    """--probe-fit-data: play in the other tasks' scenes joins the fit side of the probes and the pixel
    reference; the test pairs are the same; a dataset without actions is refused before any work."""
    from lapa_sim.generate import generate

    play = tmp_path / "play"
    generate(play, tasks=",".join(TASKS.split(",")[1:]), episodes_per_task=1, image_size=(64, 64), workers=1,
             progress=False, play_steps=15)
    base = ["--checkpoint", str(run[0] / "final"), "--data", str(sim / "held_out"), "--probe-test-tasks",
            TASKS.split(",")[0], "--pixel-reference", "10", "--reference-test-pairs", "40", "--no-progress"]
    reports = []
    for name, extra in (("alone", []), ("play", ["--probe-fit-data", str(play)])):
        assert laq_evaluate.main(_parse(laq_evaluate, base + ["--out", str(tmp_path / f"{name}.json")] + extra)) == 0
        reports.append(json.loads((tmp_path / f"{name}.json").read_text())["probe"])
    alone, with_play = reports
    gap = json.loads((run[0] / "final" / "config.json").read_text())["frame_gap"]
    assert alone["fit_extra"] is None
    assert with_play["fit_extra"] == {"data": str(play), "pairs": 2 * (15 - gap), "episodes": 2}
    assert with_play["fit_pairs"] == alone["fit_pairs"] + 2 * (15 - gap)
    assert with_play["test_pairs"] == alone["test_pairs"]
    assert with_play["reference"]["pixel_inverse_dynamics"]["test_pairs_scored"] == min(40, alone["test_pairs"])
    capsys.readouterr()
    video = tmp_path / "video"
    generate(video, tasks="reach", episodes_per_task=1, image_size=(64, 64), workers=1, progress=False,
             with_actions=False)
    assert laq_evaluate.main(_parse(laq_evaluate, base + ["--out", str(tmp_path / "bad.json"), "--probe-fit-data",
                                                          str(video)])) == 2
    assert "has no actions to fit probes on" in capsys.readouterr().err and not (tmp_path / "bad.json").exists()


def test_show_renders_every_code_of_every_token_and_counts_codebook_use(run, sim, tmp_path, capsys):
    from lapa_models.laq import show as laq_show

    out = tmp_path / "show"
    code = laq_show.main(_parse(laq_show, ["--checkpoint", str(run[0] / "final"), "--data", str(sim / "held_out"),
                                           "--out", str(out), "--frames", "3", "--no-progress"]))
    assert code == 0
    report = json.loads((out / "usage.json").read_text())
    usage = report["usage"]
    model = LAQModel.from_pretrained(run[0] / "final")
    t, c = model.config.num_latent_tokens, model.config.codebook_size
    assert sum(usage["counts"]) == usage["pairs"] * t
    assert [sum(p) for p in usage["per_position"]] == [usage["pairs"]] * t
    assert set(usage["per_task"]) == set(TASKS.split(","))
    assert len(report["frames"]) == 3 and {f["task"] for f in report["frames"]} == set(TASKS.split(","))
    assert report["video_frames"] == 3 * t * c and (out / "latents.mp4").stat().st_size > 0
    assert all((out / f"frame_{i:02d}.png").is_file() for i in range(3)) and (out / "usage.png").is_file()
    assert report["code_effect"] > 0
    assert "codes in use" in capsys.readouterr().err


def test_show_swaps_keep_the_labelled_decoding_and_vary_the_others(run, sim):
    from lapa_models.laq.data import frame_pairs, gather, load_frames
    from lapa_models.laq.show import swap_decodings

    model = LAQModel.from_pretrained(run[0] / "final").eval()
    store = load_frames(sim / "held_out", model.config, progress=False)
    pairs = frame_pairs(store, model.config.frame_gap)[:2]
    frames_t, frames_tk = gather(store, pairs)
    tokens = model.encode(frames_t, frames_tk).numpy()
    own = model.reconstruct(frames_t, torch.as_tensor(tokens)).numpy()
    swaps = swap_decodings(model, frames_t, tokens)
    assert swaps.shape == (2, model.config.num_latent_tokens, model.config.codebook_size) + own.shape[1:]
    for i in range(2):
        for j in range(model.config.num_latent_tokens):
            np.testing.assert_allclose(swaps[i, j, tokens[i, j]], own[i], atol=1e-5)
            assert np.abs(swaps[i, j] - own[i]).max() > 1e-4   # another code decodes another frame


def test_show_warns_about_a_collapsed_codebook(tmp_path, capsys):
    from lapa_models.laq import show as laq_show

    frame = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    writer = EpisodeWriter(tmp_path / "static", DatasetInfo(fps=20.0, image_height=64, image_width=64))
    for _ in range(2):
        writer.write(Episode(frames=np.stack([frame] * 12), timestamps=np.arange(12) / 20.0))
    train(get_config("tiny", num_latent_tokens=2), tmp_path / "static", tmp_path / "run", steps=5, batch_size=8,
          log_every=5, num_monitor_pairs=16, progress=False)
    code = laq_show.main(_parse(laq_show, ["--checkpoint", str(tmp_path / "run" / "final"), "--data",
                                           str(tmp_path / "static"), "--out", str(tmp_path / "show"), "--frames", "1",
                                           "--no-video", "--no-progress"]))
    assert code == 0
    assert "WARNING codebook collapse" in capsys.readouterr().err


def test_pixel_reference_reads_a_motion_the_frames_show_and_not_one_they_do_not():
    """The pixel inverse-dynamics reference: a square moved by (dx, dy) between two frames is read back from the
    frames (R^2 near 1 on pairs it was not fitted on); a target the frames do not show is not (R^2 <= 0.1)."""
    rng = np.random.default_rng(0)
    n = 600
    shifts = rng.integers(-3, 4, (n, 2))
    start = rng.integers(6, 20, (n, 2))
    a = np.zeros((n, 1, 32, 32), np.float32)
    b = np.zeros_like(a)
    for i in range(n):
        (y, x), (dy, dx) = start[i], shifts[i]
        a[i, 0, y:y + 5, x:x + 5] = 1.0
        b[i, 0, y + dy:y + dy + 5, x + dx:x + dx + 5] = 1.0
    a, b = torch.from_numpy(a), torch.from_numpy(b)

    def frames(rows):
        return a[rows], b[rows]

    fit, test = np.arange(500), np.arange(500, n)
    for target, low, high in ((shifts.astype(np.float32), 0.8, 1.0), (rng.normal(size=(n, 2)), -np.inf, 0.1)):
        predict = fit_pixel_idm(frames, fit, target[fit], steps=400, seed=0)
        r2 = r2_scores(target[test], predict(test))
        assert ((low < r2) & (r2 <= high)).all(), r2


def test_the_direction_a_camera_cannot_see_is_named_as_the_worst_read():
    """Motion seen through a camera that drops its line of sight: a probe reading the action from what the
    camera shows reads every direction across the view (R^2 near 1) and not the line of sight (near 0); the
    per-axis R^2 spreads that loss over every axis, the direction analysis names it."""
    rng = np.random.default_rng(0)
    motion = rng.normal(size=(4000, 3))
    sight = np.array([-0.612, 0.612, -0.5])
    sight /= np.linalg.norm(sight)
    across = np.linalg.svd(sight[None])[2][1:]   # two unit vectors across the line of sight
    seen = motion @ across.T + 0.01 * rng.normal(size=(4000, 2))
    y = np.c_[motion, rng.integers(0, 2, 4000)]
    predict = fit_linear_probe(seen[:3000], y[:3000])
    result = score_probe(y[3000:], predict(seen[3000:]), ["vx", "vy", "vz", "gripper"], 0.05)
    worst, best = result["motion_directions"]["worst"], result["motion_directions"]["best"]
    assert abs(worst["r2"]) < 0.05 and best["r2"] > 0.99
    assert abs(np.dot([worst["direction"][n] for n in ("vx", "vy", "vz")], sight)) > 0.99
    assert all(0.3 < r < 0.9 for r in list(result["r2"].values())[:3])   # each axis half-read: it hides where


def test_cli_pixel_reference_is_scored_on_the_same_split(run, sim, tmp_path):
    out = tmp_path / "ref.json"
    args = _parse(laq_evaluate, ["--checkpoint", str(run[0] / "final"), "--data", str(sim / "held_out"), "--out",
                                 str(out), "--probe-test-tasks", TASKS.split(",")[0], "--pixel-reference", "20",
                                 "--reference-test-pairs", "50", "--no-progress"])
    assert laq_evaluate.main(args) == 0
    probe = json.loads(out.read_text())["probe"]
    reference = probe["reference"]["pixel_inverse_dynamics"]
    assert set(reference["r2"]) == set(probe["probes"]["linear_tokens"]["r2"]) == {"vx", "vy", "vz", "gripper"}
    assert reference["steps"] == 20 and reference["test_pairs_scored"] == min(50, probe["test_pairs"])
    assert set(reference["motion_directions"]) == {"worst", "best"}
    assert set(reference["motion_directions"]["worst"]["direction"]) == {"vx", "vy", "vz"}
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
