"""LAQ model, configuration and NSVQ quantizer: shapes, errors, save/load, codebook health (no dataset)."""
import json

import numpy as np
import pytest
import torch

from lapa_models.laq import CheckpointError, ConfigError, LAQConfig, LAQModel, get_config
from lapa_models.laq.quantizer import NSVQ, code_counts, replacement_due, usage_and_perplexity


def _frames(n, size=(64, 64), seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *size, 3), dtype=np.uint8), rng.integers(0, 256, (n, *size, 3), dtype=np.uint8)


def _tiny(**changes):
    # Narrower than the named tiny size: these tests check shapes and errors, not learning.
    narrow = dict(dim=32, heads=2, spatial_depth=1, temporal_depth=1, decoder_depth=1)
    return get_config("tiny", **{**narrow, **changes})


# ---------------------------------------------------------------------------- configuration
def test_named_sizes_validate_and_the_paper_size_matches_the_authors():
    for name in ("tiny", "small"):
        model = LAQModel(get_config(name))
        assert model.config.codebook_size == 8 and model.config.num_latent_tokens == 4 and model.config.code_dim == 32
    paper = get_config("paper")
    assert paper.image_size == (256, 256) and paper.grid_size == (8, 8) and paper.token_grid == (2, 2)
    with torch.device("meta"):  # the shapes without allocating 1.4 GB
        params = LAQModel(paper).num_parameters()
    assert 250e6 < params < 450e6


def test_config_round_trips_through_json(tmp_path):
    config = get_config("small", frame_gap=2, num_latent_tokens=6)
    config.save(tmp_path / "config.json")
    assert LAQConfig.from_json_file(tmp_path / "config.json") == config
    assert get_config(tmp_path / "config.json") == config
    assert config.sha256() == LAQConfig.from_dict(json.loads((tmp_path / "config.json").read_text())).sha256()


@pytest.mark.parametrize("changes, words", [
    ({"image_size": (60, 64)}, "not a multiple of patch_size"),
    ({"dim": 30, "heads": 4}, "not divisible by heads"),
    ({"num_latent_tokens": 65}, "exceeds the 64 patches"),
    ({"token_pooling": "conv", "num_latent_tokens": 3}, "tile the 8x8 patch grid"),
    ({"codebook_size": 1}, "codebook_size"),
    ({"token_pooling": "maxpool"}, "token_pooling"),
    ({"frame_gap": 0}, "frame_gap"),
])
def test_invalid_configs_name_the_problem(changes, words):
    with pytest.raises(ConfigError, match=words):
        get_config("tiny", **changes)


def test_unknown_config_names_and_fields_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="unknown LAQ config 'huge'"):
        get_config("huge")
    (tmp_path / "config.json").write_text(json.dumps({**get_config("tiny").to_dict(), "depth": 3}))
    with pytest.raises(ConfigError, match=r"unknown LAQConfig fields \['depth'\]"):
        LAQConfig.from_json_file(tmp_path / "config.json")


# ---------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("pooling, tokens", [("attention", 1), ("attention", 3), ("attention", 4), ("attention", 7),
                                             ("attention", 64), ("conv", 1), ("conv", 2), ("conv", 4), ("conv", 8),
                                             ("conv", 16)])
def test_every_token_count_the_config_allows_trains_and_encodes(pooling, tokens):
    model = LAQModel(_tiny(token_pooling=pooling, num_latent_tokens=tokens))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    frames_t, frames_tk = _frames(3)
    for _ in range(2):  # the second backward passes through the (zero-initialized) pixel head
        optimizer.zero_grad()
        out = model(frames_t, frames_tk)
        out.loss.backward()
        optimizer.step()
    assert out.indices.shape == (3, tokens) and out.latents.shape == (3, tokens, 32)
    assert out.prediction.shape == (3, 3, 64, 64)
    assert float(model.quantizer.codebook.grad.abs().sum()) > 0
    assert float(model.patch_embedding.layers[1].weight.grad.abs().sum()) > 0
    assert model.encode(frames_t, frames_tk).shape == (3, tokens)


def test_rectangular_images_work():
    model = LAQModel(_tiny(image_size=(48, 80)))
    frames_t, frames_tk = _frames(2, size=(48, 80))
    assert model(frames_t, frames_tk).prediction.shape == (2, 3, 48, 80)


def test_residual_decoder_starts_at_the_copy_frame_baseline():
    model = LAQModel(_tiny())
    out = model(*_frames(4))
    assert torch.allclose(out.loss, out.copy_mse)


