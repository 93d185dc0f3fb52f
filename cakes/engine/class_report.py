"""After a multi-view evaluation: per-class accuracy (as TSM prints it), the scores file for later ensembles and
the confusion matrix picture."""
import numpy as np

from . import distributed
from cakes.files import write_atomic

SHOWN = 3  # best and worst classes on the console; the log file gets every class


def collect(scorer, loader):
    """(ids, labels, scores) of the whole list in list order, on every process: each process scored its shard
    (the loader's sampler, in order) and the shards are gathered."""
    scores, labels = scorer.kept()
    shards = distributed.gather((list(loader.sampler), scores.numpy(), labels.numpy()))
    shards = [shard for shard in shards if len(shard[0])]  # more processes than videos leave some without
    order = np.argsort(np.concatenate([shard[0] for shard in shards]), kind='stable')
    videos = loader.dataset.videos
    indices = np.concatenate([shard[0] for shard in shards])[order]
    ids = np.array([videos[i].folder for i in indices], dtype=str)
    return (ids, np.concatenate([shard[2] for shard in shards])[order].astype(np.int64),
            np.concatenate([shard[1] for shard in shards])[order].astype(np.float32))


def confusion_matrix(labels, predictions, num_class):
    """counts[true class, predicted class]."""
    flat = np.asarray(labels) * num_class + np.asarray(predictions)
    return np.bincount(flat, minlength=num_class * num_class).reshape(num_class, num_class)


def class_accuracy(confusion):
    """Per-class accuracy in percent (NaN for classes without videos) and their mean over the classes that have
    videos (TSM's mean class accuracy)."""
    counts = confusion.sum(1)
    with np.errstate(invalid='ignore', divide='ignore'):
        accuracy = 100.0 * np.diag(confusion) / counts
    present = counts > 0
    return accuracy, float(accuracy[present].mean()) if present.any() else float('nan')


def report_classes(log, confusion, names):
    """The mean class accuracy and the best and worst few classes on the console, every class in the log."""
    accuracy, mean = class_accuracy(confusion)
    counts, hits = confusion.sum(1), np.diag(confusion)
    present = np.flatnonzero(counts > 0)
    absent = len(names) - len(present)
    log(f'Mean class accuracy: {mean:.3f}% over {len(present)} classes with videos'
        + (f' ({absent} classes have none)' if absent else ''))

    def line(c):
        return f'{accuracy[c]:8.3f}% ({hits[c]}/{counts[c]})  {names[c]}'

    ranked = present[np.argsort(-accuracy[present], kind='stable')]
    parts = [('     ', ranked)] if len(ranked) <= 2 * SHOWN else [('best ', ranked[:SHOWN]), ('worst', ranked[-SHOWN:])]
    if log.console:
        for tag, classes in parts:
            for c in classes:
                print(f'  {tag}' + line(c))
    log.record('Per-class accuracy (label, accuracy, videos right/videos, name):')
    for c in present:
        log.record(f'  {c:4d} ' + line(c))


def save_scores(path, ids, labels, scores, names, protocol):
    """Plain arrays only (np.load(..., allow_pickle=False) reads them): ids as fixed-width unicode, labels
    int64, scores float32 (videos x classes), class_names, and the protocol text."""
    write_atomic(path, lambda f: np.savez(f, ids=np.asarray(ids, dtype=str), labels=np.asarray(labels, np.int64),
                                          scores=np.asarray(scores, np.float32),
                                          class_names=np.asarray(names, dtype=str), protocol=np.asarray(protocol)))


def plot_confusion(path, confusion, names, title):
    """The row-normalised confusion matrix (each true class sums to 1) with class names on both axes, sized so
    that 174 names stay legible."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt

    k = len(names)
    rows = confusion.sum(1, keepdims=True)
    normalised = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    side = max(6.0, 0.11 * k + 4)  # inches: about 8 points per class
    font = 10 if k <= 20 else 5
    fig, ax = plt.subplots(figsize=(side + 1.5, side), dpi=150 if k > 40 else 100)
    image = ax.imshow(normalised, cmap='Blues', vmin=0, vmax=1, interpolation='nearest')
    ax.set_xticks(range(k), names, rotation=90, fontsize=font)
    ax.set_yticks(range(k), names, fontsize=font)
    if k <= 20:  # few classes: the fractions themselves
        for (row, column), value in np.ndenumerate(normalised):
            ax.text(column, row, f'{value:.2f}', ha='center', va='center', fontsize=font,
                    color='white' if value > 0.5 else 'black')
    ax.set_xlabel('predicted class')
    ax.set_ylabel('true class')
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01, label='fraction of the true class')
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, format='png', bbox_inches='tight'))
    plt.close(fig)


def finish_evaluation(scorer, loader, names, log, scores_path=None, confusion_path=None):
    """After validate() with a scorer: per-class accuracy, then the scores file and the picture (rank 0)."""
    ids, labels, scores = collect(scorer, loader)
    if not distributed.is_main():
        return
    confusion = confusion_matrix(labels, scores.argmax(1), len(names))
    report_classes(log, confusion, names)
    if scores_path:
        save_scores(scores_path, ids, labels, scores, names, scorer.describe())
        log(f'scores of {len(ids)} videos written to {scores_path}')
    if confusion_path:
        plot_confusion(confusion_path, confusion, names, f'{scorer.describe()}: {len(ids)} videos')
        log(f'confusion matrix written to {confusion_path}')
