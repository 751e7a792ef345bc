"""Stages 2 and 3 (lapa_models.policy): training on LAQ-labelled sim data, export, runtime, bad inputs.

Tiny configs, no network (HF_HUB_OFFLINE=1). One small simulated dataset is generated per module and
labelled by a real (randomly initialised) LAQ model through lapa_models.laq.label.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# One thread: on a shared 2-core machine, two OpenMP threads per process spin against each other.
torch.set_num_threads(1)

from lapa_models.policy import export as policy_export  # noqa: E402
from lapa_models.policy import finetune, pretrain  # noqa: E402
from lapa_models.policy.augmentation import ImageAugmentation  # noqa: E402
from lapa_models.policy.configuration import PolicyConfig, get_config  # noqa: E402
from lapa_models.policy.data import (ActionChunkSamples, InstructionTable, LatentSamples, align_latents,  # noqa: E402
                                     load_latent_labels, split_episodes, stack_latents)
from lapa_models.policy.modeling import LapaPolicy  # noqa: E402
from lapa_models.policy.towers import MissingWeightsError  # noqa: E402
from lapa_models.policy.normalization import NormalizationStats  # noqa: E402
from lapa_models.policy.runtime import ModelCardError, PolicyInputError, PolicyRuntime  # noqa: E402

TASKS = "reach,drawer-close,button-press-topdown"
INSTRUCTION = "close the drawer"


def _run(module, argv) -> dict:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    args = parser.parse_args([str(a) for a in argv])
    assert module.main(args) == 0
    return json.loads((Path(args.out) / "summary.json").read_text())


def _train_losses(run_dir: Path, key: str) -> list:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in records if key in r]


TRAIN_ARGS = ["--config", "tiny", "--batch-size", 32, "--lr", 3e-3, "--warmup-steps", 5, "--log-every", 5,
              "--eval-every", 20, "--save-every", 0, "--no-progress", "--threads", 1, "--no-augment"]


# ============================================================================ fixtures
@pytest.fixture(scope="module")
def sim_data(tmp_path_factory) -> Path:
    from lapa_sim.generate import generate

    root = tmp_path_factory.mktemp("policy_sim") / "sim"
    generate(root, tasks=TASKS, episodes_per_task=3, image_size=(64, 64), workers=1, progress=False)
    return root


@pytest.fixture(scope="module")
def laq_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised tiny LAQ model: the real architecture, no training."""
    from lapa_models.laq import LAQModel, get_config as laq_config

    torch.manual_seed(0)
    checkpoint = tmp_path_factory.mktemp("laq") / "laq_tiny"
    LAQModel(laq_config("tiny")).save_pretrained(checkpoint)
    return checkpoint


@pytest.fixture(scope="module")
def laq_labels(sim_data, laq_checkpoint) -> dict:
    """Labels from the real LAQ pipeline: the tiny LAQ labelling the dataset."""
    from lapa_models.laq.label import label_dataset

    return label_dataset(laq_checkpoint, sim_data, name="laq", progress=False)


@pytest.fixture(scope="module")
def play_data(laq_checkpoint, tmp_path_factory) -> Path:
    """Labelled play (random reaching, no instruction) in the scenes of the demo tasks, LAQ-labelled."""
    from lapa_models.laq.label import label_dataset
    from lapa_sim.generate import generate

    root = tmp_path_factory.mktemp("policy_play") / "play"
    generate(root, tasks=TASKS, episodes_per_task=2, image_size=(64, 64), workers=1, progress=False, play_steps=16)
    label_dataset(laq_checkpoint, root, name="laq", progress=False)
    return root


