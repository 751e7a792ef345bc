"""A dataset whose frames differ from what a checkpoint was trained on: scaled when the aspect ratio
agrees, refused with a clear error (nothing written) when resizing would distort them, unless
--allow-squash; the deployed policy reports a camera of another aspect ratio.

Real commands (`lapa laq train/label`, `lapa policy finetune/export`) on tiny synthetic datasets."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from lapa_models.data.errors import FrameSizeError  # noqa: E402
from lapa_models.data.episodes import DatasetInfo, Episode, EpisodeWriter  # noqa: E402
from lapa_models.data.frame_size import check_frame_size  # noqa: E402

POLICY = ["--config", "tiny", "--batch-size", 8, "--steps", 3, "--warmup-steps", 1, "--save-every", 0,
          "--eval-every", 0, "--val-fraction", 0, "--no-progress", "--threads", 1, "--no-augment"]
LAQ = ["--config", "tiny", "--steps", 2, "--batch-size", 4, "--save-every", 0, "--val-fraction", 0,
       "--no-progress", "--threads", 1, "--data-mode", "memory"]


def write_dataset(root: Path, height: int, width: int, episodes: int = 4, frames: int = 10) -> Path:
    """Episodes of a square moving across an (height x width) frame, with actions and instructions."""
    info = DatasetInfo(fps=10.0, image_height=height, image_width=width, action_names=["dx", "dy"], source="test")
    writer = EpisodeWriter(root, info)
    for e in range(episodes):
        direction = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]][e % 4])
        images = []
        for t in range(frames):
            img = np.full((height, width, 3), 30, np.uint8)
            cy, cx = np.array([height // 2, width // 2]) + 2 * t * direction[::-1]
            img[max(cy - 3, 0):cy + 3, max(cx - 3, 0):cx + 3] = (230, 90, 40)
            images.append(img)
        writer.write(Episode(frames=np.stack(images), timestamps=np.arange(frames) / 10.0,
                             actions=np.tile(direction, (frames, 1)).astype(np.float32),
                             instruction=f"move the square {['right', 'left', 'down', 'up'][e % 4]}",
                             task=f"move-{e % 4}", success=True))
    return root


def test_the_check_scales_same_aspect_and_refuses_another_naming_both_sizes_and_the_ways_out():
    assert check_frame_size((64, 64), (64, 64), data="d", model="m") is None
    assert "scaled" in check_frame_size((128, 128), (64, 64), data="d", model="m")
    assert "scaled" in check_frame_size((480, 640), (48, 64), data="d", model="m")      # same 4:3 aspect
    with pytest.raises(FrameSizeError) as e:
        check_frame_size((480, 640), (64, 64), data="data/robot", model="checkpoint runs/laq/final")
    message = str(e.value)
    for part in ("data/robot", "480x640", "checkpoint runs/laq/final", "64x64", "--resize-mode", "--allow-squash"):
        assert part in message
    assert "squashed" in check_frame_size((480, 640), (64, 64), data="d", model="m", allow_squash=True)


def test_laq_commands_refuse_frames_of_another_aspect_and_write_nothing(tmp_path, lapa):
    square = write_dataset(tmp_path / "square", 32, 32)
    wide = write_dataset(tmp_path / "wide", 24, 40)
    code, _, err = lapa("laq", "train", "--data", wide, "--out", tmp_path / "laq_wide", *LAQ)
    assert code == 2 and "24x40" in err and "the LAQ config" in err and "--allow-squash" in err, err
    assert not (tmp_path / "laq_wide").exists()

    code, _, err = lapa("laq", "train", "--data", square, "--out", tmp_path / "laq", *LAQ)   # 32 -> 64: scaled
    assert code == 0, err
    checkpoint = tmp_path / "laq" / "final"
    code, _, err = lapa("laq", "label", "--checkpoint", checkpoint, "--data", wide, "--no-progress")
    assert code == 2 and f"checkpoint {checkpoint}" in err and "aspect 1.67" in err, err
    assert not (wide / "latents").exists()
    code, _, err = lapa("laq", "label", "--checkpoint", checkpoint, "--data", wide, "--no-progress", "--allow-squash")
    assert code == 0, err
    assert (wide / "latents" / "laq" / "info.json").is_file()


def test_finetuning_a_checkpoint_on_frames_of_another_aspect_is_refused_and_the_runtime_reports_a_camera(
        tmp_path, lapa):
    from lapa_models.policy.configuration import PolicyConfig
    from lapa_models.policy.runtime import PolicyRuntime

    square = write_dataset(tmp_path / "square", 32, 32)
    wide = write_dataset(tmp_path / "wide", 24, 40)
    code, _, err = lapa("policy", "finetune", "--data", square, "--init", "scratch", "--out", tmp_path / "base",
                        *POLICY)
    assert code == 0, err
    base = tmp_path / "base" / "final"
    assert PolicyConfig.load(base / "config.json").data_frame_size == [32, 32]

    code, _, err = lapa("policy", "finetune", "--data", wide, "--init", base, "--out", tmp_path / "wide_run", *POLICY)
    assert code == 2 and "24x40" in err and f"checkpoint {base}" in err and "32x32" in err, err
    assert not (tmp_path / "wide_run").exists()

    bigger = write_dataset(tmp_path / "bigger", 48, 48)   # same aspect ratio: scaled, trained
    code, _, err = lapa("policy", "finetune", "--data", bigger, "--init", base, "--out", tmp_path / "bigger_run",
                        *POLICY)
    assert code == 0, err
    assert PolicyConfig.load(tmp_path / "bigger_run" / "final" / "config.json").data_frame_size == [48, 48]

    code, _, err = lapa("policy", "export", "--checkpoint", tmp_path / "bigger_run" / "final", "--out",
                        tmp_path / "export", "--precisions", "fp32")
    assert code == 0, err
    runtime = PolicyRuntime(tmp_path / "export", providers="cpu", warmup=0)
    assert runtime.trained_frame_size == (48, 48)
    assert runtime.frame_size_problem(96, 96) is None
    problem = runtime.frame_size_problem(480, 640)
    assert problem and "480x640" in problem and "48x48" in problem


def test_bags_stored_resized_keep_their_camera_size_so_the_deployed_policy_expects_that_camera(tmp_path, lapa):
    """Bags of a 4:3 camera converted to square frames (what `lapa finetune-bags` does for a square model)
    train a policy whose node expects the 4:3 camera it will see again, not a square one."""
    from lapa_models.data.episodes import EpisodeDataset
    from lapa_models.policy.configuration import PolicyConfig
    from lapa_models.policy.runtime import PolicyRuntime
    from lapa_ros.recording.bag_convert import ConversionConfig, convert_bags
    from test_bag_convert import write_episode_bag

    for i in range(3):
        write_episode_bag(tmp_path / "bags" / f"ep_{i}", size=(24, 32))
    summary = convert_bags(tmp_path / "bags", tmp_path / "ds", ConversionConfig(image_size=(16, 16)), progress=False)
    assert summary["converted"] == 3, summary["failed"]
    info = EpisodeDataset(tmp_path / "ds").info
    assert (info.image_height, info.image_width) == (16, 16) and info.extra["camera_frame_size"] == [24, 32]

    code, _, err = lapa("policy", "finetune", "--data", tmp_path / "ds", "--init", "scratch", "--out", tmp_path / "run",
                        *POLICY)
    assert code == 0, err
    config = PolicyConfig.load(tmp_path / "run" / "final" / "config.json")
    assert config.data_frame_size == [16, 16] and config.camera_frame_size == [24, 32]
    code, _, err = lapa("policy", "export", "--checkpoint", tmp_path / "run" / "final", "--out", tmp_path / "export",
                        "--precisions", "fp32")
    assert code == 0, err
    runtime = PolicyRuntime(tmp_path / "export", providers="cpu", warmup=0)
    assert runtime.frame_size_problem(480, 640) is None          # the same camera, at full resolution
    assert "16x16" not in (runtime.frame_size_problem(64, 64) or "") and runtime.frame_size_problem(64, 64)
