import pytest
import torch
from tiny import tiny_transformer

from apt.models.backbone import WanBackbone, default_taps


def _inputs(batch=2, frames=3, size=4, text_len=5):
    x = torch.randn(batch, 4, frames, size, size)
    t = torch.rand(batch)
    text = torch.randn(batch, text_len, 16)
    return x, t, text


def test_forward_equals_diffusers_forward():
    model = tiny_transformer()
    backbone = WanBackbone(model)
    x, t, text = _inputs()
    with torch.no_grad():
        ours = backbone(x, t, text)
        theirs = model(hidden_states=x, timestep=t * 1000, encoder_hidden_states=text, return_dict=False)[0]
    assert ours.shape == x.shape
    assert torch.allclose(ours, theirs, atol=1e-6, rtol=1e-5)


def test_forward_equals_diffusers_forward_for_one_frame_images():
    model = tiny_transformer(seed=1)
    x, t, text = _inputs(frames=1)
    with torch.no_grad():
        assert torch.allclose(WanBackbone(model)(x, t, text),
                              model(x, t * 1000, text, return_dict=False)[0], atol=1e-6, rtol=1e-5)


def test_taps_are_one_based_block_outputs():
    model = tiny_transformer()
    backbone = WanBackbone(model)
    x, t, text = _inputs()
    captured = {}
    hooks = [blk.register_forward_hook(lambda m, i, o, k=k: captured.__setitem__(k + 1, o))
             for k, blk in enumerate(model.blocks)]
    with torch.no_grad():
        feats, emb = backbone.features(x, t, text, taps=[1, 3])
    for h in hooks:
        h.remove()
    assert sorted(feats) == [1, 3]
    assert torch.equal(feats[1], captured[1]) and torch.equal(feats[3], captured[3])
    assert 4 not in captured  # blocks past the deepest tap never ran
    assert feats[3].shape == (2, 3 * 2 * 2, backbone.hidden_dim)
    assert emb.grid == (3, 2, 2)


def test_features_validates_taps():
    backbone = WanBackbone(tiny_transformer())
    x, t, text = _inputs()
    for bad in ([], [0], [5]):
        with pytest.raises(ValueError, match="taps"):
            backbone.features(x, t, text, taps=bad)


def test_default_taps_follow_the_paper():
    assert default_taps(36) == (16, 26, 36)
    assert default_taps(30) == (13, 22, 30)
    assert default_taps(40) == (18, 29, 40)
    assert default_taps(12) == (5, 9, 12)


def test_bad_inputs_fail_clearly():
    backbone = WanBackbone(tiny_transformer())
    with pytest.raises(ValueError, match="patch size"):
        backbone(torch.randn(1, 4, 1, 3, 4), torch.rand(1), torch.randn(1, 5, 16))
    with pytest.raises(TypeError):
        WanBackbone(torch.nn.Linear(2, 2))


def test_activation_checkpointing_gives_same_gradients():
    x, t, text = _inputs()
    grads = []
    for ac in (False, True):
        backbone = WanBackbone(tiny_transformer())
        backbone.activation_checkpointing = ac
        backbone(x, t, text).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in backbone.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
