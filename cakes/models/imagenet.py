"""Start the I3D backbone from a 2D torchvision ResNet by inflating its weights as the released code does: I3D
inflation for 3x3x3 kernels, the 2D kernel as it is for 1x3x3, summed over space then inflated for 3x1x1."""
import torch
import torchvision

from cakes.errors import UsageError


def load_imagenet(backbone3d, arch, pretrained):
    """`pretrained` is 'imagenet' (torchvision's weights API) or a path to a 2D ResNet state_dict."""
    state2d = imagenet_state_dict(arch) if pretrained == 'imagenet' else read_state_dict(pretrained)
    inflate_resnet(backbone3d, state2d)


def imagenet_state_dict(arch):
    weights = torchvision.models.get_model_weights(arch).IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=False)
    except Exception as e:  # offline, proxy, partial download: all end the same way for the user
        raise UsageError(f"cannot fetch the ImageNet {arch} weights ({type(e).__name__}: {e}); "
                         f"pass --pretrained PATH to a torchvision {arch} state_dict file, "
                         "or --pretrained none to start from random weights") from None


def read_state_dict(path):
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except FileNotFoundError:
        raise UsageError(f"pretrained weights '{path}' not found: give a torchvision ResNet state_dict file, "
                         "'imagenet' or 'none'") from None
    except Exception as e:
        raise UsageError(f"cannot read pretrained weights '{path}': {type(e).__name__}: {e}") from None
    return state.get('state_dict', state) if isinstance(state, dict) else state


def inflate_resnet(backbone3d, state2d):
    """Copy a 2D ResNet state_dict into the 3D backbone, key by key (the 2D `fc` is not used)."""
    arch = backbone3d.arch
    with torch.device('meta'):
        expected = {k for k in torchvision.models.get_model(arch).state_dict() if not k.startswith('fc.')}
    given = {k for k in state2d if not k.startswith('fc.')}
    if given != expected:
        missing, unexpected = sorted(expected - given), sorted(given - expected)
        raise UsageError(f"pretrained weights are not a torchvision {arch} state_dict (missing: "
                         f"{', '.join(missing[:3]) or '-'}; unexpected: {', '.join(unexpected[:3]) or '-'}): "
                         f"give the {arch} weights, 'imagenet' or 'none'")
    try:
        with torch.no_grad():
            for key in sorted(given):
                _load_key(backbone3d, key, state2d[key])
    except RuntimeError as e:
        raise UsageError(f"pretrained weights do not fit the {arch} backbone ({e}): give the state_dict of "
                         f"the torchvision {arch}") from None


def _load_key(backbone3d, key, value):
    path, name = key.rsplit('.', 1)
    if '.conv2' in path or '.bn2' in path:
        block = backbone3d.get_submodule(path.rsplit('.', 1)[0])
        if '.conv2' in path:
            block.convT.inflate_from_2d(value.unsqueeze(2))
        else:
            _copy_bn_entry(block.convT.bn, name, value)
        return
    module = backbone3d.get_submodule(path)
    if isinstance(module, torch.nn.Conv3d):
        weight = value.unsqueeze(2)
        # conv3 of an n-branch supernet reads n*C channels: tile the 2D input channels n times.
        module.weight.copy_(weight.repeat(1, module.in_channels // weight.shape[1], 1, 1, 1))
    else:
        _copy_bn_entry(module, name, value)


def _copy_bn_entry(bn, name, value):
    """Copy one BN vector, tiled when the 3D BN covers several copies of the 2D channels."""
    target = getattr(bn, name)
    if name == 'num_batches_tracked':
        target.copy_(value)
    else:
        target.copy_(value.repeat(target.numel() // value.numel()))
