import pytest
import torch

from apt.core.sampling import SamplingParams
from apt.inference.sampler import Sampler
from apt.models.loading import load_components
from apt.models.model_folder import check_layout


def test_loads_a_diffusers_layout_folder(tiny_model_dir):
    comps = load_components(tiny_model_dir)
    assert comps.transformer.num_blocks == 4
    assert comps.vae.z_dim == 4 and comps.vae.spatial_factor == 4
    assert comps.text.max_tokens == 32  # from the tokenizer's model_max_length
    emb = comps.text.encode(["a red seven", ""])
    assert emb.shape == (2, 32, 16)
    assert torch.count_nonzero(emb[1].abs().sum(-1)) == 1  # empty prompt: only the EOS token
    video = Sampler(comps).generate(["a red seven"], SamplingParams(height=16, width=16, frames=5, steps=2,
                                                                  guidance_scale=2.0))
    assert video.shape == (1, 3, 5, 16, 16) and video.abs().max() <= 1


def test_partial_load_and_clear_errors(tiny_model_dir, tmp_path):
    comps = load_components(tiny_model_dir, parts=("transformer",))
    assert comps.vae is None and comps.text is None
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_components(tmp_path / "nope")
    (tmp_path / "transformer").mkdir()
    with pytest.raises(FileNotFoundError, match="missing vae/, text_encoder/, tokenizer/"):
        check_layout(tmp_path)
    with pytest.raises(ValueError, match="unknown model parts"):
        load_components(tiny_model_dir, parts=("unet",))


def test_text_embeddings_match_wan_pipeline(tiny_model_dir):
    from diffusers import WanPipeline

    pipe = WanPipeline.from_pretrained(tiny_model_dir)
    prompts = ["a  red seven &amp; more", "a blue two moving left"]
    theirs, _ = pipe.encode_prompt(prompts, do_classifier_free_guidance=False, max_sequence_length=32,
                                   device=torch.device("cpu"))
    ours = load_components(tiny_model_dir, parts=("text_encoder", "tokenizer")).text.encode(prompts)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_vae_normalisation_matches_wan_pipeline_convention(tiny_model_dir):
    comps = load_components(tiny_model_dir, parts=("vae",))
    vae = comps.vae
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    z = vae.encode(video)
    raw = vae.vae.encode(video).latent_dist.mode()
    mean = torch.tensor(vae.vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.vae.config.latents_std).view(1, -1, 1, 1, 1)
    assert torch.allclose(z, (raw - mean) / std, atol=1e-5)
    assert torch.allclose(vae.decode(z), vae.vae.decode(raw).sample.clamp(-1, 1), atol=1e-5)
    with pytest.raises(ValueError, match="4k\\+1"):
        vae.latent_shape(8, 16, 16)


def test_unclamped_vae_decode_used_for_training_equals_diffusers_decode_up_to_the_clamp(tiny_model_dir):
    from apt.toy.train_vae import decode_unclamped

    vae = load_components(tiny_model_dir, parts=("vae",)).vae.vae
    z = torch.randn(2, 4, 3, 4, 4) * 3
    with torch.no_grad():
        raw = decode_unclamped(vae, z)
        assert torch.equal(raw.clamp(-1, 1), vae.decode(z).sample)


def test_wan22_ti2v_5b_layout_loads_and_samples(tmp_path):
    """Wan 2.2 TI2V-5B's layout (patchified VAE, 16x spatial; its pipeline gives every token its own
    timestep): our scalar-t forward equals the model's with the timestep expanded per token, as
    diffusers' WanPipeline passes it for text-to-video."""
    from tiny import build_tiny_wan_folder

    comps = load_components(build_tiny_wan_folder(tmp_path / "ti2v", wan22="ti2v-5b"))
    assert comps.vae.spatial_factor == 16 and comps.vae.latent_shape(9, 32, 32) == (4, 3, 2, 2)
    x, t, text = torch.randn(2, 4, 3, 4, 4), torch.tensor([0.7, 0.3]), comps.text.encode(["a red seven", ""])
    tokens = 3 * 2 * 2  # patch (1, 2, 2)
    theirs = comps.transformer.model(hidden_states=x, timestep=(t * 1000).view(2, 1).expand(2, tokens),
                                     encoder_hidden_states=text).sample
    torch.testing.assert_close(comps.transformer(x, t, text), theirs, rtol=0, atol=1e-5)
    video = Sampler(comps).generate(["a red seven"], SamplingParams(height=32, width=32, frames=5, steps=2,
                                                                  guidance_scale=2.0))
    assert video.shape == (1, 3, 5, 32, 32) and video.abs().max() <= 1


def test_a_two_expert_wan22_a14b_folder_is_refused_with_the_reason(tmp_path):
    from tiny import build_tiny_wan_folder

    from apt.core.config import ConfigError

    folder = build_tiny_wan_folder(tmp_path / "a14b", wan22="a14b")
    with pytest.raises(ConfigError, match="two DiTs.*boundary_ratio 0.875.*one-DiT folder"):
        load_components(folder)
