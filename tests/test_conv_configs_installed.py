"""The six released configs ship inside the package: `--conv_config KEY` resolves in a plain (not editable)
install from any directory, and the clone's config.py (read by main.py and the scripts, never found by the library)
adds keys or overrides released ones."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from cakes import conv_config
from cakes.configs import RELEASED

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(ROOT, 'tests', 'data', 'conv_configs.json')
# What a clean clone holds that the install reads: the package and its build description.
CLONE_FILES = ('cakes', 'pyproject.toml', 'README.md', 'config.py')


def test_the_package_holds_the_six_released_configs():
    with open(REFERENCE) as f:
        assert RELEASED == json.load(f)


@pytest.fixture
def clone(tmp_path):
    """A clone at tmp_path/clone whose config.py the test writes."""
    root = tmp_path / 'clone'
    root.mkdir()
    return root


def test_config_py_adds_keys_and_overrides_released_ones(clone):
    mine = [{'kxkxk': 64}] * 3
    (clone / 'config.py').write_text(f"conv_configs = {{'MINE': {mine!r}, 'CAKES12D_P': {mine!r}}}\n")
    user = conv_config.read_user_configs(str(clone / 'config.py'))
    configs = conv_config.conv_configs(user)
    assert configs['MINE'] == mine and configs['CAKES12D_P'] == mine
    assert conv_config.resolve_conv_config('CAKES123D_P', user) == RELEASED['CAKES123D_P']
    assert conv_config.resolve_conv_config('MINE', user) == mine
    assert list(configs)[:6] == list(RELEASED)


def test_without_config_py_the_released_configs_remain(clone):
    user = conv_config.read_user_configs(str(clone / 'config.py'))
    assert user == {} and conv_config.conv_configs(user) == RELEASED
    with pytest.raises(conv_config.UsageError, match="unknown --conv_config 'NOPE': use one of CAKES12D_P, "):
        conv_config.resolve_conv_config('NOPE', user)


def test_a_config_py_without_conv_configs_is_one_line(clone):
    (clone / 'config.py').write_text('configs = {}\n')
    with pytest.raises(conv_config.UsageError, match='must define conv_configs as a dict'):
        conv_config.read_user_configs(str(clone / 'config.py'))


def test_main_reads_the_config_py_beside_it(clone, monkeypatch):
    """main.py passes the conv_configs of its own config.py in: a name there is a --conv_config."""
    import main
    mine = [dict(RELEASED['CAKES23D_P'][i]) for i in range(16)]
    mine[0] = {'kxkxk': 60, '1xkxk': 4}
    (clone / 'config.py').write_text(f"conv_configs = {{'MINE': {mine!r}}}\n")
    monkeypatch.setattr(main, 'CONFIG_FILE', str(clone / 'config.py'))
    _, widths, _ = main.parse_settings(['--checkpoint_dir', 'x', '--op_code', 'convst', '--conv_config', 'MINE'])
    assert widths == mine


def test_plain_install_resolves_released_keys_from_any_directory(tmp_path):
    """pip install (no -e) of a clean copy of the clone into a folder; then, from another directory and with only
    that folder on the path, the released key resolves. A config.py beside the installed package (another
    project's module in site-packages) is not read: it is no clone."""
    source = tmp_path / 'source'
    source.mkdir()
    for name in CLONE_FILES:
        copy = shutil.copytree if os.path.isdir(os.path.join(ROOT, name)) else shutil.copy
        copy(os.path.join(ROOT, name), source / name,
             **({'ignore': shutil.ignore_patterns('__pycache__')} if copy is shutil.copytree else {}))
    target = tmp_path / 'site'
    subprocess.run([sys.executable, '-m', 'pip', 'install', '--quiet', '--no-deps', '--no-build-isolation',
                    '--disable-pip-version-check', '--no-compile', '--target', str(target), str(source)],
                   check=True, cwd=tmp_path, capture_output=True)
    assert not (target / 'cakes' / '__init__.py').is_symlink() and (target / 'cakes' / 'configs.py').is_file()
    (target / 'config.py').write_text("conv_configs = {'CAKES123D_P': []}\n")
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    probe = ('import json, cakes; from cakes.conv_config import resolve_conv_config; '
             "print(json.dumps([cakes.__file__, resolve_conv_config('CAKES123D_P')]))")
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run([sys.executable, '-c', probe], check=True, cwd=elsewhere, env=env, capture_output=True,
                         text=True).stdout
    where, config = json.loads(out)
    assert where == str(target / 'cakes' / '__init__.py')  # the installed copy, not the clone
    assert config == RELEASED['CAKES123D_P']
