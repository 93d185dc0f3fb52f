"""Paths that only GPUs take, run on the CPU: the autocast dtype in DataParallel's replica threads, host
synchronisations per training step, worker random streams per rank (issue 20)."""
import threading

import pytest
import torch

import config
from cakes.models import TemporalModel

pytestmark = pytest.mark.usefixtures('single_thread')


def small_model(**kwargs):
    torch.manual_seed(0)
    return TemporalModel(174, 2, op_code='conv1_2_3d', conv_config=config.conv_configs['CAKES123D_P'], dropout=0,
                         **kwargs)


def conv_dtypes(model):
    """The dtypes the model's convolutions produce, appended as they run (from any thread)."""
    seen = []
    for module in model.modules():
        if isinstance(module, torch.nn.Conv3d):
            module.register_forward_hook(lambda m, inputs, output: seen.append(output.dtype))
    return seen


def test_the_run_s_amp_dtype_holds_in_a_dataparallel_replica_thread():
    # torch's parallel_apply runs each replica in a fresh thread under torch.amp.autocast(device, enabled=...)
    # without a dtype: the thread's default, float16 on CUDA. Entered here as that thread would.
    model = small_model().eval().use_autocast(torch.bfloat16)
    seen = conv_dtypes(model)
    outputs = []

    def replica():
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.float16):
            outputs.append(model(torch.randn(1, 6, 32, 32)))

    thread = threading.Thread(target=replica)
    thread.start()
    thread.join()
    assert outputs[0].dtype == torch.bfloat16
    assert seen and set(seen) == {torch.bfloat16}