def test_uint8_and_float_frames_give_the_same_tokens_and_prediction():
    model = LAQModel(_tiny()).eval()
    frames_t, frames_tk = _frames(4)
    as_float = (frames_t.astype(np.float32) / 255, frames_tk.astype(np.float32) / 255)
    assert torch.equal(model.encode(frames_t, frames_tk), model.encode(*as_float))
    assert torch.allclose(model(frames_t, frames_tk).prediction, model(*map(torch.from_numpy, as_float)).prediction)


# ---------------------------------------------------------------------------- bad input
def test_frames_of_mismatched_size_between_t_and_t_plus_k_are_rejected():
    model = LAQModel(_tiny())
    frames_t, _ = _frames(2)
    _, small = _frames(2, size=(48, 48))
    with pytest.raises(ValueError, match=r"frames_t and frames_tk must match.*\(2, 64, 64, 3\).*\(2, 48, 48, 3\)"):
        model(frames_t, small)


def test_frames_of_the_wrong_size_for_the_config_are_rejected():
    model = LAQModel(_tiny())
    with pytest.raises(ValueError, match="frames_t: frames are 48x48 but this model takes 64x64"):
        model(*_frames(2, size=(48, 48)))


@pytest.mark.parametrize("bad, words", [
    (lambda f: f.astype(np.int64), "uint8 .* or float .*got dtype torch.int64"),
    (lambda f: f.astype(np.float32), r"float frames must be in \[0, 1\].*255"),
    (lambda f: f[..., :2], r"expected \(B, H, W, 3\) channels-last frames"),
    (lambda f: np.transpose(f, (0, 3, 1, 2)), "channels-last"),
])
def test_frames_of_the_wrong_dtype_range_or_layout_are_rejected(bad, words):
    model = LAQModel(_tiny())
    frames_t, frames_tk = _frames(2)
    with pytest.raises((ValueError, TypeError), match=words):
        model(bad(frames_t), bad(frames_tk))


def test_reconstruct_checks_the_token_shape():
    model = LAQModel(_tiny())
    frames_t, _ = _frames(2)
    with pytest.raises(ValueError, match=r"indices must be \(B=2, T=4\)"):
        model.reconstruct(frames_t, torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"latent token indices must be in \[0, 8\)"):
        model.reconstruct(frames_t, torch.full((2, 4), 8))


# ---------------------------------------------------------------------------- save / load
def test_save_and_load_give_bit_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = LAQModel(_tiny())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    frames_t, frames_tk = _frames(8)
    for _ in range(3):  # move away from the initialization (zero head) before comparing
        model(frames_t, frames_tk).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    loaded = LAQModel.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(loaded(frames_t, frames_tk).prediction, model(frames_t, frames_tk).prediction)
    assert torch.equal(loaded.encode(frames_t, frames_tk), model.encode(frames_t, frames_tk))
    tokens = model.encode(frames_t, frames_tk)
    assert torch.equal(loaded.reconstruct(frames_t, tokens), model.reconstruct(frames_t, tokens))


def test_checkpoint_from_a_different_config_names_the_mismatched_fields(tmp_path):
    LAQModel(_tiny()).save_pretrained(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match=r"different LAQ config.*dim: 64 vs 32.*codebook_size: 16 vs 8"):
        LAQModel.from_pretrained(tmp_path / "ckpt", config=_tiny(dim=64, codebook_size=16))
    other = LAQModel(_tiny(num_latent_tokens=2))
    with pytest.raises(CheckpointError, match="num_latent_tokens: 2 vs 4"):
        other.load_weights(tmp_path / "ckpt" / "model.safetensors")
    # Without a config.json beside them, the weights' shapes still tell.
    (tmp_path / "bare").mkdir()
    (tmp_path / "ckpt" / "model.safetensors").rename(tmp_path / "bare" / "model.safetensors")
    with pytest.raises(CheckpointError, match="weights do not fit this LAQ config.*latent_position"):
        other.load_weights(tmp_path / "bare" / "model.safetensors")


def test_missing_or_corrupt_checkpoints_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint directory not found"):
        LAQModel.from_pretrained(tmp_path / "nowhere")
    LAQModel(_tiny()).save_pretrained(tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=f"{weights}: corrupt or truncated safetensors"):
        LAQModel.from_pretrained(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "config.json").unlink()
    with pytest.raises(CheckpointError, match="not an LAQ checkpoint \\(no config.json\\)"):
        LAQModel.from_pretrained(tmp_path / "ckpt")


