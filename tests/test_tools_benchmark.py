"""scripts/benchmark_data.py: runs each path and ends with a JSON line."""
import json

import pytest
import torch

from conftest_data import load_script, run_script
from cakes.data.synthetic import make_synthetic_data
from cakes.cli import run_cli


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp('bench')
    make_synthetic_data(root, train=3, val=3, frames=9)
    return root


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """The benchmark runs on one thread; give the other tests their threads back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize('split, path', [('train', '--reference'), ('val', '--uint8'), ('val', None)])
def test_prints_clips_per_second_last(root, capsys, split, path):
    args = ['--root_path', str(root), '--split', split, '--num_segments', '4', '--input_size', '64', '--limit', '2']
    run_cli(load_script('benchmark_data').main, args + ([path] if path else []))
    lines = capsys.readouterr().out.splitlines()
    assert f'{split}, {"reference PIL" if path == "--reference" else "uint8" if path else "float"} path: 2 clips' \
        in lines[0]
    assert json.loads(lines[-1])['clips_per_s'] > 0


def test_cli_error(tmp_path):
    result = run_script('benchmark_data', '--root_path', tmp_path, '--split', 'val')
    assert result.returncode == 2
    assert result.stderr.startswith(f'error: missing category file {tmp_path}/something-something-v1/category.txt')