@pytest.fixture(scope="module")
def pretrained(sim_data, laq_labels, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("policy_runs") / "pretrain"
    _run(pretrain, ["--data", sim_data, "--out", out, "--steps", 60, *TRAIN_ARGS])
    return out


@pytest.fixture(scope="module")
def finetuned(sim_data, pretrained, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("policy_runs") / "finetune"
    _run(finetune, ["--data", sim_data, "--init", pretrained / "final", "--out", out, "--steps", 60, *TRAIN_ARGS])
    return out


@pytest.fixture(scope="module")
def exported(finetuned, sim_data, tmp_path_factory) -> Path:
    from lapa_models.data.episodes import EpisodeDataset

    out = tmp_path_factory.mktemp("policy_export") / "policy"
    frames = EpisodeDataset(sim_data).load(0).frames
    policy_export.export_policy(finetuned / "final", out, precisions=("fp32", "fp16"), sample_images=frames)
    return out


@pytest.fixture(scope="module")
def runtime(exported) -> PolicyRuntime:
    return PolicyRuntime(exported, providers=("cpu",), intra_op_threads=1)


@pytest.fixture(scope="module")
def frames(sim_data) -> np.ndarray:
    from lapa_models.data.episodes import EpisodeDataset

    return EpisodeDataset(sim_data).load(2).frames


# ============================================================================ training
def test_pretraining_on_laq_labels_lowers_latent_loss(pretrained, laq_labels):
    losses = _train_losses(pretrained, "train/latent_loss")
    assert laq_labels["pairs"] > 0
    assert np.mean(losses[-2:]) < 0.7 * losses[0], losses
    summary = json.loads((pretrained / "summary.json").read_text())
    assert "val/latent_accuracy" in summary["val"] and 0.0 <= summary["val"]["val/latent_accuracy"] <= 1.0
    config = PolicyConfig.load(pretrained / "final" / "config.json")
    assert config.latent_labels["config_sha256"]          # provenance of the labels is kept
    assert (pretrained / "training.png").stat().st_size > 0
    assert not list((pretrained / "final").glob("*.bin")) and not list((pretrained / "final").glob("*.pt"))


def test_finetuning_from_pretrained_lowers_action_loss_and_keeps_backbone(finetuned, pretrained):
    losses = _train_losses(finetuned, "train/action_loss")
    assert np.mean(losses[-2:]) < 0.8 * losses[0], losses
    policy = LapaPolicy.from_pretrained(finetuned / "final")
    assert policy.latent_head is None and policy.action_head is not None
    assert policy.config.action_names == ["vx", "vy", "vz", "gripper"] and policy.config.state_dim == 4
    assert policy.config.control_rate_hz == pytest.approx(20.0)
    assert (finetuned / "final" / "normalization.json").is_file()
    run = json.loads((finetuned / "run.json").read_text())
    assert run["init"] == str(pretrained / "final")


def test_finetuning_from_pretrained_starts_from_the_pretrained_weights(pretrained):
    from safetensors.torch import load_file

    stats = NormalizationStats.from_data(np.random.default_rng(0).normal(size=(50, 4)),
                                         np.random.default_rng(1).normal(size=(50, 4)))
    from lapa_models.policy.modeling import policy_from_checkpoint_for_finetuning

    model = policy_from_checkpoint_for_finetuning(pretrained / "final", stats)
    saved = load_file(str(pretrained / "final" / "model.safetensors"))
    own = model.state_dict()
    assert torch.equal(own["queries"], saved["queries"])
    assert torch.equal(own["vision.proj.weight"], saved["vision.proj.weight"])
    assert not any(k.startswith("latent_head") for k in own)


def test_finetuning_from_scratch_with_bins_head_lowers_loss(sim_data, tmp_path):
    out = tmp_path / "scratch_bins"
    summary = _run(finetune, ["--data", sim_data, "--init", "scratch", "--action-head", "bins", "--out", out,
                              "--steps", 60, *TRAIN_ARGS])
    losses = _train_losses(out, "train/action_loss")
    assert np.mean(losses[-2:]) < 0.8 * losses[0], losses
    assert summary["action_head"] == "bins"
    policy = LapaPolicy.from_pretrained(out / "final")
    chunk = policy.eval().predict_action_chunk(np.zeros((64, 64, 3), np.uint8), INSTRUCTION, np.zeros(4))
    # Bins decode to bin midpoints, inside the data's range.
    centers = policy.stats.bin_centers
    for a in range(4):
        assert np.all(np.isin(chunk[0, :, a].numpy(), centers[a]))


def test_training_resumes_exactly_from_its_latest_checkpoint(sim_data, tmp_path):
    from safetensors.torch import load_file

    def args(out):   # with image augmentation: its random stream is part of what resume restores
        return ["--data", sim_data, "--init", "scratch", "--out", out, "--config", "tiny", "--batch-size", 16,
                "--log-every", 1, "--eval-every", 100, "--no-progress", "--threads", 1, "--steps", 10,
                "--save-every", 5, "--keep-checkpoints", 1]

    straight = tmp_path / "straight"
    _run(finetune, args(straight))
    assert (straight / "checkpoint-5" / "training_state.safetensors").is_file()
    interrupted = tmp_path / "interrupted"   # the run as it was when checkpoint-5 had just been written
    shutil.copytree(straight / "checkpoint-5", interrupted / "checkpoint-5")
    (interrupted / "metrics.jsonl").write_text("".join(
        line + "\n" for line in (straight / "metrics.jsonl").read_text().splitlines() if json.loads(line)["step"] <= 5))
    summary = _run(finetune, args(interrupted) + ["--resume"])
    assert summary["steps"] == 10
    a, b = ((d / "metrics.jsonl").read_text().splitlines() for d in (straight, interrupted))
    assert [json.loads(line)["step"] for line in b] == list(range(1, 11))
    drop = ("samples_per_s", "elapsed_s")
    assert [{k: v for k, v in json.loads(line).items() if k not in drop} for line in a] == \
        [{k: v for k, v in json.loads(line).items() if k not in drop} for line in b]
    x, y = (load_file(str(d / "final" / "model.safetensors")) for d in (straight, interrupted))
    assert all(torch.equal(x[k], y[k]) for k in x)


# ============================================================================ data
def test_action_chunks_repeat_the_last_action_past_the_episode_end_and_mask_it(sim_data):
    from lapa_models.data.frames import FrameStore

    store = FrameStore(sim_data, progress=False)
    table = InstructionTable([store])
    samples = ActionChunkSamples(store, 8, [0], table.index[0])
    n = int(store.lengths[0])
    last = samples.__getitems__([n - 1])
    assert last["action_is_pad"][0].tolist() == [False] + [True] * 7
    expected = torch.from_numpy(store.actions[n - 1]).expand(8, -1)
    assert torch.equal(last["actions"][0], expected)
    first = samples.__getitems__([0])
    assert not first["action_is_pad"].any() and torch.equal(first["actions"][0], torch.from_numpy(store.actions[:8]))
    assert first["image"].dtype == torch.uint8 and first["state"].shape == (1, 4)


def test_latent_samples_skip_frames_without_a_successor(sim_data, laq_labels):
    from lapa_models.data.frames import FrameStore

    store = FrameStore(sim_data, progress=False)
    labels = load_latent_labels(sim_data, "laq")
    tokens = align_latents(store, labels)
    gap = int(labels.info["frame_gap"])
    samples = LatentSamples(store, tokens, range(store.num_episodes), InstructionTable([store]).index[0])
    assert len(samples) == int(sum(max(0, n - gap) for n in store.lengths))
    batch = samples.__getitems__(list(range(len(samples))))
    assert int(batch["latent_tokens"].min()) >= 0


def test_a_latent_horizon_stacks_the_following_latent_actions_and_masks_those_past_the_episode(sim_data, laq_labels):
    from lapa_models.data.frames import FrameStore

    store = FrameStore(sim_data, progress=False)
    labels = load_latent_labels(sim_data, "laq")
    tokens = align_latents(store, labels)
    gap, t = int(labels.info["frame_gap"]), labels.num_tokens
    stacked = stack_latents(store, tokens, 3, gap)
    assert stacked.shape == (len(store), 3 * t) and np.array_equal(stacked[:, :t], tokens)
    assert stack_latents(store, tokens, 1, gap) is tokens
    start, n = int(store.starts[1]), int(store.lengths[1])
    assert np.array_equal(stacked[start, t:2 * t], tokens[start + gap])
    assert np.array_equal(stacked[start, 2 * t:], tokens[start + 2 * gap])
    # The last labelled frame has no following latent action in its episode: masked, never the next episode's.
    last_labelled = start + n - gap - 1
    assert (stacked[last_labelled, :t] >= 0).all() and (stacked[last_labelled, t:] == -1).all()
    samples = LatentSamples(store, stacked, range(store.num_episodes), InstructionTable([store]).index[0])
    assert len(samples) == int(sum(max(0, m - gap) for m in store.lengths))   # the first latent decides
    with pytest.raises(ValueError, match="horizon"):
        stack_latents(store, tokens, 0, gap)


def test_masked_latent_targets_do_not_count_in_the_loss_or_the_accuracy():
    model = LapaPolicy(get_config("tiny").replace(latent_num_tokens=8, latent_horizon=2, action_dim=0,
                                                  state_dim=0)).eval()
    image = torch.zeros(2, 64, 64, 3, dtype=torch.uint8)
    batch = {"image": image, "instruction_embedding": torch.zeros(2, model.config.instruction_dim)}
    with torch.no_grad():
        queries = model.fuse(model.prepare_images(image), batch["instruction_embedding"], None, require_state=False)
        predicted = model.latent_logits(queries).argmax(-1)
    wrong = (predicted + 1) % model.config.latent_codebook_size
    target = predicted.clone()
    target[:, 4:] = -1                                     # second latent action past the episode's end
    with torch.no_grad():
        masked = model({**batch, "latent_tokens": target})
        target[:, 4:] = wrong[:, 4:]
        counted = model({**batch, "latent_tokens": target})
    assert float(masked["latent_accuracy"]) == 1.0 and float(counted["latent_accuracy"]) == 0.5
    assert float(masked["latent_loss"]) < float(counted["latent_loss"])
    with pytest.raises(ValueError, match="whole number of latent actions"):
        get_config("tiny").replace(latent_num_tokens=6, latent_horizon=4)


def test_latent_reader_names_the_bad_file(tmp_path):
    from lapa_models.data.errors import EpisodeFormatError

    folder = tmp_path / "latents" / "laq"
    folder.mkdir(parents=True)
    (folder / "info.json").write_text(json.dumps({"frame_gap": 1, "codebook_size": 8, "num_tokens": 4,
                                                  "laq_checkpoint": "x", "config": {}, "config_sha256": "x"}))
    np.save(folder / "episode_000000.npy", np.full((5, 3), 2, np.int16))
    with pytest.raises(EpisodeFormatError, match="episode_000000.npy"):
        load_latent_labels(tmp_path, "laq")


def test_validation_split_holds_out_whole_episodes(sim_data):
    from lapa_models.data.frames import FrameStore

    store = FrameStore(sim_data, progress=False)
    train, val = split_episodes(store, 0.3, seed=0)
    assert set(train).isdisjoint(val) and len(train) + len(val) == store.num_episodes and val


def test_quantile_bins_decode_exact_gripper_values_and_stay_close_elsewhere():
    """Through the model's own (in-graph) binning and decoding: actions -> bin labels -> one-hot head
    output -> actions; and the continuous head's normalisation round trip."""
    rng = np.random.default_rng(0)
    actions = np.concatenate([rng.uniform(-0.8, 0.8, (1000, 3)), rng.integers(0, 2, (1000, 1))], 1)
    stats = NormalizationStats.from_data(actions, num_bins=256)
    base = get_config("tiny").replace(latent_head=False, action_names=["vx", "vy", "vz", "gripper"], use_state=False)
    binned = LapaPolicy(base.replace(action_head="bins", num_bins=256), stats).eval()
    a = torch.tensor(actions, dtype=torch.float32)[None]                  # (1, N, 4) as a chunk of N steps
    labels = binned._actions_to_bins(a)
    decoded = binned.decode_actions(F.one_hot(labels, 256).float())[0].numpy()
    assert np.array_equal(decoded[:, 3], actions[:, 3].astype(np.float32))
    assert np.abs(decoded[:, :3] - actions[:, :3]).max() < 0.02
    continuous = LapaPolicy(base.replace(clip_actions=False), stats).eval()
    normalized = (a - continuous.action_offset) / continuous.action_scale
    assert np.allclose(continuous.decode_actions(normalized)[0].numpy(), actions, atol=1e-5)


def test_augmentation_changes_images_but_keeps_shape_and_range():
    images = torch.rand(4, 3, 32, 32)
    out = ImageAugmentation()(images, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, images)


# ============================================================================ model and config
def test_checkpoint_round_trip_reproduces_the_action_chunk(finetuned, frames, tmp_path):
    policy = LapaPolicy.from_pretrained(finetuned / "final").eval()
    policy.save_pretrained(tmp_path / "copy")
    again = LapaPolicy.from_pretrained(tmp_path / "copy").eval()
    state = np.array([0.0, 0.6, 0.2, 0.0], np.float32)
    a = policy.predict_action_chunk(frames[:2], INSTRUCTION, state)
    b = again.predict_action_chunk(frames[:2], INSTRUCTION, state)
    assert torch.equal(a, b) and a.shape == (2, policy.config.chunk_size, 4)
    policy.reset()
    assert policy.select_action(frames[0], INSTRUCTION, state).shape == (4,)


def test_missing_pretrained_weights_say_where_to_put_them(tmp_path):
    with pytest.raises(MissingWeightsError, match="huggingface-cli download"):
        LapaPolicy(get_config("tiny", vision_model="google/siglip-base-patch16-224"))
    with pytest.raises(MissingWeightsError, match="config.json"):
        LapaPolicy(get_config("tiny", vision_model=str(tmp_path)))


def test_truncated_checkpoint_weights_give_a_clear_error(finetuned, tmp_path):
    copy = tmp_path / "ckpt"
    shutil.copytree(finetuned / "final", copy)
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match="model.safetensors"):
        LapaPolicy.from_pretrained(copy)


def test_vision_tower_loads_pretrained_weights_and_preprocessing_from_a_local_folder(tmp_path):
    from transformers import SiglipConfig, SiglipModel

    tiny = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    full = SiglipModel(SiglipConfig(text_config=dict(tiny, vocab_size=100, max_position_embeddings=16),
                                    vision_config=dict(tiny, image_size=32, patch_size=8)))
    full.save_pretrained(tmp_path / "siglip")
    (tmp_path / "siglip" / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.4, 0.4, 0.4], "image_std": [0.3, 0.3, 0.3]}))
    policy = LapaPolicy(get_config("tiny", vision_model=str(tmp_path / "siglip"), freeze_vision=True))
    ours = policy.vision.tower.state_dict()["embeddings.patch_embedding.weight"]
    assert torch.equal(ours, full.state_dict()["vision_model.embeddings.patch_embedding.weight"])
    assert policy.config.image_mean == (0.4, 0.4, 0.4) and policy.config.image_std == (0.3, 0.3, 0.3)
    assert not any(p.requires_grad for p in policy.vision.tower.parameters())