# ---------------------------------------------------------------------------- NSVQ
def test_nsvq_substitutes_the_quantization_error_by_noise_of_the_same_norm():
    torch.manual_seed(0)
    quantizer = NSVQ(codebook_size=8, code_dim=16)
    x = torch.randn(32, 4, 16, requires_grad=True)
    quantized, indices = quantizer(x)
    hard = quantizer.codebook[indices]
    assert torch.allclose((quantized - x).norm(dim=-1), (x - hard).norm(dim=-1), atol=1e-5)
    assert not torch.allclose(quantized, hard)  # training passes noise, not the code
    quantized.sum().backward()
    assert quantizer.codebook.grad.abs().sum() > 0 and x.grad.abs().sum() > 0  # no straight-through needed
    quantizer.eval()
    quantized, indices = quantizer(x)
    assert torch.equal(quantized, quantizer.codebook[indices])
    distances = torch.cdist(x.reshape(-1, 16), quantizer.codebook)
    assert torch.equal(indices.reshape(-1), distances.argmin(1))


def test_unused_codes_are_replaced_by_perturbed_recent_latents_and_used_ones_kept():
    torch.manual_seed(0)
    quantizer = NSVQ(codebook_size=8, code_dim=4)
    before = quantizer.codebook.detach().clone()
    candidates = torch.randn(64, 4) * 5 + 10
    counts = torch.tensor([100, 90, 0, 80, 1, 70, 60, 0])
    replaced = quantizer.replace_unused_codes(counts, candidates, dead_share=0.03)
    assert replaced.tolist() == [2, 4, 7]  # 1 assignment is below 3% of a fair share (50)
    kept = [0, 1, 3, 5, 6]
    assert torch.equal(quantizer.codebook[kept], before[kept])
    new = quantizer.codebook[replaced].detach()
    nearest = torch.cdist(new, candidates).min(1).values
    assert (nearest < 0.1 * candidates.norm(dim=1).mean()).all() and (nearest > 0).all()
    assert len(quantizer.replace_unused_codes(torch.full((8,), 10), candidates)) == 0


def test_replacement_seeds_dead_codes_where_living_codes_represent_latents_worst():
    torch.manual_seed(0)
    quantizer = NSVQ(codebook_size=4, code_dim=2)
    with torch.no_grad():
        quantizer.codebook.copy_(torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [0.1, 0.1]]))
    covered = torch.randn(200, 2) * 0.05          # where the living codes already are
    uncovered = torch.randn(20, 2) * 0.05 + 10.0  # a cluster no code represents
    replaced = quantizer.replace_unused_codes(torch.tensor([50, 50, 0, 0]), torch.cat([covered, uncovered]))
    assert replaced.tolist() == [2, 3]
    assert (quantizer.codebook[2:].detach() - 10.0).abs().max() < 1.0  # both land in the uncovered cluster


def test_attention_pooling_starts_each_token_on_its_own_region_of_the_image():
    torch.manual_seed(0)
    model = LAQModel(_tiny()).eval()
    frames_t, frames_tk = _frames(4)
    moved = frames_tk.copy()
    moved[:, :32, :32] = 255 - moved[:, :32, :32]  # change only the top-left quadrant
    with torch.no_grad():
        before, _ = model.encode_latents(*model._preprocess_pair(frames_t, frames_tk))
        after, _ = model.encode_latents(*model._preprocess_pair(frames_t, moved))
    change = (after - before).norm(dim=-1).mean(0)  # per token
    assert change[0] > 5 * change[1:].max(), change


def test_data_dependent_init_spreads_all_codes_over_the_latents():
    torch.manual_seed(0)
    quantizer = NSVQ(codebook_size=8, code_dim=4).eval()
    latents = torch.randn(256, 4) * 3
    quantizer.initialize_from(latents)
    used, perplexity = usage_and_perplexity(code_counts(quantizer(latents)[1], 8))
    assert used == 8 and perplexity > 4


def test_replacement_follows_the_paper_schedule():
    due = [s for s in range(1, 7001) if replacement_due(s)]
    assert due[:10] == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert [s for s in due if 100 < s < 1000] == list(range(200, 1000, 100))
    assert [s for s in due if 1000 <= s < 5000] == [1000, 1500, 2000, 2500, 3000, 3500, 4000, 4500]
    assert [s for s in due if s >= 5000] == [5000, 6000, 7000]


def test_usage_and_perplexity():
    assert usage_and_perplexity([10, 10, 10, 10]) == (4, pytest.approx(4.0))
    assert usage_and_perplexity([40, 0, 0, 0]) == (1, pytest.approx(1.0))
    assert usage_and_perplexity([0, 0]) == (0, 0.0)
    assert code_counts(torch.tensor([[0, 1], [1, 3]]), 4).tolist() == [1, 2, 0, 1]
