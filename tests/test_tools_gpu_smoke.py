"""scripts/gpu_smoke.sh on the CPU (its parts, its installs from a wheel folder, its time limits, its torch
check), and what a GPU machine without internet may lack: tensorboardX, PyAV, a torch older than 2.9."""
import os
import subprocess
import sys
import zipfile

from conftest import TINY
from conftest_data import REPO

SMOKE = os.path.join(REPO, 'scripts', 'gpu_smoke.sh')


def smoke(*args, timeout=600, **env):
    return subprocess.run(['bash', SMOKE, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, 'PYTHON': sys.executable, 'OMP_NUM_THREADS': '1', **env})


def summary(stdout):
    lines = stdout.splitlines()
    return [line.split() for line in lines[lines.index('== summary (cpu)') + 1:]]


def test_its_parts_run_on_the_cpu():
    # gpu_check.py's every stage is its own test (test_tools_gpu_check.py): here its timing stage is enough.
    done = smoke('--device', 'cpu', timeout=1500, CAKES_SMOKE_CHECK_ARGS='--stages timing --repeats 1')
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    parts = summary(done.stdout)
    assert [(p[0], p[-1]) for p in parts] == [('gpu_check', 'ok'), ('benchmark_model', 'ok'), ('main.py', 'ok')]
    out = done.stdout
    assert out.count('all checks passed') == 2 and 'eval ms/clip' in out
    assert len([line for line in out.splitlines() if line.startswith('base_model.layer')]) == 16 * 2  # per op
    assert "main.py resume" in out and "the checkpoint's plans run, none chosen" in out
    assert '--main_amp bf16' in out
    assert any(line.startswith('main.py epoch') and ' bf16 ' in line and line.endswith('ok')
               for line in out.splitlines())


def test_a_part_past_its_time_limit_fails_and_the_next_ones_still_run():
    done = smoke('--device', 'cpu', CAKES_SMOKE_LIMITS='2 2 2')
    assert done.returncode == 1
    assert [(p[0], p[-2:]) for p in summary(done.stdout)] == [
        ('gpu_check', ['timed', 'out']), ('benchmark_model', ['timed', 'out']), ('main.py', ['timed', 'out'])]


def probe_wheel(folder):
    """A wheel of one module, cakes_probe_mod, distribution cakes-probe."""
    os.makedirs(folder, exist_ok=True)
    info = 'cakes_probe-1.0.dist-info'
    with zipfile.ZipFile(os.path.join(folder, 'cakes_probe-1.0-py3-none-any.whl'), 'w') as wheel:
        wheel.writestr('cakes_probe_mod.py', 'VALUE = 7\n')
        wheel.writestr(f'{info}/METADATA', 'Metadata-Version: 2.1\nName: cakes-probe\nVersion: 1.0\n')
        wheel.writestr(f'{info}/WHEEL', 'Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n'
                                        'Tag: py3-none-any\n')
        wheel.writestr(f'{info}/RECORD', f'cakes_probe_mod.py,,\n{info}/METADATA,,\n{info}/WHEEL,,\n{info}/RECORD,,\n')


def test_a_missing_package_is_installed_from_the_wheel_folder_without_internet(tmp_path):
    """Into a fresh environment (this test's own, without torch, which the script then asks for)."""
    subprocess.run([sys.executable, '-m', 'venv', str(tmp_path / 'env')], check=True, timeout=300)
    python = str(tmp_path / 'env' / 'bin' / 'python')
    probe_wheel(tmp_path / 'wheels')
    done = smoke(PYTHON=python, CAKES_WHEELS=str(tmp_path / 'wheels'),
                 CAKES_SMOKE_NEEDS='cakes_probe_mod:cakes-probe', PIP_CONFIG_FILE=os.devnull)
    assert done.stdout.startswith(f"== installing cakes-probe from {tmp_path / 'wheels'}/ (pip --no-index")
    assert subprocess.run([python, '-c', 'import cakes_probe_mod; assert cakes_probe_mod.VALUE == 7']).returncode == 0
    assert done.returncode == 2 and done.stderr.strip() == f'error: {python} has no torch: install torch >= 2.6'