def test_clip_vision_tower_is_selectable():
    stats = NormalizationStats.from_data(np.zeros((10, 4)), np.zeros((10, 4)))
    policy = LapaPolicy(get_config("tiny", vision_model="config:clip-tiny"), stats).eval()
    assert policy.config.vision_config["model_type"] == "clip_vision_model"
    assert policy.predict_action_chunk(np.zeros((48, 40, 3), np.uint8), INSTRUCTION, np.zeros(4)).shape == (1, 4, 4)


def test_unknown_config_name_is_an_error():
    with pytest.raises(ValueError, match="tiny"):
        get_config("huge")


# ============================================================================ export and runtime
def test_export_writes_both_graphs_in_fp32_and_fp16_with_parity_in_the_card(exported):
    card = json.loads((exported / "model_card.json").read_text())
    for name in ("instruction_encoder.onnx", "policy.onnx", "instruction_encoder_fp16.onnx", "policy_fp16.onnx",
                 "tokenizer.json"):
        assert name in card["files"] and len(card["files"][name]["sha256"]) == 64
    parity = card["parity"]
    assert parity["policy.fp32"]["max_abs_diff"] <= 1e-4
    assert parity["instruction_encoder.fp32"]["max_abs_diff"] <= 1e-4
    assert parity["policy.fp16"]["max_fraction_of_range"] <= 0.05
    assert card["action"]["chunk_size"] == 4 and card["action"]["names"] == ["vx", "vy", "vz", "gripper"]
    assert card["graphs"]["policy"]["inputs"][0]["shape"] == ["batch", "height", "width", 3]
    assert [480, 640] in [shape[1:3] for shape in parity["policy.fp32"]["inputs"]]
    print("export parity max abs diff:", {k: v["max_abs_diff"] for k, v in parity.items()})


