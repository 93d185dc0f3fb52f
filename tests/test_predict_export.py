"""predict.py on frame folders and video files, its errors, and scripts/export_onnx.py against PyTorch; both
reconcile the model flags with a description as main.py does."""
import json
import os
import shutil

import av
import numpy as np
import pytest
import torch

import main
import predict
from conftest import run_main
from conftest_data import load_script
from cakes.cli import run_cli
from cakes.data import Views, normalize_uint8
from cakes.data.inputs import load_views
from cakes.data.lists import read_categories
from cakes.data.sources import decode_frame
from cakes.errors import UsageError
from cakes.models.checkpoint import released_state
from cakes.cli.model_flags import load_network
from cakes.cli.network import FLAGS
from cakes.models import create_model
from cakes.models.description import checkpoint_classes, describe
from cakes.models.factory import defaults

pytestmark = pytest.mark.usefixtures('single_thread')
SSV1 = 'something-something-v1'
FRAMES = os.path.join(SSV1, '20bn-something-something-v1')


@pytest.fixture(scope='module')
def checkpoints(data, tmp_path_factory):
    """The same tiny network (2 frames) saved with a description and without one (released)."""
    names = read_categories(os.path.join(data, SSV1, 'category.txt'))
    description = describe('conv3d', False, None, 'resnet50', 2, 0.3, names)
    torch.manual_seed(0)
    model = create_model(**description)
    torch.nn.init.normal_(model.new_fc.weight, 0, 0.1)  # classes well apart
    folder = tmp_path_factory.mktemp('ckpt')
    state = {'epoch': 1, 'state_dict': released_state(model), 'best_prec1': 0.0}
    torch.save(dict(state, description=description), folder / 'described.pth.tar')
    torch.save(state, folder / 'released.pth.tar')
    yield str(folder / 'described.pth.tar'), str(folder / 'released.pth.tar')
    shutil.rmtree(folder)


def predict_main(capsys, *argv):
    status = run_cli(predict.main, ['--input_size', '48', *map(str, argv)])
    out, err = capsys.readouterr()
    return status, out, err


def val_folder(data, index=0):
    folder = open(os.path.join(data, SSV1, 'val_videofolder.txt')).read().split()[3 * index]
    return os.path.join(data, FRAMES, folder)


def encode_video(folder, path, codec):
    """The folder's JPEG frames as a video file, encoded with PyAV."""
    frames = [decode_frame(os.path.join(folder, name)) for name in sorted(os.listdir(folder))]
    with av.open(str(path), 'w') as container:
        stream = container.add_stream(codec, rate=12)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[2], frames[0].shape[1], 'yuv420p'
        for frame in frames:
            image = av.VideoFrame.from_ndarray(frame.permute(1, 2, 0).numpy(), format='rgb24')
            container.mux(stream.encode(image))
        container.mux(stream.encode())
    return len(frames)


def test_frame_folder_prediction_is_the_evaluation_score(data, checkpoints, tmp_path, capsys):
    described, _ = checkpoints
    run_main(data, tmp_path, '--evaluate', '--resume', described, '--test_crops', '3', '--twice_sample',
             '--save_scores', str(tmp_path / 'scores.npz'))
    capsys.readouterr()
    saved = np.load(tmp_path / 'scores.npz', allow_pickle=False)
    folder = val_folder(data)
    six_digits = tmp_path / 'six'  # the somethingv2 naming, 000001.jpg
    six_digits.mkdir()
    for name in os.listdir(folder):
        shutil.copy(os.path.join(folder, name), six_digits / f'{int(name[:-4]):06d}.jpg')
    status, out, err = predict_main(capsys, '--resume', described, '--json', '--test_crops', '3', '--twice_sample',
                                    folder, six_digits)
    assert status == 0 and err == ''
    first, second = (json.loads(line) for line in out.splitlines())
    assert first['path'] == folder and first['views'] == 6
    assert first['top5'] == second['top5']
    expected = torch.from_numpy(saved['scores'][list(saved['ids']).index(os.path.basename(folder))]).softmax(-1)
    top = expected.topk(5)
    assert [entry['label'] for entry in first['top5']] == top.indices.tolist()
    assert [entry['probability'] for entry in first['top5']] == pytest.approx(top.values.tolist(), abs=1e-5)
    assert first['top5'][0]['class'] == saved['class_names'][top.indices[0]]


