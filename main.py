"""CAKES: search, prune, retrain and evaluate I3D networks on Something-Something.

    CUDA_VISIBLE_DEVICES=0,...,7 python main.py --root_path PATH --dataset somethingv1 \
        --checkpoint_dir DIR --type I3D --arch resnet50 --num_segments 8 -b 96 --lr 0.04 --op_code conv1_2_3d ...
"""
import argparse
import os

import torch
from torch import nn

import datasets
import ops
from models import TemporalModel
from models.finetune import init_from_supernet
from utils.checkpoint import copy_atomic, load_checkpoint, load_weights, model_state, released_state, save_atomic
from utils.cli import run_cli
from utils.conv_config import resolve_conv_config
from utils.errors import UsageError
from utils.log import RunLog
from utils.loop import train_epoch, unwrap, validate
from utils.schedule import make_optimizer


def build_parser():
    p = argparse.ArgumentParser(description='CAKES: Channel-wise Automatic KErnel Shrinking for 3D networks')
    p.add_argument('--dataset', default='somethingv1', choices=datasets.DATASETS)
    p.add_argument('--root_path', default='../', help='dataset root (with or without a trailing /)')
    p.add_argument('--store_name', default='', help='suffix of the run name')
    p.add_argument('--type', default='I3D', choices=['I3D'])
    p.add_argument('--arch', default='resnet50', choices=['resnet50', 'resnet101'])
    p.add_argument('--num_segments', type=int, default=8, help='frames per clip')
    p.add_argument('--alpha', type=int, default=4, help='accepted for command compatibility; unused by I3D')
    p.add_argument('--beta', type=int, default=2, help='accepted for command compatibility; unused by I3D')
    p.add_argument('--epochs', type=int, default=70)
    p.add_argument('-b', '--batch-size', type=int, default=24, help='total over all GPUs')
    p.add_argument('--lr', '--learning-rate', type=float, default=0.01)
    p.add_argument('--lr_steps', type=float, nargs='+', default=[50, 60], help='epochs of x0.1 decay')
    p.add_argument('--dropout', '--dp', type=float, default=0.3)
    p.add_argument('--warm', type=float, default=5, help='warm-up epochs')
    p.add_argument('--momentum', type=float, default=0.9)
    p.add_argument('--weight_decay', '--wd', type=float, default=3e-4)
    p.add_argument('--clip-gradient', '--gd', type=float, default=20)
    p.add_argument('--print-freq', '-p', type=int, default=20, help='iterations between printed lines')
    p.add_argument('--eval-freq', '-ef', type=int, default=1, help='epochs between validations')
    p.add_argument('-j', '--workers', type=int, default=16, help='data loader workers')
    p.add_argument('--resume', default='', help='checkpoint to continue from (weights, epoch, best_prec1)')
    p.add_argument('-e', '--evaluate', action='store_true', help='validate once and exit')
    p.add_argument('--start-epoch', type=int, default=0)
    p.add_argument('--checkpoint_dir', required=True, help='logs and checkpoints go below it')
    p.add_argument('--op_code', default='conv3d', help='one of ' + ', '.join(ops.OP_CODES))
    p.add_argument('-sr', '--sparsity-regularization', action='store_true', help='L1 on the CAKES BN scales')
    p.add_argument('--s', type=float, default=1e-4, help='sparsity strength')
    p.add_argument('--conv_config', default='', help='a key of conv_configs in config.py, or a conv_config.txt')
    p.add_argument('--search', action='store_true', help='build the supernet')
    p.add_argument('--prune', action='store_true', help='write the pruned conv_config of a supernet and exit')
    p.add_argument('--prune_model_path', default='', help='the supernet checkpoint to prune')
    p.add_argument('--reweight', action='store_true', help='cost-aware sparsity weights (27 : 9 : 3)')
    p.add_argument('--finetune', default='', help='supernet checkpoint to initialise the pruned network from')
    # Additions to the released command line.
    p.add_argument('--input_size', type=int, default=224, help='crop size (224 as released; smaller for tests)')
    p.add_argument('--pretrained', default='imagenet',
                   help="'imagenet', 'none' or a torchvision ResNet state_dict file; used only from scratch")
    return p


def check_args(args):
    """Refuse flag combinations that cannot mean what the user wants."""
    spec = ops.op_spec(args.op_code)
    if spec.family == 'dropout' and not args.search:
        raise UsageError(f"--op_code {args.op_code} is a dropout supernet: add --search")
    if args.prune and not args.prune_model_path:
        raise UsageError('--prune needs --prune_model_path CKPT, the supernet checkpoint to prune')
    if args.prune and (not args.search or spec.family == 'plain'):
        raise UsageError('--prune reads a supernet: give --search and the CAKES op code it was searched with')
    if args.search and args.conv_config:
        raise UsageError('--conv_config sets the widths of a searched network; a --search supernet has none')
    if args.search and args.finetune:
        raise UsageError('--finetune initialises a pruned network: drop --search')
    if args.finetune and not args.conv_config:
        raise UsageError('--finetune needs --conv_config, the widths pruning found for that supernet')
    if args.finetune and args.resume:
        raise UsageError('give either --resume (continue a run) or --finetune (start from a supernet), not both')
    if (args.sparsity_regularization or args.reweight) and spec.family == 'plain':
        raise UsageError(f'-sr/--reweight act on CAKES BN scales; --op_code {args.op_code} has none')
    if args.reweight and not args.sparsity_regularization:
        raise UsageError('--reweight scales the sparsity term: add -sr')
    if args.evaluate and args.prune:
        raise UsageError('give either --evaluate or --prune, not both')


