"""Writing files so that nothing already written is lost: atomic writes (temporary file, flush, rename) for
checkpoints, lists, scores, pictures and exported networks; hard links with an atomic-copy fallback."""
import glob
import os
import shutil
import tempfile
import uuid

import torch

from .errors import UsageError


def save_atomic(obj, path):
    """Write to a temporary file beside `path`, then rename: a crash never leaves a torn checkpoint."""
    _write_atomic(path, lambda f: torch.save(obj, f))


def copy_atomic(src, dst):
    with open(src, 'rb') as source:
        _write_atomic(dst, lambda f: shutil.copyfileobj(source, f))


def write_atomic(path, write):
    """Any file (scores, pictures, exported networks) written as checkpoints are: see _write_atomic."""
    _write_atomic(path, write)


def _write_atomic(path, write):
    """`write(file)` into a temporary file, flushed to disk, renamed over `path`. Leftovers of a write that
    was killed (SIGKILL, power loss) are removed first; a failed write (disk full) leaves `path` as it was."""
    folder = os.path.dirname(os.path.abspath(path))
    prefix = '.' + os.path.basename(path) + '.'
    try:
        os.makedirs(folder, exist_ok=True)
        for stale in glob.glob(os.path.join(glob.escape(folder), glob.escape(prefix) + '*.tmp')):
            os.remove(stale)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix, suffix='.tmp')
    except OSError as e:
        raise UsageError(f"cannot write '{path}': {e.strerror or e}") from None
    try:
        with os.fdopen(fd, 'wb') as f:
            os.fchmod(f.fileno(), _created_mode())  # mkstemp makes 0600; a plain open() would follow the umask
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_folder(folder)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError):  # disk full, quota, permissions: the user's to fix, one line
            raise UsageError(f"cannot write '{path}' ({e.strerror or e}); the previous file, if any, is "
                             'intact') from None
        raise


def _created_mode():
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_folder(folder):
    """Make the rename itself durable (POSIX); harmless where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path, text):
    _write_atomic(path, lambda f: f.write(text.encode()))


def link_atomic(src, dst):
    """`dst` becomes a hard link to `src` (one file on disk for both; a later atomic save to `src` replaces
    its name only, so `dst` keeps the old contents), made under a temporary name and renamed over `dst`.
    Where links cannot be made (EPERM, EXDEV, a file system without them), an atomic copy instead."""
    folder = os.path.dirname(os.path.abspath(dst))
    tmp = os.path.join(folder, f'.{os.path.basename(dst)}.{uuid.uuid4().hex}.tmp')  # _write_atomic's stale pattern
    try:
        os.link(src, tmp)
    except OSError:
        copy_atomic(src, dst)
        return
    try:
        os.replace(tmp, dst)
        _fsync_folder(folder)
    except OSError as e:
        os.remove(tmp)
        raise UsageError(f"cannot write '{dst}' ({e.strerror or e}); the previous file, if any, is intact") from None


def free_backup_name(path):
    """PATH.bak, else PATH.bak.1, PATH.bak.2, ...: the first name not taken."""
    backup, n = path + '.bak', 0
    while os.path.exists(backup):
        n += 1
        backup = f'{path}.bak.{n}'
    return backup
