"""cakes/runtime.py: the process settings main.py applies before torch loads."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Page faults per step of a loop that allocates and frees tensors of 16, 32 and 64 MiB, in a fresh interpreter,
# after warm-up steps: with glibc's default heap every tensor is mapped fresh (28,672 faults of 4 KiB a step);
# with the heap kept, each step reuses the memory of the one before.
FAULTS = """
import os, resource, sys
sys.path.insert(0, {root!r})
from cakes.runtime import tune_process
applied = {tune} and tune_process()
import torch
def step():
    for mib in (16, 32, 64):
        torch.ones(mib << 18)
for _ in range(4):  # the heap grows to the loop's peak
    step()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
before = faults()
for _ in range(3):
    step()
print(applied, os.environ.get('GOMP_SPINCOUNT', '-'), (faults() - before) // 3)
"""


def run_probe(tune, env=None):
    code = FAULTS.format(root=ROOT, tune=tune)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(('MALLOC_', 'OMP_WAIT', 'GOMP_'))}
    environ.update(env or {})
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=environ, check=True)
    applied, spin, faults = out.stdout.split()
    return applied, spin, int(faults)


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc heap settings')
def test_kept_heap_reuses_memory_instead_of_faulting_it_in_again():
    assert run_probe(tune=False)[2] > 20000
    applied, spin, faults = run_probe(tune=True)
    assert (applied, spin) == ('True', '10000')
    assert faults < 1000


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc heap settings')
def test_settings_made_by_the_user_are_left_alone():
    applied, spin, faults = run_probe(tune=True, env={'MALLOC_MMAP_MAX_': '65536', 'OMP_WAIT_POLICY': 'ACTIVE'})
    assert (applied, spin) == ('False', '-')
    assert faults > 20000


# A script imported in a fresh interpreter, with tune_process wrapped to note whether torch was loaded by then.
IMPORT_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
import cakes.runtime
tune = cakes.runtime.tune_process
calls = []
cakes.runtime.tune_process = lambda: calls.append('torch' in sys.modules) or tune()
import {script}
print(calls, 'torch' in sys.modules)
"""


@pytest.mark.parametrize('script', ['main', 'predict'])
def test_the_scripts_apply_them_before_torch_loads(script):
    code = IMPORT_SCRIPT.format(root=ROOT, script=script)
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ['[False]', 'True']  # called once, torch not yet loaded; loaded afterwards


# Resident MiB of a fresh interpreter with the heap kept: after 320 MiB of tensors are freed, then after
# release_heap (what VideoNetwork.measure calls before starting the processes that time networks).
RELEASE = """
import sys
sys.path.insert(0, {root!r})
from cakes.runtime import keep_heap, release_heap
assert keep_heap()
import torch
def resident():
    return int(open('/proc/self/statm').read().split()[1]) * 4096 >> 20
tensors = [torch.ones(16 << 18) for _ in range(20)]
del tensors
freed = resident()
print(release_heap(), freed, resident())
"""


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc heap settings')
def test_released_heap_gives_the_freed_memory_back():
    environ = {k: v for k, v in os.environ.items() if not k.startswith('MALLOC_')}
    out = subprocess.run([sys.executable, '-c', RELEASE.format(root=ROOT)], capture_output=True, text=True,
                         env=environ, check=True)
    released, freed, after = out.stdout.split()
    assert released == 'True'
    assert int(freed) - int(after) > 250