def test_export_refuses_a_graph_that_disagrees_with_pytorch(finetuned, exported, monkeypatch):
    policy = LapaPolicy.from_pretrained(finetuned / "final").eval()
    files = {"fp32": {"instruction_encoder": "instruction_encoder.onnx", "policy": "policy.onnx"}}
    assert policy_export.check_parity(policy, exported, files, 1e-4, 0.05, None)["policy.fp32"]["max_abs_diff"] < 1e-4
    real = policy_export._torch_actions
    monkeypatch.setattr(policy_export, "_torch_actions", lambda policy, feed: real(policy, feed) + 1e-2)
    with pytest.raises(policy_export.ExportParityError, match="policy.onnx"):
        policy_export.check_parity(policy, exported, files, 1e-4, 0.05, None)


def test_runtime_reproduces_the_pytorch_action_chunk(runtime, finetuned, frames):
    policy = LapaPolicy.from_pretrained(finetuned / "final").eval()
    state = np.array([0.05, 0.6, 0.15, 0.0], np.float32)
    embedding = runtime.encode_instruction(INSTRUCTION)
    assert np.abs(embedding - policy.encode_instructions([INSTRUCTION])[0].numpy()).max() < 1e-5
    for images in (frames[:1], frames[:3], np.ascontiguousarray(np.repeat(np.repeat(frames[:1], 8, 1), 10, 2))):
        ours = runtime.predict(images, embedding, state)
        reference = policy.predict_action_chunk(images, INSTRUCTION, state).numpy()
        assert ours.shape == reference.shape == (len(images), 4, 4) and ours.dtype == np.float32
        assert np.abs(ours - reference).max() < 1e-4
    assert runtime.act(frames[0], INSTRUCTION, state).shape == (4, 4)


