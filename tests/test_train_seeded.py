"""--seed makes a fresh run repeat bit for bit on the CPU: no execution plan is chosen on the machine's clock."""
import pytest
import torch

from conftest import RUN, run_main
from cakes.ops import plans
from cakes.ops.plans import choice

pytestmark = pytest.mark.usefixtures('single_thread')


def tensors(value, prefix=''):
    """{path: tensor} of every tensor in a nested dict/list (a state_dict, an optimizer state)."""
    if torch.is_tensor(value):
        return {prefix: value}
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    return {path: t for k, v in items for path, t in tensors(v, f'{prefix}/{k}').items()}


def test_two_fresh_seeded_runs_end_with_the_same_checkpoint(data, tmp_path, monkeypatch):
    """The clock is made to favour another plan in each run (as two runs' timings may): with --seed the
    checkpoints are still equal, every tensor of the state_dict and of the optimizer state."""
    monkeypatch.delenv(plans.ENV, raising=False)
    saved = []
    for favourite in (plans.STACKED, plans.parse('merge(0+1+2)')):
        monkeypatch.setattr(choice, 'measure', lambda op, x, names, draws, f=favourite: {
            n: [1.0 if n == f else 2.0] * len(draws) for n in names})
        out = tmp_path / str(favourite)
        run_main(data, out, '--op_code', 'conv1_2_3d', '--conv_config', 'CAKES123D_P', '--seed', '3',
                 '--epochs', '1')
        saved.append(torch.load(out / 'checkpoint' / f'{RUN}_checkpoint.pth.tar', weights_only=True))
    a, b = ({**tensors(s['state_dict'], 'state_dict'), **tensors(s['optimizer'], 'optimizer')} for s in saved)
    assert len(a) > 300 and a.keys() == b.keys()
    assert [path for path in a if not torch.equal(a[path], b[path])] == []
    assert saved[0]['plans'] == saved[1]['plans'] == {}  # the branch form, nothing chosen
