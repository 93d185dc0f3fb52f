"""A training or evaluation run of main.py: the network built and placed on the devices, resumed or initialised,
then trained epoch by epoch (saving, validating, stopping on a signal) or evaluated once."""
import dataclasses
import os

import torch
from torch import nn

from cakes import data
from cakes import ops
from cakes.errors import UsageError
from cakes.models import create_model, describe
from cakes.models.checkpoint import load_checkpoint, model_state
from cakes.models.description import check_classes as check_class_count, checkpoint_classes
from cakes.models.finetune import init_from_supernet

from . import distributed
from .board import Board
from .checkpoint import Progress, check_overwrite, keep_copies, resume, run_name, save
from .class_report import finish_evaluation
from .distributed import unwrap
from .latency import search_costs, weights_text
from .loaders import make_loader
from .log import RunLog
from .loop import Run, log_search, log_search_picture, train_epoch, validate
from .precision import amp_dtype, channels_last, grad_scaler
from .preempt import StopRequest
from .resume import restore_process_rng, seed_process
from .settling import SearchSettling
from .schedule import make_optimizer
from .views import ViewScorer, evaluation_views


@dataclasses.dataclass
class Source:
    """The checkpoint that --resume, --prune_model_path (with --prune) or --finetune names, loaded once, its
    description (None: a released checkpoint) and the network flags filled from it; and the lines that say what
    building the settings decided for this run (--auto_resume's checkpoint, -j), for the run's log."""
    path: str = ''
    checkpoint: dict = None
    description: dict = None
    filled: set = frozenset()
    notes: tuple = ()

    def take(self, path):
        """The checkpoint at `path`: the one loaded here, handed over once (it may be large), else loaded."""
        if path == self.path and self.checkpoint is not None:
            checkpoint, self.checkpoint = self.checkpoint, None
            return checkpoint
        return load_checkpoint(path)


def check_batch(batch_size, gpus):
    """nn.DataParallel splits every batch across the visible GPUs: each needs at least one sample."""
    if batch_size < 1:
        raise UsageError(f'-b {batch_size}: the batch size must be at least 1')
    if batch_size < gpus:
        raise UsageError(f'-b {batch_size} is smaller than the {gpus} visible GPUs (each needs a sample of the '
                         f'batch): raise -b to at least {gpus} or make fewer GPUs visible with CUDA_VISIBLE_DEVICES')


