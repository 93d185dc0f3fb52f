"""Checkpoints in the released format: safe loading, `module.` keys both ways, what a state_dict holds, and the
names of the files written beside a checkpoint. (Writing them: cakes.files.)"""
import os
import pickle
import re
import warnings

import torch

from cakes.errors import UsageError
from cakes.ops.kernels import KINDS, VIDEO_KIND_NAMES, kind_of_size
from cakes.ops.registry import cakes_op_code

ARCH_OF_LAYER3 = {6: 'resnet50', 23: 'resnet101'}
OWN_PREFIXES = ('base_model.', 'new_fc.')  # the keys of TemporalModel, as released
CHECK_FLAGS = 'check the path given to --resume/--finetune/--prune_model_path'


def load_checkpoint(path):
    """Load tensors and plain data only (weights_only): a pickle that would run code is refused unrun.

    Released checkpoints hold CUDA tensors; map_location opens them on any machine.
    """
    if not os.path.isfile(path):
        raise UsageError(f"checkpoint '{path}' not found: {CHECK_FLAGS}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr: the error says enough
            warnings.simplefilter('ignore')
            return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        _check_is_a_checkpoint(path)  # a list given by mistake fails as a refused pickle: say what it is first
        raise UsageError(f"refusing to load '{path}': it is not plain weights, unpickling it could run code "
                         f"({_unpickling_reason(e)}); nothing in it was run") from None
    except Exception as e:
        _check_is_a_checkpoint(path)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"cannot read checkpoint '{path}' ({type(e).__name__}: {first}): is it a complete "
                         "PyTorch checkpoint?") from None


def _check_is_a_checkpoint(path):
    """Refuse a file whose first bytes are none of a checkpoint's: a zip archive (torch.save since 1.6), a binary
    pickle (older torch.save) or a tar archive (before torch 0.4). An empty file is left to torch's message."""
    with open(path, 'rb') as f:
        head = f.read(512)
    if not head or head.startswith((b'PK\x03\x04', b'\x80')) or head[257:262] == b'ustar':
        return
    line = head.split(b'\n', 1)[0][:80].decode('utf-8', 'ignore').strip()
    what = f"the text '{line}'" if line and line.isprintable() else f'the bytes {head[:8]!r}'
    raise UsageError(f"'{path}' is not a checkpoint: it starts with {what}, where a PyTorch checkpoint is a zip "
                     f"archive or a binary pickle; {CHECK_FLAGS}")


def _unpickling_reason(error):
    """The line of torch's long weights_only message that names what was refused."""
    lines = [line.strip() for line in str(error).splitlines()]
    return next((line for line in lines if line.startswith(('Trying to load', 'Unsupported'))), 'not tensors')


def model_state(checkpoint):
    """The model weights of a checkpoint dict (or a bare state_dict), without `module.` prefixes."""
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError('checkpoint holds no state_dict: expected a dict with a "state_dict" of tensors')
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}


def released_state(model):
    """The model's state_dict with every key prefixed `module.`, as nn.DataParallel saved it."""
    return {'module.' + k: v for k, v in model.state_dict().items()}


