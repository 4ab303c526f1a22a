"""The ResNet-UNet family: parameter counts equal segmentation_models_pytorch's, shapes, channels-last + autocast,
registry errors, local weights."""

from __future__ import annotations

import pytest
import torch
import torchvision

from models import ENCODERS, UnetDecoder, count_parameters, create_model, list_encoders

# smp.Unet(<encoder>, encoder_weights=None, classes=1) parameter counts (the reference the paper's model follows)
SMP_PARAMS = {"resnet18": 14_328_209, "resnet34": 24_436_369, "resnet50": 32_521_105, "resnet101": 51_513_233,
              "resnet152": 67_156_881}


def test_registry_lists_every_depth():
    assert list_encoders() == list(SMP_PARAMS)


@pytest.mark.parametrize("name", list_encoders())
def test_parameter_count_matches_reference(name):
    with torch.device("meta"):  # no allocation, no initialisation: counting only
        model = create_model(name)
    assert count_parameters(model) == SMP_PARAMS[name]
    deepest, skip = ENCODERS[name].out_channels[-1], ENCODERS[name].out_channels[-2]
    assert model.decoder.blocks[0].conv1[0].in_channels == deepest + skip  # upsampled map + concatenated skip


@pytest.mark.parametrize("name", list_encoders())
def test_forward_shapes(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = model.encoder(x)
        out = model(x)
    assert [f.shape[1] for f in feats] == list(ENCODERS[name].out_channels)
    assert [f.shape[-1] for f in feats] == [64, 32, 16, 8, 4, 2]  # highest resolution first
    assert out.shape == (1, 1, 64, 64)
    assert torch.isfinite(out).all()


def test_channels_last_autocast_forward_backward_on_cpu():
    torch.manual_seed(0)
    model = create_model("resnet18").to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    assert logits.dtype == torch.bfloat16
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), torch.zeros(2, 1, 64, 64))
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.encoder.conv1.weight.grad.abs().sum() > 0


def test_unknown_encoder_lists_valid_names():
    with pytest.raises(ValueError, match="resnet18, resnet34"):
        create_model("resnet19")


def test_config_object_and_none_kwargs_keep_defaults():
    class Cfg:  # any ModelConfig-like object works: models never imports orchestrator
        encoder, in_channels, classes, decoder_channels, weights = "resnet18", 1, 2, None, None

    with torch.device("meta"):
        model = create_model(Cfg(), weights=None)
    assert model.encoder.conv1.in_channels == 1
    assert model.segmentation_head.out_channels == 2
    assert model.decoder.blocks[-1].conv2[0].out_channels == 16


def test_decoder_knows_encoder_only_by_out_channels():
    dec = UnetDecoder((3, 8, 8, 16, 32, 64), decoder_channels=(32, 16, 8, 8, 4))
    feats = [torch.randn(1, c, 64 // 2**i, 64 // 2**i) for i, c in enumerate((3, 8, 8, 16, 32, 64))]
    assert dec(feats).shape == (1, 4, 64, 64)
    with pytest.raises(ValueError, match="needs 5 entries"):
        UnetDecoder((3, 8, 8, 16, 32, 64), decoder_channels=(32, 16))


def test_local_weights_file_is_loaded(tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18()  # stands in for an ImageNet file: same keys, fc included
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = create_model("resnet18", weights=str(path))
    assert torch.equal(model.encoder.conv1.weight, reference.conv1.weight)
    assert torch.equal(model.encoder.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)
    with pytest.raises(ValueError, match="does not match"):
        create_model("resnet50", weights=str(path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_model("resnet18", weights=str(tmp_path / "missing.pth"))


def test_head_relu_changes_the_function_not_the_weights():
    """The head trap (BENCHMARKS.md): behind a ReLU, the head's inputs are all >= 0, so a model that marks tumour
    by switching every feature off can give no pixel more than sigmoid(head bias). Without it (the default), the
    head reads the last BatchNorm output, of either sign. Both build the same parameters under the same keys."""
    torch.manual_seed(0)
    plain = create_model("resnet18").eval()
    torch.manual_seed(0)
    relu = create_model("resnet18", head_relu=True).eval()
    assert plain.state_dict().keys() == relu.state_dict().keys()
    assert count_parameters(plain) == count_parameters(relu) == SMP_PARAMS["resnet18"]
    relu.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        head_in_plain = plain.decoder(plain.encoder(x))
        head_in_relu = relu.decoder(relu.encoder(x))
    assert (head_in_relu >= 0).all()
    assert (head_in_plain < 0).float().mean() > 0.2  # BN output: about half negative
    torch.testing.assert_close(head_in_relu, head_in_plain.clamp_min(0))  # only the last ReLU differs
    # The trap itself: with every head weight negative, the ReLU model's logit never exceeds the bias; without the
    # ReLU, negative features push it above.
    with torch.no_grad():
        for m in (plain, relu):
            m.segmentation_head.weight.copy_(-m.segmentation_head.weight.abs())
            m.segmentation_head.bias.fill_(-0.09)
        assert relu(x).max() <= -0.09 + 1e-6
        assert plain(x).max() > -0.09 + 1e-4


def test_encoder_specs_are_built_from_the_torch_free_registry():
    from models.registry import ENCODER_TABLE

    assert list(ENCODERS) == list(ENCODER_TABLE) == list_encoders()
    for name, row in ENCODER_TABLE.items():
        assert (ENCODERS[name].block.__name__.lower().removesuffix("block"), ENCODERS[name].layers,
                ENCODERS[name].out_channels) == (row.block, row.layers, row.out_channels)