def idle_gpus_note(batch_size, gpus):
    """nn.DataParallel cuts a batch like torch.chunk: shares of ceil(b / gpus) clips, so fewer shares than GPUs
    when b is not a multiple (-b 20 on 8 GPUs: 7 shares of 3 and 2, GPU 7 idle). None when every GPU works."""
    share = -(-batch_size // gpus) if gpus else 0
    shares = -(-batch_size // share) if share else 0
    if shares >= gpus:
        return None
    return (f'=> -b {batch_size} over {gpus} GPUs: nn.DataParallel cuts it into {shares} shares of at most {share} '
            f'clips, so {gpus - shares} GPU(s) stay idle; a multiple of {gpus} uses them all')


def layout(description):
    """{key: shape} of the described network's state_dict, built on the meta device (no memory, no computing)."""
    with torch.device('meta'):
        return {k: tuple(v.shape) for k, v in create_model(**description).state_dict().items()}


def pretrained_source(args):
    """ImageNet weights only when training from scratch: resume, evaluate and finetune bring their own."""
    if args.resume or args.evaluate or args.finetune or args.pretrained.lower() == 'none':
        return None
    return args.pretrained


def check_classes(source, class_names, args):
    """The network the run starts from (described, or a released checkpoint's classifier) was trained on as many
    classes as the dataset's class names (data.class_source says where they are read)."""
    if source.path not in (args.resume, args.finetune) or source.checkpoint is None and source.description is None:
        return
    classes = (source.description['num_class'] if source.description is not None else
               checkpoint_classes(model_state(source.checkpoint), source.path))
    check_class_count(classes, class_names, source.path,
                      data.class_source(args.dataset, args.root_path, **data.dataset_options(args)),
                      'give the dataset flags it was trained on (--dataset, --root_path, --category)')


def run(args, conv_config, source=None):
    """`args`: the run's Settings (cakes.settings), read only; `conv_config`: the widths of its --conv_config."""
    source = source or Source()
    if distributed.active():
        check_batch(args.batch_size, 0)
        batch_size, gpus = distributed.process_batch(args.batch_size), int(torch.cuda.is_available())
    else:
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        check_batch(args.batch_size, gpus)
        batch_size = args.batch_size
    seed_process(args.seed, distributed.rank())

    main_process = distributed.is_main()
    log = RunLog(os.path.join(args.checkpoint_dir, 'log', run_name(args) + '.csv') if main_process else None,
                 console=main_process)
    note = None if distributed.active() else idle_gpus_note(batch_size, gpus)
    for line in ([note] if note else []) + list(source.notes):
        log(line)
    class_names = data.class_names(args.dataset, args.root_path, **data.dataset_options(args))
    check_classes(source, class_names, args)
    description = describe(args.op_code, args.search, conv_config, args.arch, args.num_segments, args.dropout,
                           class_names, args.input_size)
    moved = None if args.evaluate else check_overwrite(args, description, layout(description))
    if moved:
        log(moved)
    with distributed.local_rank0_first():  # one ImageNet download per machine, the others read the cache
        model = create_model(**description, pretrained=pretrained_source(args))
    if args.finetune:
        init_from_supernet(model, model_state(source.take(args.finetune)))
        log(f"=> initialised from the kept channels of supernet '{args.finetune}'")

    model, device = place_model(args, model, gpus)
    optimizer = make_optimizer(unwrap(model), args.lr, args.momentum, args.weight_decay)
    scaler = grad_scaler(device, args.amp)
    progress = (resume(args, model, optimizer, log, scaler, source.take(args.resume),
                       source.filled if source.path == args.resume else ())
                if args.resume else Progress(epoch=args.start_epoch))
    criterion = nn.CrossEntropyLoss(reduction='none').to(device)  # per sample: validation sums them exactly
    loop = Run(args, model, criterion, optimizer, scaler, device, log)
    if args.reweight == 'latency' and args.sparsity_regularization and not args.evaluate:
        # the replica's share of -b under DataParallel, the process's under torchrun (batch_size already)
        share = -(-batch_size // gpus) if gpus and not distributed.active() else batch_size
        loop.costs = search_costs(args, len(class_names), device, share, log)
        log('=> --reweight latency: L1 weights per kind, shares of the measured time: ' + weights_text(loop.costs))
    views = evaluation_views(args)
    val_loader = make_loader(args, 'val', batch_size, views)
    if args.evaluate:
        evaluate(args, loop, val_loader, progress.best_prec1, views, batch_size)
        return

    train_loader = make_loader(args, 'train', batch_size)
    if progress.rngs is not None:  # last: building the model and the loaders drew from them
        restore_process_rng(progress.rngs, train_loader.sampler, distributed.rank(), distributed.world_size())
    loop.board = make_board(args, len(train_loader), progress)
    try:
        train(loop, (train_loader, val_loader), progress, description)
    finally:
        loop.board.close()


def place_model(args, model, gpus):
    """Memory format and SyncBN first (DDP registers the parameters as they are), then the device and the
    wrapper: DDP under torchrun, nn.DataParallel over the visible GPUs as released, else the bare model on
    the CPU. Returns (model, device)."""
    if channels_last(args):
        model.use_channels_last()
    model.use_autocast(amp_dtype(args.amp))  # in the model: DataParallel's replica threads would lose the dtype
    model.use_plans(ops.plans.run_policy(seeded=args.seed is not None))  # rank 0's CAKES_PLAN; no timing with --seed
    if gpus or distributed.active() and torch.cuda.is_available():
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn_modes(args)
    if distributed.active():
        if args.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        device = distributed.device()
        # Dropout supernets leave branches unused in a step, differently in each process.
        unused = ops.op_spec(args.op_code).family == 'dropout'
        model = nn.parallel.DistributedDataParallel(model.to(device), device_ids=[device] if gpus else None,
                                                    find_unused_parameters=unused)
        return model, device
    if gpus:
        return nn.DataParallel(model.to('cuda')), torch.device('cuda')
    return model, torch.device('cpu')


def cudnn_modes(args):
    """(cudnn.benchmark, cudnn.deterministic). Benchmark mode times every algorithm for each new convolution
    shape and keeps the fastest: results vary between runs, so not with --seed; and a dropout supernet's
    training step samples new channel counts, so new shapes, every step: it would search (forward and both
    backward passes, with workspace memory spikes) on every GPU at every step, never reusing a result."""
    shapes_change = ops.op_spec(args.op_code).family == 'dropout' and not args.evaluate
    return args.seed is None and not shapes_change, args.seed is not None


def make_board(args, iters, progress):
    """TensorBoard events under CHECKPOINT_DIR/log/RUN_tb/ from rank 0; a resumed run purges the points that
    the interrupted one wrote past where it continues (`progress`)."""
    if args.no_tensorboard or not distributed.is_main():
        return Board()
    return Board(os.path.join(args.checkpoint_dir, 'log', run_name(args) + '_tb'),
                 purge_step=progress.epoch * iters + progress.iteration)


def stop_run(stop, log, path, epoch, iteration):
    """After a stop signal: one line saying where the run stopped and how to continue, then exit."""
    log(f"{stop.name}: stopped at epoch {epoch}, iteration {iteration}; saved '{path}': continue with "
        f'--resume {path} (or --auto_resume)')
    distributed.barrier()  # no process ends (which makes torchrun end the others) before rank 0 has saved
    raise SystemExit(stop.exit_status)


def train(run, loaders, progress, description=None):
    """The epochs from where `progress` says. On SIGTERM/SIGINT (to any process): finish the iteration (or abandon
    validation, which a resumed run repeats), save where training is, exit 128 + signal. Every checkpoint
    holds `description`."""
    args = run.args
    best_prec1, start_iteration = progress.best_prec1, progress.iteration
    train_loader, val_loader = loaders
    sampler = train_loader.sampler
    iters = len(train_loader)
    # The released loop does not validate dropout supernets during their search.
    validates = ops.op_spec(args.op_code).family != 'dropout'
    settling = SearchSettling(run, progress.search_history) if args.search else None
    if settling is not None and settling.stops:  # resumed after it had settled: it stays stopped
        settling.finish(args.resume)
        return

    def save_at(epoch, iteration):
        return save(args, run.model, run.optimizer, sampler, epoch, iteration, best_prec1, run.scaler, description,
                    settling.state_dict() if settling is not None else None)

    # agree_max: the stop agreement is read with the step's other numbers, one wait for the GPU.
    with StopRequest(distributed.agree_max if distributed.active() else None).installed() as stop:
        run.stop = stop
        for epoch in range(progress.epoch, args.epochs):
            done = train_epoch(run, train_loader, epoch, start_iteration)
            start_iteration = 0
            if stop.poll():
                stop_run(stop, run.log, save_at(epoch, done), epoch, done)
            last_step = (epoch + 1) * iters - 1  # TensorBoard: per-epoch points at the epoch's last iteration
            log_search(run, last_step)
            if (epoch + 1) % args.eval_freq and epoch != args.epochs - 1:
                continue
            log_search_picture(run, epoch + 1, last_step)
            if settling is not None:
                settling.measure(epoch + 1, last_step)
            prec1 = validate(run, val_loader, best_prec1, last_step) if validates else 0.0
            if prec1 is None:
                stop_run(stop, run.log, save_at(epoch, done), epoch, done)
            if settling is not None:
                settling.commit()
            is_best = prec1 > best_prec1
            best_prec1 = max(prec1, best_prec1)
            path = save_at(epoch + 1, 0)
            keep_copies(path, epoch + 1, is_best)
            if settling is not None and settling.stops:
                settling.finish(path)
                return
            if stop.poll() and epoch + 1 < args.epochs:
                stop_run(stop, run.log, path, epoch + 1, 0)


def evaluate(args, loop, loader, best_prec1, views, batch_size):
    """--evaluate: the released validation, or under a test protocol the views' average, then per-class
    accuracy, the scores file and the confusion matrix. Under a protocol `batch_size` (this process's -b)
    counts views: at most that many go through the network at once."""
    if views is None:
        validate(loop, loader, best_prec1)
        return
    scorer = ViewScorer(views, batch_size)
    validate(loop, loader, best_prec1, scorer=scorer)
    names = data.class_names(args.dataset, args.root_path, **data.dataset_options(args))
    finish_evaluation(scorer, loader, names, loop.log, args.save_scores, args.confusion)