def test_probabilities_are_softmax_of_the_mean_logits_or_with_the_flag_the_mean_of_the_views(data, checkpoints,
                                                                                              capsys):
    folder = val_folder(data)
    plain = predict_main(capsys, '--resume', checkpoints[0], '--json', '--test_crops', '3', folder)
    model, _, _ = load_network(predict.build_parser().parse_args(['--resume', checkpoints[0], folder]))
    views = load_views(folder, Views(3), 2, 48)
    with torch.no_grad():
        logits = model(normalize_uint8(views))
    expected = logits.mean(0).softmax(-1).topk(5)  # TSM's --softmax: what predict.py always shows
    top5 = json.loads(plain[1])['top5']
    assert [entry['label'] for entry in top5] == expected.indices.tolist()
    assert [entry['probability'] for entry in top5] == pytest.approx(expected.values.tolist(), abs=1e-5)
    # so predict.py has no --softmax
    with pytest.raises(SystemExit) as exit_info:
        predict_main(capsys, '--resume', checkpoints[0], '--softmax', folder)
    assert exit_info.value.code == 2 and 'unrecognized arguments: --softmax' in capsys.readouterr().err
    status, out, _ = predict_main(capsys, '--resume', checkpoints[0], '--json', '--test_crops', '3',
                                  '--average_probabilities', folder)
    expected = logits.softmax(-1).mean(0).topk(5)
    top5 = json.loads(out)['top5']
    assert status == 0 and top5 != json.loads(plain[1])['top5']
    assert [entry['label'] for entry in top5] == expected.indices.tolist()
    assert [entry['probability'] for entry in top5] == pytest.approx(expected.values.tolist(), abs=1e-5)


