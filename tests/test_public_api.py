"""The public API, run as a user runs it: the README's example, from a directory outside the repository, with
the installed package (`pip install -e .`), not the repository on sys.path."""
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_example():
    """The first python block of the README's 'Use it in your own code' section."""
    text = open(os.path.join(REPO, 'README.md')).read()
    section = text.split('## Use it in your own code', 1)[1]
    return re.search(r'```python\n(.*?)```', section, re.S).group(1)


def installed_package(cwd, env):
    """The directory of the `cakes` that a user's python imports outside the repository, or None."""
    result = subprocess.run([sys.executable, '-c', 'import cakes, os; print(os.path.dirname(cakes.__file__))'],
                            cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    return result.stdout.strip() if result.returncode == 0 else None


def test_readme_example_runs_from_outside_the_repository(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    installed = installed_package(tmp_path, env)
    if installed is None:
        pytest.skip('cakes is not installed: run `pip install -e .` in the repository to test the README example '
                    'as a user runs it')
    if os.path.realpath(installed) != os.path.realpath(os.path.join(REPO, 'cakes')):
        pytest.skip(f'the installed cakes is {installed}, not this checkout: `pip install -e .` here to test it')
    code = readme_example()
    # Every print of the example states its output in a trailing comment.
    expected = [line.rsplit('  # ', 1)[1] for line in code.splitlines() if line.startswith('print(')]
    script = tmp_path / 'example.py'
    script.write_text(code)
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == expected
