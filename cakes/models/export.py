"""The network as an ONNX graph for inference runtimes, and an ONNX Runtime session to run it."""
import io

import torch

from cakes.files import write_atomic

from .inference import fold_batchnorm


def export_onnx(model, example, path):
    """`model` in eval mode with BN folded, as one self-contained ONNX file (weights inside): input `clips`
    (batch, T*3, S, S) with a dynamic batch size, output `logits`. torch.onnx's exporter (torch.export based).
    `example` needs a batch of at least 2 (torch.export specialises sizes 0 and 1)."""
    # dynamo=True: torch's default only from 2.9 on; before, export() without a file returns nothing
    program = torch.onnx.export(fold_batchnorm(model), (example,), input_names=['clips'], output_names=['logits'],
                                dynamic_shapes=({0: torch.export.Dim('batch')},), external_data=False,
                                dynamo=True, verbose=False)
    buffer = io.BytesIO()
    program.save(buffer)
    write_atomic(path, lambda f: f.write(buffer.getvalue()))


def onnx_session(path, threads=None):
    """An ONNX Runtime CPU session of the file, with torch's number of threads unless told otherwise."""
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    return onnxruntime.InferenceSession(path, options, providers=['CPUExecutionProvider'])