def load_weights(model, state):
    """Strict load; a layout mismatch is a UsageError naming the first differences and what would fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f'{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}' for k in own
             if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        check_own_layout(state)
        parts = [f'{label}: {", ".join(items[:3])}' for label, items in
                 (('missing', missing), ('unexpected', unexpected), ('shape (checkpoint vs model)', wrong)) if items]
        raise UsageError('checkpoint does not fit the model built from --op_code/--conv_config/--search/--arch ('
                         + '; '.join(parts) + f'){layout_hint(state, own)}')
    model.load_state_dict(state)


def check_own_layout(state, source='the checkpoint'):
    """A state_dict (`module.` keys or not) with none of TemporalModel's keys is another kind of network
    entirely: say so, rather than what flag would fit it."""
    keys = [k[len('module.'):] if k.startswith('module.') else k for k in state]
    if keys and not any(k.startswith(OWN_PREFIXES) for k in keys):
        raise UsageError(f'{source} holds another kind of network: its keys ({", ".join(keys[:3])}, ...) are not '
                         "this project's layout (base_model.*, new_fc.*), so it is neither a checkpoint of main.py "
                         'nor a released CAKES one')


def layout_hint(state, own=None):
    """What the checkpoint is, read off its keys and shapes, and how it differs from the model (`own`)."""
    hints = [_op_hint(state, own or {})]
    if own:
        hints += [_depth_hint(state, own), _classifier_hint(state, own)]
    hints = [h for h in hints if h]
    return ': ' + '; '.join(hints) if hints else ''


def _op_hint(state, own):
    keys = [k for k in state if '.convT.' in k]
    if any('.convT.norm.' in k for k in keys):
        return 'it is a dropout supernet (use an op code ending in _dropout with --search)'
    if any('.convT.op.' in k for k in keys):
        return 'it is a conv3d/conv2d/convp3d network'
    blocks = cakes_widths(state)
    if not blocks:
        return ''
    kinds = tuple(kind for kind in KINDS if any(kind in b for b in blocks.values()))
    names = '/'.join(VIDEO_KIND_NAMES.get(kind, kind) for kind in kinds)
    op_code = cakes_op_code(kinds) or '?'
    if all(len(b) == len(kinds) and len(set(b.values())) == 1 for b in blocks.values()) and is_supernet(state):
        return f'its CAKES branches are {names}: a --search supernet of --op_code {op_code}'
    hint = f'its CAKES branches are {names} (--op_code {op_code})'
    theirs, ours = blocks, cakes_widths(own)
    differing = next((b for b in theirs if b in ours and theirs[b] != ours[b]), None)
    if differing:
        fix = 'drop --search and give' if is_supernet(own) else 'give'
        hint += (f'; block {differing} has widths {theirs[differing]} in the checkpoint but {ours[differing]} in '
                 f'the model: {fix} the --conv_config it was trained with')
    return hint


def is_supernet(state):
    """A sparsity supernet's conv3 reads all n*C branch channels, n times its conv1 width."""
    conv1 = next((v for k, v in state.items() if k.endswith('layer1.0.conv1.weight')), None)
    conv3 = next((v for k, v in state.items() if k.endswith('layer1.0.conv3.weight')), None)
    return conv1 is not None and conv3 is not None and conv3.shape[1] > conv1.shape[0]


def cakes_widths(state):
    """{block: {kind: width}} of the CAKES branches in a state_dict, blocks named like 'layer1.0'."""
    blocks = {}
    for k, v in state.items():
        if '.convT.convs.' in k and k.endswith('.weight') and v.dim() == 5:
            block = k.split('.convT.')[0].replace('base_model.', '')
            blocks.setdefault(block, {})[kind_of_size(v.shape[2:])] = v.shape[0]
    return blocks


def _depth_hint(state, own):
    theirs, ours = _layer3_blocks(state), _layer3_blocks(own)
    if theirs and ours and theirs != ours:
        return f'it has {theirs} blocks in layer3 (--arch {ARCH_OF_LAYER3.get(theirs, "?")}), the model {ours}'
    return ''


def _layer3_blocks(state):
    return len({k.split('layer3.')[1].split('.')[0] for k in state if k.startswith('base_model.layer3.')})


def _classifier_hint(state, own):
    if ('new_fc.weight' in state) != ('new_fc.weight' in own):
        return 'it was trained with ' + ('--dropout > 0 (new_fc)' if 'new_fc.weight' in state else '--dropout 0')
    key = 'new_fc.weight' if 'new_fc.weight' in own else 'base_model.fc.weight'
    if key in state and key in own and state[key].shape[0] != own[key].shape[0]:
        return f'its classifier has {state[key].shape[0]} classes, the dataset {own[key].shape[0]}'
    return ''


def prune_output_prefix(checkpoint_path):
    """Where --prune writes beside a supernet checkpoint: its path without `_checkpoint.pth.tar`, `_best.pth.tar`,
    `_epochN.pth.tar` or `.pth.tar` (another extension: without it), e.g. DIR/checkpoint/RUN."""
    stripped = re.sub(r'(_checkpoint|_best|_epoch\d+)?\.pth\.tar$', '', checkpoint_path)
    return stripped if stripped != checkpoint_path else os.path.splitext(checkpoint_path)[0]
