"""The public API, run as a user runs it: the README's example, from a directory outside the repository, with
the installed package (`pip install -e .`), not the repository on sys.path."""
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_example():
    """The first python block of the README's 'Use it in your own code' section."""
    text = open(os.path.join(REPO, 'README.md')).read()
    section = text.split('## Use it in your own code', 1)[1]
    return re.search(r'```python\n(.*?)```', section, re.S).group(1)


def test_readme_example_runs_from_outside_the_repository(tmp_path):
    code = readme_example()
    # Every print of the example states its output in a trailing comment.
    expected = [line.rsplit('  # ', 1)[1] for line in code.splitlines() if line.startswith('print(')]
    script = tmp_path / 'example.py'
    script.write_text(code)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == expected