def test_a_package_without_a_wheel_is_one_clear_error(tmp_path):
    done = smoke(CAKES_WHEELS=str(tmp_path), CAKES_SMOKE_NEEDS='cakes_no_such_module:cakes-no-such-package',
                 PIP_CONFIG_FILE=os.devnull)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f'error: cannot install cakes-no-such-package from {tmp_path}/: bring the wheels (docs/gpu_first_run.md) '
        'or name their folder in CAKES_WHEELS')


def test_a_torch_older_than_2_6_is_refused(tmp_path):
    (tmp_path / 'torch').mkdir()
    (tmp_path / 'torch' / '__init__.py').write_text("__version__ = '2.5.1+cu124'\n")
    done = smoke(CAKES_SMOKE_NEEDS='', PYTHONPATH=str(tmp_path))
    assert done.returncode == 2 and done.stdout == ''
    assert done.stderr.strip() == ('error: torch 2.5.1+cu124 is older than 2.6, the oldest cakes runs on: use a '
                                   'newer torch')


def test_without_a_gpu_it_says_so_unless_told_cpu():
    done = smoke(CAKES_SMOKE_NEEDS='', CUDA_VISIBLE_DEVICES='')
    assert done.returncode == 2 and done.stderr.strip().startswith('error: no GPU visible') and '--device cpu' in \
        done.stderr


# What an offline GPU machine may lack.

def main_without(modules, *args):
    """main.py in a process where importing each of `modules` fails, as where it is not installed."""
    code = ('import runpy, sys\n'
            f'for name in {list(modules)!r}:\n'
            '    sys.modules[name] = None\n'
            f'sys.argv = ["main.py"] + {list(map(str, args))!r}\n'
            'runpy.run_path("main.py", run_name="__main__")\n')
    return subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))


def test_main_trains_on_frames_without_pyav_or_tensorboardx_and_says_how_to_get_tensorboardx(data, tmp_path):
    done = main_without(['av', 'tensorboardX'], '--root_path', data, '--checkpoint_dir', tmp_path, *TINY,
                        '--epochs', '1', '--no_tensorboard')
    assert done.returncode == 0, done.stderr
    assert 'Testing Results: ' in done.stdout
    done = main_without(['tensorboardX'], '--root_path', data, '--checkpoint_dir', tmp_path / 'board', *TINY,
                        '--epochs', '1')
    assert done.returncode == 2 and done.stderr.count('\n') == 1
    assert done.stderr.startswith('error: TensorBoard events need tensorboardX: pip install tensorboardX')
    assert '--no_tensorboard' in done.stderr


def test_video_files_without_pyav_are_one_clear_error(tmp_path):
    from cakes.data.synthetic import make_synthetic_data
    make_synthetic_data(str(tmp_path / 'videos'), train=2, val=1, frames=8, layout='custom', videos=True)
    done = main_without(['av'], '--dataset', 'custom', '--root_path', tmp_path / 'videos', '--train_list',
                        'train.txt', '--val_list', 'val.txt', '--category', 'classes.txt', '--checkpoint_dir',
                        tmp_path / 'out', *TINY, '--epochs', '1', '--no_tensorboard')
    assert done.returncode == 2 and done.stderr.count('\n') == 1
    assert done.stderr.startswith('error: reading video files needs PyAV: pip install av')


def test_the_onnx_export_asks_for_the_exporter_torch_2_6_to_2_8_do_not_default_to(monkeypatch, tmp_path):
    """Before torch 2.9 torch.onnx.export(..., dynamo=False) was the default, and without a file it returns None."""
    import torch
    from cakes.models import TemporalModel
    from cakes.models.export import export_onnx

    class Program:
        def save(self, buffer):
            buffer.write(b'onnx')
    monkeypatch.setattr(torch.onnx, 'export', lambda *args, dynamo=False, **kwargs: Program() if dynamo else None)
    model = TemporalModel(5, 2, op_code='conv3d', dropout=0)
    export_onnx(model, torch.randn(2, 6, 32, 32), str(tmp_path / 'model.onnx'))
    assert (tmp_path / 'model.onnx').read_bytes() == b'onnx'
