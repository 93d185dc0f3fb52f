"""The settings of a run of main.py: one frozen object, built once from the flags (main.parse_settings: the network
flags left out taken from the checkpoint the run starts from, the combinations checked, --auto_resume and -j
decided), then only read by the engine. What a run changes as it goes (the epoch it is at, the best accuracy, the
RNG states) is run state, returned by the functions that restore or advance it, never written here.

The fields are main.py's flags under their argparse names; the defaults and the help are main.py's parser's.
A checkpoint keeps them as its 'args' dict (vars(settings)), which a resumed run compares with its own.
For a variant of settings, `dataclasses.replace(settings, lr=0.02)`.
"""
from __future__ import annotations  # `int | None` on Python 3.9

import dataclasses


@dataclasses.dataclass(frozen=True)
class Settings:
    # The released flags (those of the network are create_model's arguments of the same names).
    dataset: str
    root_path: str
    split: int | None
    train_list: str
    val_list: str
    category: str
    image_tmpl: str
    store_name: str
    type: str
    arch: str
    num_segments: int
    alpha: int
    beta: int
    epochs: int
    batch_size: int
    lr: float
    lr_steps: list
    dropout: float
    warm: float
    momentum: float
    weight_decay: float
    clip_gradient: float
    print_freq: int
    eval_freq: int
    workers: int  # at most the CPUs this process may use
    resume: str  # with --auto_resume: the run's own checkpoint when it exists
    evaluate: bool
    start_epoch: int
    checkpoint_dir: str
    op_code: str
    sparsity_regularization: bool
    s: float
    conv_config: str | list  # a name or a file as given, or the widths of the checkpoint's description
    search: bool
    prune: bool
    prune_model_path: str
    reweight: bool | str  # True: the released 27 : 9 : 3; 'latency': shares of the measured time
    finetune: str
    # Additions to the released command line.
    input_size: int
    pretrained: str
    seed: int | None
    overwrite: bool
    auto_resume: bool
    amp: str | None
    channels_last: bool
    no_channels_last: bool
    sync_bn: bool
    no_tensorboard: bool
    target_gflops: float | None
    width_multiple: int
    target_ms: float | None
    target_speedup: float | None
    latency_batch: int
    latency_mode: str
    latency_table: str
    stop_when_stable: float | None  # EPS of the stop rule (cakes.ops.settling); None: the released schedule
    stable_for: int
    # How --evaluate tests (cakes.data.views).
    test_crops: int
    full_res: bool
    twice_sample: bool
    dense_sample: bool
    softmax: bool
    average_probabilities: bool
    save_scores: str
    confusion: str

    @classmethod
    def fields(cls):
        return [field.name for field in dataclasses.fields(cls)]
