"""Checkpoints in the released format: safe loading, atomic writing, `module.` keys both ways."""
import os
import shutil
import tempfile

import torch

from .errors import UsageError


def load_checkpoint(path):
    """Load tensors and plain data only (weights_only): a pickle that would run code is refused.

    Released checkpoints hold CUDA tensors; map_location opens them on any machine.
    """
    if not os.path.isfile(path):
        raise UsageError(f"checkpoint '{path}' not found: check the path given to --resume/--finetune/"
                         "--prune_model_path")
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"cannot load checkpoint '{path}' as weights only (refusing to unpickle anything "
                         f"else): {first}") from None


def model_state(checkpoint):
    """The model weights of a checkpoint dict (or a bare state_dict), without `module.` prefixes."""
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise UsageError('checkpoint holds no state_dict: expected a dict with a "state_dict" entry')
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}


def released_state(model):
    """The model's state_dict with every key prefixed `module.`, as nn.DataParallel saved it."""
    return {'module.' + k: v for k, v in model.state_dict().items()}


def load_weights(model, state):
    """Strict load; a layout mismatch is a UsageError naming the first differences."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f'{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}' for k in own
             if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = [f'{label}: {", ".join(items[:3])}' for label, items in
                 (('missing', missing), ('unexpected', unexpected), ('shape (checkpoint vs model)', wrong)) if items]
        raise UsageError('checkpoint does not fit the model built from --op_code/--conv_config/--search/--arch ('
                         + '; '.join(parts) + f'){layout_hint(state)}')
    model.load_state_dict(state)


def layout_hint(state):
    """A suggestion of the op code that fits a state_dict, read off its convT keys."""
    keys = [k for k in state if '.convT.' in k]
    if any('.convT.norm.' in k for k in keys):
        return ': it is a dropout supernet (use an op code ending in _dropout with --search)'
    if any('.convT.op.' in k for k in keys):
        return ': it is a conv3d/conv2d/convp3d network'
    kinds = {tuple(v.shape[2:]) for k, v in state.items() if '.convT.convs.' in k and v.dim() == 5}
    names = [name for name, size in (('3D', (3, 3, 3)), ('2D', (1, 3, 3)), ('1D', (3, 1, 1))) if size in kinds]
    return f': its CAKES branches are {"/".join(names)}' if names else ''


def save_atomic(obj, path):
    """Write to a temporary file beside `path`, then rename: a crash never leaves a torn checkpoint."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + os.path.basename(path), suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def copy_atomic(src, dst):
    tmp = dst + '.tmp'
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