def test_runtime_fp16_stays_close_to_fp32(exported, runtime, frames):
    half = PolicyRuntime(exported, providers=("cpu",), precision="fp16", intra_op_threads=1, warmup=1)
    state = np.array([0.05, 0.6, 0.15, 0.0], np.float32)
    a = runtime.predict(frames[:2], runtime.encode_instruction(INSTRUCTION), state)
    b = half.predict(frames[:2], half.encode_instruction(INSTRUCTION), state)
    card = json.loads((exported / "model_card.json").read_text())
    span = np.array(card["normalization"]["action_max"]) - np.array(card["normalization"]["action_min"])
    assert np.all(np.abs(a - b).max(axis=(0, 1)) <= 0.05 * np.maximum(span, 1e-6))


def test_runtime_tokenizes_like_transformers(runtime, finetuned):
    policy = LapaPolicy.from_pretrained(finetuned / "final")
    for text in ("Press the RED button, from above!", "pull the drawer out  ", "reach the goal"):
        ids, mask = runtime.tokenize(text)
        assert ids[0].tolist() == policy.tokenize([text])["input_ids"][0].tolist() and mask.all()


def test_requested_gpu_provider_that_did_not_load_warns_loudly(exported, caplog):
    with caplog.at_level(logging.WARNING, logger="lapa_models.policy.runtime"):
        rt = PolicyRuntime(exported, providers=("cuda", "cpu"), warmup=0)
    assert rt.providers_in_use == ["CPUExecutionProvider"]
    assert rt.provider_warning and "CUDAExecutionProvider" in rt.provider_warning
    assert any("did NOT load" in r.getMessage() for r in caplog.records)
    # A caller that reports the warning itself (the policy node: its ROS log and /diagnostics) gets it once.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lapa_models.policy.runtime"):
        quiet = PolicyRuntime(exported, providers=("cuda", "cpu"), warmup=0, log_warnings=False)
    assert quiet.provider_warning == rt.provider_warning and not caplog.records


@pytest.mark.parametrize("image, message", [
    (np.zeros((64, 64, 3), np.float32), "uint8"),
    (np.zeros((1, 3, 64, 64), np.uint8), "channels-first"),
    (np.zeros((64, 64, 4), np.uint8), "RGBA"),
    (np.zeros((64, 64), np.uint8), r"\(H, W, 3\)"),
    (np.zeros((4, 4, 3), np.uint8), "height/width"),
    ([[0, 0, 0]], "numpy uint8 array"),
])
def test_wrong_image_shape_or_dtype_is_a_clear_error(runtime, image, message):
    embedding = runtime.encode_instruction(INSTRUCTION)
    with pytest.raises(PolicyInputError, match=message):
        runtime.predict(image, embedding, np.zeros(4, np.float32))


def test_wrong_embedding_or_state_is_a_clear_error(runtime, frames):
    embedding = runtime.encode_instruction(INSTRUCTION)
    with pytest.raises(PolicyInputError, match="instruction_embedding"):
        runtime.predict(frames[0], embedding[:-1], np.zeros(4))
    with pytest.raises(PolicyInputError, match="state"):
        runtime.predict(frames[0], embedding, None)
    with pytest.raises(PolicyInputError, match="state"):
        runtime.predict(frames[0], embedding, np.zeros(7))
    with pytest.raises(PolicyInputError, match="NaN"):
        runtime.predict(frames[0], embedding, np.array([0, 0, np.nan, 0]))
    with pytest.raises(PolicyInputError, match="batch"):
        runtime.predict(frames[:2], np.stack([embedding] * 3), np.zeros(4))


@pytest.mark.parametrize("text, message", [("", "empty"), ("   \n", "empty"),
                                            ("press the button " * 20, "tokens, more than")])
def test_empty_or_over_long_instruction_is_a_clear_error(runtime, text, message):
    with pytest.raises(PolicyInputError, match=message):
        runtime.encode_instruction(text)


def _copy_export(exported: Path, tmp_path: Path) -> Path:
    target = tmp_path / "export"
    shutil.copytree(exported, target)
    return target


def test_missing_model_file_names_the_file(exported, tmp_path):
    target = _copy_export(exported, tmp_path)
    (target / "policy.onnx").unlink()
    with pytest.raises(ModelCardError, match=r"policy\.onnx.*missing"):
        PolicyRuntime(target)
    (target / "model_card.json").unlink()
    with pytest.raises(ModelCardError, match="model card is missing"):
        PolicyRuntime(target)


def test_truncated_model_file_is_caught_before_onnx_runtime(exported, tmp_path):
    target = _copy_export(exported, tmp_path)
    path = target / "policy.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelCardError, match=r"policy\.onnx.*truncated"):
        PolicyRuntime(target)