def run_name(args):
    return '_'.join([args.type, args.dataset, args.arch, 'segment%d' % args.num_segments, args.store_name])


def build_model(args, num_class, conv_config, dropout=None, pretrained=None):
    return TemporalModel(num_class, args.num_segments, op_code=args.op_code, search=args.search,
                         conv_config=conv_config, backbone=args.arch,
                         dropout=args.dropout if dropout is None else dropout, pretrained=pretrained)


def prune(args):
    """Load the supernet, print its pruned conv_config and write it to ./conv_config.txt."""
    state = model_state(load_checkpoint(args.prune_model_path))
    classifier = state.get('new_fc.weight', state.get('base_model.fc.weight'))
    if classifier is None:
        raise UsageError(f"'{args.prune_model_path}' has no classifier weights: not a checkpoint of this model")
    model = build_model(args, classifier.shape[0], None, dropout=args.dropout if 'new_fc.weight' in state else 0)
    load_weights(model, state)
    config = ops.prune_config(model.cakes_ops())
    text = str(config)  # a Python literal of plain ints, as config.py takes it
    print(text)
    with open('conv_config.txt', 'w') as f:
        f.write(text + '\n')
    print('conv_config written to ./conv_config.txt: paste it into conv_configs in config.py')


def pretrained_source(args):
    """ImageNet weights only when training from scratch: resume, evaluate and finetune bring their own."""
    if args.resume or args.evaluate or args.finetune or args.pretrained.lower() == 'none':
        return None
    return args.pretrained


def make_loader(args, split):
    dataset = datasets.build_dataset(args.dataset, args.root_path, split, args.num_segments,
                                     input_size=args.input_size)
    train = split == 'train'
    return torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=train, drop_last=train,
                                       num_workers=args.workers, pin_memory=torch.cuda.is_available())


def resume(args, model, log):
    """Weights, start epoch and best accuracy from a checkpoint (with or without `module.` keys)."""
    checkpoint = load_checkpoint(args.resume)
    load_weights(unwrap(model), model_state(checkpoint))
    args.start_epoch = int(checkpoint.get('epoch', 0))
    best = float(checkpoint.get('best_prec1', 0))
    log(f"=> loaded checkpoint '{args.resume}' (epoch {args.start_epoch})")
    return best


def save(args, model, epoch, best_prec1, is_best):
    folder = os.path.join(args.checkpoint_dir, 'checkpoint')
    prefix = os.path.join(folder, run_name(args))
    state = {'epoch': epoch + 1, 'arch': args.arch, 'state_dict': released_state(unwrap(model)),
             'best_prec1': best_prec1}
    path = prefix + '_checkpoint.pth.tar'
    save_atomic(state, path)
    if is_best:
        copy_atomic(path, prefix + '_best.pth.tar')
    if (epoch + 1) % 5 == 0:
        copy_atomic(path, prefix + '_epoch%d.pth.tar' % (epoch + 1))


def main(argv=None):
    args = build_parser().parse_args(argv)
    check_args(args)
    conv_config = resolve_conv_config(args.conv_config)
    if args.prune:
        return prune(args)

    log = RunLog(os.path.join(args.checkpoint_dir, 'log', run_name(args) + '.csv'))
    num_class = datasets.num_classes(args.dataset, args.root_path)
    model = build_model(args, num_class, conv_config, pretrained=pretrained_source(args))
    if args.finetune:
        init_from_supernet(model, model_state(load_checkpoint(args.finetune)))
        log(f"=> initialised from the kept channels of supernet '{args.finetune}'")

    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
        device = torch.device('cuda')
        model = nn.DataParallel(model.to(device))
    else:
        device = torch.device('cpu')
    optimizer = make_optimizer(unwrap(model), args.lr, args.momentum, args.weight_decay)
    best_prec1 = resume(args, model, log) if args.resume else 0.0
    criterion = nn.CrossEntropyLoss().to(device)
    val_loader = make_loader(args, 'val')
    if args.evaluate:
        validate(val_loader, model, criterion, args, log, device, best_prec1)
        return

    train_loader = make_loader(args, 'train')
    supernet_without_eval = ops.op_spec(args.op_code).family == 'dropout'
    for epoch in range(args.start_epoch, args.epochs):
        train_epoch(train_loader, model, criterion, optimizer, epoch, args, log, device)
        if (epoch + 1) % args.eval_freq == 0 or epoch == args.epochs - 1:
            # The released loop does not validate dropout supernets during their search.
            prec1 = 0.0 if supernet_without_eval else validate(val_loader, model, criterion, args, log, device,
                                                                best_prec1)
            is_best = prec1 > best_prec1
            best_prec1 = max(prec1, best_prec1)
            save(args, model, epoch, best_prec1, is_best)


if __name__ == '__main__':
    run_cli(main)
