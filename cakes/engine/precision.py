"""--amp: autocast in bf16 (CPU and recent GPUs) or fp16 with a gradient scaler (GPUs without bf16); the memory
format the model runs in (--channels_last, --no_channels_last)."""
import contextlib

import torch

AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}


def amp_dtype(amp):
    """The dtype of --amp, or None without it (TemporalModel.use_autocast)."""
    return AMP_DTYPES[amp] if amp else None


def autocast(device, amp):
    """The forward passes' context: lower precision for convolutions and matmuls, float32 for the rest
    (nothing without --amp)."""
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp]) if amp else contextlib.nullcontext()


def grad_scaler(device, amp):
    """fp16 gradients underflow without loss scaling; disabled (a pass-through) otherwise, so the loop has
    one path. Its state goes into the checkpoint for an exact resume."""
    return torch.amp.GradScaler(device.type, enabled=amp == 'fp16')


def channels_last(args):
    """--channels_last or --no_channels_last; else on on a CPU, for training and --evaluate alike (faster on
    every CPU measured; --evaluate prints the same Prec@1/Prec@5 and a loss within float rounding), off on
    GPUs (not measured there)."""
    if args.channels_last or args.no_channels_last:
        return args.channels_last
    return not torch.cuda.is_available()