def test_model_file_from_another_export_is_rejected(exported, tmp_path):
    target = _copy_export(exported, tmp_path)
    data = bytearray((target / "policy.onnx").read_bytes())
    data[-5] ^= 0xFF     # same size, different content
    (target / "policy.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelCardError, match=r"policy\.onnx.*sha256"):
        PolicyRuntime(target)


def test_graph_whose_signature_differs_from_the_card_is_rejected(exported, tmp_path):
    from lapa_models.policy.export import sha256_file

    target = _copy_export(exported, tmp_path)
    shutil.copy(target / "instruction_encoder.onnx", target / "policy.onnx")
    card = json.loads((target / "model_card.json").read_text())
    card["files"]["policy.onnx"] = {"sha256": sha256_file(target / "policy.onnx"),
                                    "bytes": (target / "policy.onnx").stat().st_size}
    (target / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelCardError, match="do not match the model card"):
        PolicyRuntime(target)


# ============================================================================ closed loop
def test_chunk_executor_is_the_policy_nodes_blender_on_a_step_clock():
    from lapa_models.policy.chunking import ChunkBlender, ChunkExecutor

    ensemble = ChunkExecutor("ensemble", ensemble_decay=0.0)
    ensemble.push(np.zeros((4, 2), np.float32))
    assert np.allclose(ensemble.next_action(), 0.0)
    ensemble.push(np.ones((4, 2), np.float32))
    assert np.allclose(ensemble.next_action(), 0.5)          # step 1 of the old chunk and step 0 of the new one
    first = ChunkExecutor("first")
    first.push(np.arange(8, dtype=np.float32).reshape(4, 2))
    assert first.next_action().tolist() == [0.0, 1.0]
    open_loop = ChunkExecutor("open-loop:2")
    open_loop.push(np.arange(8, dtype=np.float32).reshape(4, 2))
    assert open_loop.next_action().tolist() == [0.0, 1.0] and not open_loop.needs_prediction()
    assert open_loop.next_action().tolist() == [2.0, 3.0] and open_loop.needs_prediction()
    # The same chunk stream through the node's blender (on its clock) and the executor gives the same
    # actions: older chunks weighted more (ACT, m > 0) in both.
    rng = np.random.default_rng(0)
    chunks = rng.normal(size=(12, 5, 3))
    executor, node = ChunkExecutor("ensemble", ensemble_decay=0.5, period=0.05), ChunkBlender(3, 0.05, 1.0,
                                                                                             "ensemble", 0.5)
    for k, chunk in enumerate(chunks):
        executor.push(chunk)
        node.add(100.0 + 0.05 * k, chunk)
        np.testing.assert_allclose(executor.next_action(), node.action_at(100.0 + 0.05 * k), rtol=1e-5, atol=1e-6)
    two = ChunkExecutor("ensemble", ensemble_decay=1.0)
    two.push(np.zeros((3, 1)))
    two.next_action()
    two.push(np.ones((3, 1)))
    assert two.next_action()[0] < 0.5, "ACT weighting: the older chunk weighs more"


def test_exported_policy_drives_the_simulated_arm_through_the_runtime(exported):
    from lapa_sim.evaluate import evaluate
    from lapa_sim.tasks import get_task

    result = evaluate(str(exported), "reach", episodes=1, seed=1000, image_size=(64, 64), threads=1,
                      progress=False)
    episode = result["tasks"]["reach"]["episodes"][0]
    assert episode["policy_ms_p50"] is not None
    # The episode runs until success or the task's step limit, and the rate is what the episodes say.
    assert episode["success"] or episode["steps"] == get_task("reach").max_steps, episode
    assert result["success_rate"] == result["tasks"]["reach"]["success_rate"] == float(episode["success"])
    # The runtime's actions reach the arm: the hand moves (a policy stuck at zero would not).
    assert episode["ee_net_m"] > 0.05, episode   # holding still drifts ~5 mm; this policy goes ~0.3 m


def test_slim_checkpoint_leaves_out_the_frozen_pretrained_text_tower_and_reloads_identically(tmp_path):
    stats = NormalizationStats.from_data(np.random.default_rng(0).normal(size=(50, 4)))
    config = get_config("tiny", text_model="minilm", tokenizer="minilm").replace(
        latent_head=False, action_names=["vx", "vy", "vz", "gripper"], use_state=False)
    policy = LapaPolicy(config, stats).eval()
    assert policy.frozen_pretrained_prefixes() == ["instruction_encoder.tower."]
    policy.save_pretrained(tmp_path / "full")
    policy.save_pretrained(tmp_path / "slim", slim=True)
    full_mb = (tmp_path / "full" / "model.safetensors").stat().st_size / 2**20
    slim_mb = (tmp_path / "slim" / "model.safetensors").stat().st_size / 2**20
    assert slim_mb < 0.1 * full_mb, (slim_mb, full_mb)
    again = LapaPolicy.from_pretrained(tmp_path / "slim").eval()
    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    with torch.no_grad():
        assert torch.equal(policy.predict_action_chunk(image, INSTRUCTION), again.predict_action_chunk(image, INSTRUCTION))


# ============================================================================ finetuning levers (benchmark)
def test_cotraining_keeps_the_latent_objective_and_a_latent_reading_head_exports(sim_data, pretrained, tmp_path):
    """--cotrain-data keeps the latent loss on the video while finetuning; --action-reads-latents feeds the
    predicted latent actions to the action head, and that graph exports and runs like any other."""
    out = tmp_path / "ft"
    summary = _run(finetune, ["--data", sim_data, "--init", pretrained / "final", "--out", out, "--steps", 40,
                              "--cotrain-data", sim_data, "--cotrain-weight", 0.5, "--action-reads-latents",
                              "--demos-per-task", 2, "--demo-seed", 3, "--val-fraction", 0, *TRAIN_ARGS])
    assert summary["cotrain"]["target"] == "latents" and summary["episodes"] == 2 * 3
    # The latent skill of pretraining survives finetuning (chance is 1/8).
    accuracy = _train_losses(out, "train/aux_latent_accuracy")
    assert len(accuracy) >= 4 and min(accuracy) > 0.5
    model = LapaPolicy.from_pretrained(out / "final").eval()
    assert model.config.action_reads_latents and model.latent_head is not None
    card = policy_export.export_policy(out / "final", tmp_path / "export", precisions=("fp32",))
    assert card["parity"]
    runtime = PolicyRuntime(tmp_path / "export", providers=("cpu",), intra_op_threads=1)
    image = np.zeros((64, 64, 3), np.uint8)
    chunk = runtime.act(image, INSTRUCTION, np.zeros(4, np.float32))
    expected = model.predict_action_chunk(image, INSTRUCTION, np.zeros(4, np.float32))[0].numpy()
    np.testing.assert_allclose(chunk, expected, atol=1e-4)


def test_pretraining_with_a_latent_horizon_predicts_several_latent_actions_and_finetuning_cotrains_on_them(
        sim_data, laq_labels, pretrained, tmp_path):
    """--latent-horizon 2: the head predicts 2 x T tokens (the latent counterpart of an action chunk), the
    cotraining loss while finetuning reads the same stacked targets; a checkpoint keeps its horizon."""
    out = tmp_path / "pre"
    _run(pretrain, ["--data", sim_data, "--out", out, "--steps", 10, "--latent-horizon", 2, *TRAIN_ARGS])
    config = PolicyConfig.load(out / "final" / "config.json")
    assert config.latent_horizon == 2 and config.latent_num_tokens == 2 * load_latent_labels(sim_data).num_tokens
    summary = _run(finetune, ["--data", sim_data, "--init", out / "final", "--out", tmp_path / "ft", "--steps", 6,
                              "--cotrain-data", sim_data, "--cotrain-weight", 0.5, "--val-fraction", 0, *TRAIN_ARGS])
    assert summary["cotrain"]["target"] == "latents" and _train_losses(tmp_path / "ft", "train/aux_latent_accuracy")
    parser = argparse.ArgumentParser()
    pretrain.add_arguments(parser)
    args = parser.parse_args([str(a) for a in ["--data", sim_data, "--out", tmp_path / "again", "--steps", 2,
                                               "--init", pretrained / "final", "--latent-horizon", 2, *TRAIN_ARGS]])
    with pytest.raises(ValueError, match="keeps its horizon"):
        pretrain.build(args)


def test_scratch_takes_the_query_token_count_of_a_pretrained_model_and_a_pretrained_one_keeps_its_own(
        sim_data, pretrained, tmp_path):
    """--query-tokens: a scratch model built with as many query tokens as a latent-horizon model has, so
    the two compare at the same architecture; a pretrained --init keeps its own."""
    _run(finetune, ["--data", sim_data, "--init", "scratch", "--query-tokens", 12, "--out", tmp_path / "s",
                    "--steps", 2, "--val-fraction", 0, *TRAIN_ARGS])
    model = LapaPolicy.from_pretrained(tmp_path / "s" / "final")
    assert model.queries.shape[0] == 12 and model.latent_head is None
    assert model.action_head.mlp[0].in_features == 12 * model.config.hidden_size
    parser = argparse.ArgumentParser()
    finetune.add_arguments(parser)
    args = parser.parse_args([str(a) for a in ["--data", sim_data, "--init", pretrained / "final", "--query-tokens",
                                               12, "--out", tmp_path / "p", "--steps", 2, *TRAIN_ARGS]])
    with pytest.raises(ValueError, match="only for --init scratch"):
        finetune.build(args)


def test_a_head_reading_only_the_latent_actions_learns_from_them_alone_and_exports(sim_data, pretrained, tmp_path):
    """--action-latents-only: the head's only input is the predicted latent actions (no query outputs, no
    state token in the fusion); no action gradient reaches the backbone, and the graph exports."""
    out = tmp_path / "ft"
    _run(finetune, ["--data", sim_data, "--init", pretrained / "final", "--out", out, "--steps", 6,
                    "--action-latents-only", "--val-fraction", 0, *TRAIN_ARGS])
    model = LapaPolicy.from_pretrained(out / "final").eval()
    cfg = model.config
    assert cfg.action_reads_latents and not cfg.action_reads_queries and cfg.state_dim == 0
    assert model.action_head.mlp[0].in_features == cfg.latent_num_tokens * cfg.latent_codebook_size
    # The action loss reaches the head only (the latent probabilities are detached).
    model.train()
    pixels = torch.rand(2, 3, cfg.image_size, cfg.image_size)
    queries = model.fuse(pixels, model.encode_instructions([INSTRUCTION] * 2))
    model.action_outputs(queries).sum().backward()
    assert model.action_head.mlp[0].weight.grad is not None
    assert all(p.grad is None for p in model.fusion.parameters())
    card = policy_export.export_policy(out / "final", tmp_path / "export", precisions=("fp32",))
    assert card["parity"]
    with pytest.raises(ValueError, match="must read the query outputs, the latent actions or both"):
        cfg.replace(action_reads_latents=False)


def test_labelled_play_trains_every_step_and_a_latent_reading_head_is_given_the_latents_that_followed(
        sim_data, pretrained, play_data, tmp_path):
    """--play-data: every step also trains on a batch of play (no instruction); a head that reads latent
    actions is given, on play, the one-hot latent actions that followed instead of its own prediction, and
    reads its prediction wherever none is given (demos, deployment: the exported graph is unchanged)."""
    out = tmp_path / "ft"
    summary = _run(finetune, ["--data", sim_data, "--init", pretrained / "final", "--out", out, "--steps", 6,
                              "--action-reads-latents", "--play-data", play_data, "--play-weight", 0.5,
                              "--val-fraction", 0, *TRAIN_ARGS])
    assert summary["play"] == {"data": [str(play_data)], "weight": 0.5, "samples": 3 * 2 * 16,
                               "latents_given": True}
    assert len(_train_losses(out, "train/play_action_loss")) >= 2
    model = LapaPolicy.from_pretrained(out / "final").eval()
    cfg = model.config
    pixels = torch.rand(2, 3, cfg.image_size, cfg.image_size)
    queries = model.fuse(pixels, model.encode_instructions(["", INSTRUCTION]), torch.zeros(2, cfg.state_dim))
    t, c = cfg.latent_num_tokens, cfg.latent_codebook_size
    with torch.no_grad():
        own = model.action_outputs(queries)
        assert torch.equal(model.action_outputs(queries, torch.full((2, t), -1)), own)
        zeros, ones = torch.zeros(2, t, dtype=torch.long), torch.ones(2, t, dtype=torch.long)
        given = model.action_outputs(queries, zeros)
        assert torch.allclose(given, model.action_head(queries, F.one_hot(zeros, c).float()))
        assert not torch.allclose(given, model.action_outputs(queries, ones))
        partly = zeros.clone()
        partly[:, 1:] = -1          # a later latent action past an episode's end: the prediction stays there
        mixed = torch.softmax(model.latent_logits(queries), -1)
        mixed[:, 0] = F.one_hot(zeros[:, 0], c).float()
        assert torch.allclose(model.action_outputs(queries, partly), model.action_head(queries, mixed))
    with pytest.raises(ValueError, match="latent_input has shape"):
        model.action_outputs(queries, torch.zeros(2, t + 1, dtype=torch.long))
    assert policy_export.export_policy(out / "final", tmp_path / "export", precisions=("fp32",))["parity"]
    # scratch trains on the same play (what every arm of a comparison gets), with nothing given
    scratch = _run(finetune, ["--data", sim_data, "--init", "scratch", "--out", tmp_path / "s", "--steps", 2,
                              "--play-data", play_data, "--val-fraction", 0, *TRAIN_ARGS])
    assert scratch["play"]["latents_given"] is False


def test_play_without_labels_for_a_latent_reading_head_or_with_a_bad_weight_is_a_clear_error(
        sim_data, pretrained, tmp_path, capsys):
    from lapa_sim.generate import generate

    unlabelled = tmp_path / "play"
    generate(unlabelled, tasks="reach", episodes_per_task=1, image_size=(64, 64), workers=1, progress=False,
             play_steps=8)
    parser = argparse.ArgumentParser()
    finetune.add_arguments(parser)
    base = ["--data", sim_data, "--init", pretrained / "final", "--out", tmp_path / "x", "--steps", 1,
            "--play-data", unlabelled, *TRAIN_ARGS]
    assert finetune.main(parser.parse_args([str(a) for a in base + ["--action-reads-latents"]])) == 2
    assert "no latent labels named 'laq'" in capsys.readouterr().err
    for weight in ("0", "nan", "-1"):
        assert finetune.main(parser.parse_args([str(a) for a in base + ["--play-weight", weight]])) == 2
        assert "--play-weight must be a finite number > 0" in capsys.readouterr().err
    assert not (tmp_path / "x" / "final").exists()


def test_demo_draws_are_exactly_k_per_task_differ_by_seed_and_refuse_too_many(sim_data):
    from lapa_models.data.frames import FrameStore
    from lapa_models.policy.finetune import draw_demos

    store = FrameStore(sim_data, progress=False)
    episodes = list(range(store.num_episodes))
    a, b = draw_demos(store, episodes, 2, seed=0), draw_demos(store, episodes, 2, seed=5)
    for draw in (a, b):
        counts = {}
        for e in draw:
            counts[store.tasks[e]] = counts.get(store.tasks[e], 0) + 1
        assert counts == {t: 2 for t in TASKS.split(",")}
    assert a == draw_demos(store, episodes, 2, seed=0)
    assert any(draw_demos(store, episodes, 2, seed=s) != a for s in range(1, 6))
    with pytest.raises(ValueError, match="--demos-per-task 4"):
        draw_demos(store, episodes, 4, seed=0)


def test_scratch_cannot_cotrain_on_latents_or_read_them(sim_data, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    finetune.add_arguments(parser)
    args = parser.parse_args([str(a) for a in ["--data", sim_data, "--init", "scratch", "--out", tmp_path / "x",
                                                "--steps", 1, "--action-reads-latents", *TRAIN_ARGS]])
    assert finetune.main(args) == 2
    assert "need a latent-pretrained --init" in capsys.readouterr().err


def test_training_step_benchmark_times_real_steps_and_refuses_bad_settings(tmp_path, capsys):
    from lapa_models.policy import bench

    pre = bench.benchmark_training("tiny", 4, 2, 1, "cpu", "fp32", "pretrain", latent_horizon=3)
    fine = bench.benchmark_training("tiny", 4, 2, 1, "cpu", "fp32", "finetune", latent_horizon=1)
    assert pre["latent_tokens"] == 12 and fine["latent_tokens"] == 4
    for r in (pre, fine):
        assert r["samples_per_s"] > 0 and r["step_ms"] > 0
        assert 0 < r["trainable_parameters"] < r["parameters"]   # the tiny config's text tower is frozen
    assert fine["trainable_parameters"] > pre["trainable_parameters"]   # the action head trains too
    with pytest.raises(ValueError, match="phase must be"):
        bench.benchmark_training("tiny", 4, 1, 0, "cpu", "fp32", "pretraining")
    parser = argparse.ArgumentParser()
    bench.add_training_arguments(parser)
    out = tmp_path / "train.json"
    assert bench.main_training(parser.parse_args(["--config", "tiny", "--batch-sizes", "4", "--steps", "1",
                                                  "--warmup", "0", "--out", str(out)])) == 0
    assert json.loads(out.read_text())["results"][0]["batch_size"] == 4
    assert bench.main_training(parser.parse_args(["--config", "tiny", "--batch-sizes", "four"])) == 2
    assert "expected comma separated integers" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert bench.main_training(parser.parse_args(["--config", "tiny", "--device", "cuda"])) == 2
        assert "sees no CUDA device" in capsys.readouterr().err
