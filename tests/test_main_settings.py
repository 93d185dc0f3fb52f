"""main.py's settings, built once: the flags given found with a default no command line gives, the combinations
checked once, one frozen object with a field per flag, and the lines that say what building it decided."""
import dataclasses

import pytest

import main
from cakes.cli.settings import parse_flags
from cakes.files import save_atomic
from cakes.models import describe
from cakes.settings import Settings


def test_the_flags_given_are_those_on_the_command_line():
    flags, given = parse_flags(main.build_parser, ['--checkpoint_dir', 'x', '-j', '16', '--search', '--lr', '0.02',
                                                   '--amp'])
    # -j 16 is its default, and still given: a value the user chose
    assert given == {'checkpoint_dir', 'workers', 'search', 'lr', 'amp'}
    assert (flags.workers, flags.search, flags.lr, flags.amp, flags.epochs) == (16, True, 0.02, 'bf16', 70)
    assert parse_flags(main.build_parser, ['--checkpoint_dir', 'x'])[1] == {'checkpoint_dir'}


def test_settings_have_a_field_per_flag_and_are_frozen():
    flags = main.build_parser().parse_args(['--checkpoint_dir', 'x'])
    assert Settings.fields() == list(vars(flags))  # the parser's order: a checkpoint's 'args' keeps it
    settings, _, _ = main.parse_settings(['--checkpoint_dir', 'x'])
    assert vars(settings).keys() == vars(flags).keys()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.lr = 0.02


def test_the_combinations_are_checked_once(monkeypatch):
    calls = []
    check = main.check_combinations
    monkeypatch.setattr(main, 'check_combinations', lambda flags: calls.append(check(flags)))
    main.parse_settings(['--checkpoint_dir', 'x'])
    assert len(calls) == 1


def test_auto_resume_takes_the_runs_own_checkpoint(tmp_path):
    argv = ['--checkpoint_dir', str(tmp_path), '--num_segments', '2', '--auto_resume']
    settings, _, source = main.parse_settings(argv)
    path = tmp_path / 'checkpoint' / 'I3D_somethingv1_resnet50_segment2__checkpoint.pth.tar'
    assert settings.resume == '' and source.notes[0] == f"=> --auto_resume: no checkpoint '{path}' yet, starting fresh"
    path.parent.mkdir()
    path.write_bytes(b'')  # only its name is read here
    supernet = str(tmp_path / 'supernet.pth.tar')
    save_atomic({'description': describe('conv1_2d', True, None, 'resnet50', 2, 0.3, None, num_class=174)}, supernet)
    settings, _, source = main.parse_settings(argv + ['--finetune', supernet, '--conv_config', 'CAKES12D_P'])
    assert (settings.resume, settings.finetune) == (str(path), '')
    assert source.notes[0] == (f"=> --auto_resume: '{path}' continues a run that --finetune started; not initialising "
                               'again')