@pytest.mark.parametrize('codec', ['libvpx-vp9', 'mpeg4'])
def test_video_file_prediction(data, checkpoints, tmp_path, capsys, codec):
    video = tmp_path / ('clip.webm' if codec == 'libvpx-vp9' else 'clip.mp4')
    encode_video(val_folder(data), video, codec)
    status, out, err = predict_main(capsys, '--resume', checkpoints[0], video)
    assert status == 0 and err == ''
    lines = out.splitlines()
    assert lines[0] == str(video) and len(lines) == 6
    probabilities = [float(line.split('%')[0]) for line in lines[1:]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 100.01
    names = read_categories(os.path.join(data, SSV1, 'category.txt'))
    assert all(line.split('%  ', 1)[1] in names for line in lines[1:])


def test_unreadable_inputs_are_named_and_the_others_still_predicted(data, checkpoints, tmp_path, capsys):
    empty, broken = tmp_path / 'empty', tmp_path / 'broken.webm'
    empty.mkdir()
    broken.write_bytes(b'not a video')
    good = val_folder(data, 1)
    status, out, err = predict_main(capsys, '--resume', checkpoints[0], tmp_path / 'missing', empty, good, broken)
    assert status == 1
    assert out.splitlines()[0] == good and len(out.splitlines()) == 6
    errors = err.splitlines()
    assert len(errors) == 3
    assert str(tmp_path / 'missing') in errors[0] and 'no such file or folder' in errors[0]
    assert str(empty) in errors[1] and 'empty folder' in errors[1]
    assert str(broken) in errors[2]


def test_released_checkpoint_takes_the_model_flags_and_category(data, checkpoints, capsys):
    described, released = checkpoints
    with pytest.raises(SystemExit) as exit_info:
        predict_main(capsys, '--resume', released, val_folder(data))
    assert exit_info.value.code == 2
    assert 'give --category' in capsys.readouterr().err
    category = os.path.join(data, SSV1, 'category.txt')
    from_flags = predict_main(capsys, '--resume', released, '--num_segments', '2', '--category', category,
                              val_folder(data))
    assert from_flags == predict_main(capsys, '--resume', described, val_folder(data))


def test_released_checkpoints_take_the_number_of_classes_from_their_classifier(data, checkpoints, tmp_path,
                                                                                capsys):
    _, released = checkpoints
    # export_onnx prints no class names: no --category
    out = tmp_path / 'released.onnx'
    assert run_cli(load_script('export_onnx').main, ['--resume', released, '--num_segments', '2', '--input_size',
                                                     '32', str(out)]) == 0
    assert 'output logits (batch, 174))' in capsys.readouterr().out and out.is_file()
    # predict.py prints them: a category.txt of another length is one line
    three = tmp_path / 'three.txt'
    three.write_text('a\nb\nc\n')
    with pytest.raises(SystemExit) as exit_info:
        predict_main(capsys, '--resume', released, '--num_segments', '2', '--category', three, val_folder(data))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count('\n') == 1
    assert f"holds a network for 174 classes but --category {three} lists 3" in err


@pytest.mark.parametrize('prefix', ['', 'module.'])
@pytest.mark.parametrize('key', ['new_fc.weight', 'base_model.fc.weight'])
def test_checkpoint_classes_reads_either_classifier_with_or_without_module(prefix, key):
    assert checkpoint_classes({prefix + key: torch.zeros(7, 16), prefix + 'x': torch.zeros(3)}, 'c') == 7
    with pytest.raises(UsageError, match="'c' has no classifier weights"):
        checkpoint_classes({prefix + 'base_model.conv1.weight': torch.zeros(3)}, 'c')
    with pytest.raises(UsageError, match=r"'c' holds another kind of network: its keys \(x, \.\.\.\)"):
        checkpoint_classes({prefix + 'x': torch.zeros(3)}, 'c')


def test_onnx_export_equals_pytorch_with_any_batch(checkpoints, tmp_path, capsys):
    import onnxruntime
    export = load_script('export_onnx')
    out = tmp_path / 'model.onnx'
    assert run_cli(export.main, ['--resume', checkpoints[0], '--input_size', '32', str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f'exported {out} (') and 'largest difference' in printed
    relative = float(printed.split('(')[-1].split()[0])
    assert relative <= export.TOLERANCE
    session = onnxruntime.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    clips = torch.randn(3, 6, 32, 32)
    model = create_model(**torch.load(checkpoints[0], weights_only=True)['description'])
    model.load_state_dict({k[len('module.'):]: v for k, v in torch.load(checkpoints[0])['state_dict'].items()})
    with torch.no_grad():
        expected = model.eval()(clips).numpy()
    got = session.run(['logits'], {'clips': clips.numpy()})[0]
    assert got.shape == (3, 174) and np.abs(got - expected).max() <= 1e-3 * np.abs(expected).max()


def test_onnx_export_fails_when_the_graph_differs(checkpoints, tmp_path, capsys, monkeypatch):
    """A graph that computes something else (here: another network's) is caught by the check, exit 1."""
    export = load_script('export_onnx')
    real_export = export.export_onnx

    def other_network(model, example, path):
        torch.nn.init.normal_(model.new_fc.weight, 0, 0.1)  # the check then compares against other weights
        real_export(model, example, path)
        torch.nn.init.normal_(model.new_fc.weight, 0, 0.1)

    monkeypatch.setattr(export, 'export_onnx', other_network)
    assert run_cli(export.main, ['--resume', checkpoints[0], '--input_size', '32', str(tmp_path / 'm.onnx')]) == 1
    assert 'error: ONNX Runtime differs from PyTorch' in capsys.readouterr().err


def test_dropout_supernets_are_refused_with_what_to_do(tmp_path, capsys):
    description = describe('conv1_2_3d_dropout', True, None, 'resnet50', 2, 0.3, ['a', 'b'])
    path = tmp_path / 'supernet.pth.tar'
    torch.save({'state_dict': create_model(**description).state_dict(), 'description': description}, path)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(load_script('export_onnx').main, ['--resume', str(path), str(tmp_path / 'm.onnx')])
    assert exit_info.value.code == 2
    assert 'dropout supernet' in capsys.readouterr().err and not (tmp_path / 'm.onnx').exists()


def run_tool(tool, data, checkpoint, tmp_path, *flags):
    """predict.py on a frame folder or scripts/export_onnx.py, tiny: its exit status."""
    run, last = ((predict.main, val_folder(data)) if tool == 'predict' else
                  (load_script('export_onnx').main, str(tmp_path / 'm.onnx')))
    try:
        return run_cli(run, ['--input_size', '32', '--resume', checkpoint, *flags, last])
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize('tool', ['predict', 'export'])
@pytest.mark.parametrize('flags, message', [
    (['--num_segments', '16', '--op_code', 'conv3d'],
     '--num_segments 16 disagrees with the checkpoint (num_segments 2)'),
    (['--op_code', 'convst'], '--op_code convst disagrees with the checkpoint (op_code conv3d)'),
    (['--search'], '--search disagrees with the checkpoint (search False)'),
])
def test_model_flags_that_disagree_with_the_description_are_refused(data, checkpoints, tmp_path, capsys, tool, flags,
                                                                     message):
    assert run_tool(tool, data, checkpoints[0], tmp_path, *flags) == 2
    out, err = capsys.readouterr()
    assert out == '' and err == f'error: {message}: drop the flag or use another checkpoint\n'
    assert not (tmp_path / 'm.onnx').exists()


@pytest.mark.parametrize('tool', ['predict', 'export'])
def test_model_flags_that_agree_with_the_description_are_accepted(data, checkpoints, tmp_path, capsys, tool):
    assert run_tool(tool, data, checkpoints[0], tmp_path) == 0
    alone = capsys.readouterr().out
    agreeing = ['--num_segments', '2', '--op_code', 'conv3d', '--arch', 'resnet50', '--conv_config', '']
    assert run_tool(tool, data, checkpoints[0], tmp_path, *agreeing) == 0
    assert capsys.readouterr().out == alone != ''


def test_released_checkpoints_take_the_defaults_of_main():
    """Without a description the tools fill the flags left out with create_model's defaults: main.py's."""
    parser = main.build_parser()
    released = {flag: parser.get_default(flag) for flag in FLAGS + ('dropout',)}
    released['conv_config'] = released['conv_config'] or None  # the flag's '' is no config
    assert {flag: defaults()[flag] for flag in released} == released
