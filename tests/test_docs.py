"""The README and docs/ hold together: every docs page is reachable from the README, every relative link (and
its #anchor) leads somewhere, and every command the README's fenced blocks show runs a script that exists with
options that script has; and no file cites the behaviour document or an issue number."""
import contextlib
import functools
import glob
import importlib.util
import io
import os
import re
import shlex
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, 'README.md')
PAGES = sorted(glob.glob(os.path.join(REPO, 'docs', '*.md')))
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)')


def links(path):
    """The relative links of a markdown file: (the file it leads to, its anchor, the link as written)."""
    text = re.sub(r'```.*?```', '', open(path).read(), flags=re.S)  # code is not links
    for written in LINK.findall(text):
        if re.match(r'[a-z]+:', written):  # http:, https:, mailto:
            continue
        name, _, anchor = written.partition('#')
        yield (os.path.normpath(os.path.join(os.path.dirname(path), name)) if name else path), anchor, written


def anchors(path):
    """The anchors GitHub gives the headings of a markdown file."""
    text = re.sub(r'```.*?```', '', open(path).read(), flags=re.S)
    return {slug(heading) for heading in re.findall(r'^#+ (.*)$', text, re.M)}


def slug(heading):
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def broken_links(paths):
    """'file: link' for every relative link that leads to no file, or to no heading of a markdown file."""
    broken = []
    for path in paths:
        for target, anchor, written in links(path):
            if not os.path.exists(target):
                broken.append(f'{os.path.basename(path)}: {written}')
            elif anchor and target.endswith('.md') and anchor not in anchors(target):
                broken.append(f'{os.path.basename(path)}: {written} (no such heading)')
    return broken


def reachable(start):
    """The markdown files reachable from `start` by relative links."""
    seen, todo = set(), [start]
    while todo:
        path = todo.pop()
        if path in seen or not os.path.isfile(path):
            continue
        seen.add(path)
        todo += [target for target, _, _ in links(path) if target.endswith('.md')]
    return seen


def commands(markdown):
    """Each command line of the fenced ```bash blocks: continuation lines joined, comments dropped, split as a
    shell splits it."""
    found = []
    for block in re.findall(r'^ *```bash\n(.*?)^ *```', markdown, re.S | re.M):
        for line in block.replace('\\\n', ' ').splitlines():
            words = shlex.split(line, comments=True)
            if words:
                found.append(words)
    return found


def script_and_options(words):
    """(script path relative to the repository, its options given) of a `python X.py ...`, `torchrun ... X.py` or
    `bash scripts/X.sh` command (leading VAR=value settings skipped); None for anything else."""
    while words and re.match(r'^[A-Z_]+=', words[0]):
        words = words[1:]
    script = next((w for w in words if w.endswith(('.py', '.sh'))), None)
    if script is None or words[0] not in ('python', 'python3', 'torchrun', 'bash'):
        return None
    after = words[words.index(script) + 1:]
    return script, [w.split('=', 1)[0] for w in after if re.match(r'^--?[A-Za-z]', w)]


@functools.lru_cache(maxsize=None)
def script_options(script):
    """The option strings a script accepts, read off the --help its main() prints (in this process: torch is
    imported once)."""
    spec = importlib.util.spec_from_file_location('documented_' + re.sub(r'\W', '_', script),
                                                  os.path.join(REPO, script))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit) as exit_info:
        module.main(['--help'])
    assert exit_info.value.code == 0, f'{script} --help failed'
    return frozenset(re.findall(r'(?<![\w-])(--?[A-Za-z][\w-]*)', printed.getvalue()))


def unknown_options(markdown):
    """'command: problem' for every command of the fenced blocks whose script is missing or that gives an option
    its script does not have."""
    problems = []
    for words in commands(markdown):
        found = script_and_options(words)
        if found is None:
            continue
        script, options = found
        if not os.path.isfile(os.path.join(REPO, script)):
            problems.append(f'{" ".join(words)}: no {script}')
        elif script.endswith('.py'):
            problems += [f'{" ".join(words)}: {script} has no {o}' for o in options if o not in script_options(script)]
    return problems


def section(markdown, heading):
    """The text of a `## heading` section, up to the next `## `."""
    match = re.search(rf'^## {re.escape(heading)}\n(.*?)(?=^## |\Z)', markdown, re.S | re.M)
    assert match, f'no section "## {heading}"'
    return match.group(1)


def test_every_docs_page_is_reachable_from_the_readme():
    unreachable = [os.path.relpath(p, REPO) for p in PAGES if p not in reachable(README)]
    assert PAGES and not unreachable, f'docs pages no link from README.md leads to: {unreachable}'


def test_every_relative_link_resolves():
    assert not broken_links([README, *PAGES])


def test_quick_start_holds_the_two_commands():
    block = re.search(r'```bash\n(.*?)```', section(open(README).read(), 'Quick start'), re.S).group(1)
    assert block.split('\n')[:-1] == ['bash scripts/demo.sh', 'bash scripts/test.sh']


def test_the_pipeline_commands_exist_with_the_flags_they_show():
    readme = open(README).read()
    pipeline = section(readme, 'The pipeline')
    assert len([c for c in commands(pipeline) if script_and_options(c)]) >= 5  # search C, P, prune, train, evaluate
    assert not unknown_options(readme)


def test_every_documented_command_exists_with_the_flags_it_shows():
    assert not [problem for page in PAGES for problem in unknown_options(open(page).read())]


# The checks themselves: each catches what it is there for.

def test_a_misspelt_flag_or_a_missing_script_is_caught():
    good = '```bash\nCUDA_VISIBLE_DEVICES=0 python main.py --root_path P --checkpoint_dir D --op_code conv3d \\\n' \
           '    --eval-freq 2 -b 8\npython scripts/plot_config.py CAKES123D_P --out x.png\n```\n'
    assert unknown_options(good) == []
    assert unknown_options(good.replace('--op_code', '--opcode')) == [
        'CUDA_VISIBLE_DEVICES=0 python main.py --root_path P --checkpoint_dir D --opcode conv3d --eval-freq 2 -b 8: '
        'main.py has no --opcode']
    assert unknown_options(good.replace('--out x.png', '--output x.png'))[0].endswith('has no --output')
    assert unknown_options('```bash\npython scripts/train.py --lr 1\n```\n') == [
        'python scripts/train.py --lr 1: no scripts/train.py']


def test_an_unlinked_page_and_a_broken_link_are_caught(tmp_path):
    (tmp_path / 'docs').mkdir()
    readme, linked, orphan = tmp_path / 'README.md', tmp_path / 'docs' / 'a.md', tmp_path / 'docs' / 'b.md'
    readme.write_text('# R\n\n[a](docs/a.md)\n\n```bash\n[not a link](docs/b.md)\n```\n')
    linked.write_text('# A\n\n## Some heading\n\n[back](../README.md) [here](#some-heading)\n')
    orphan.write_text('# B\n')
    assert reachable(str(readme)) == {str(readme), str(linked)}
    assert broken_links([str(readme), str(linked)]) == []
    linked.write_text('# A\n\n[gone](c.md) [nowhere](#no-heading) [b](b.md#b) [B](b.md#c)\n')
    assert broken_links([str(linked)]) == ['a.md: c.md', 'a.md: #no-heading (no such heading)',
                                           'a.md: b.md#c (no such heading)']
    linked.write_text('# A\n\n[b](b.md)\n')
    assert str(orphan) in reachable(str(readme))


@pytest.mark.parametrize('heading, expected', [('Speed and execution plans', 'speed-and-execution-plans'),
                                               ('`predict.py`: what class is this video?',
                                                'predictpy-what-class-is-this-video'),
                                               ('Kinetics-400, UCF101, HMDB51', 'kinetics-400-ucf101-hmdb51')])
def test_slug_follows_github(heading, expected):
    assert slug(heading) == expected


# The project's text says what is meant: no reference to the behaviour document's name or to issue numbers.
CITATION = re.compile(r'\bSP' + r'EC\b|\b[Ii]ssue [0-9]+')


def test_no_file_cites_the_specification_or_an_issue_number():
    files = subprocess.run(['git', 'ls-files'], cwd=REPO, capture_output=True, text=True).stdout.split()
    if not files:
        pytest.skip('not a git checkout')
    found = []
    for name in files:
        if name.endswith(('.py', '.md', '.sh', '.txt', '.toml', '.cfg', '.json', '.yml', '.yaml')):
            with open(os.path.join(REPO, name), encoding='utf-8', errors='replace') as f:
                found += [f'{name}:{n}' for n, line in enumerate(f, 1) if CITATION.search(line)]
    assert found == []


def test_the_readme_stays_a_front_page():
    """Under 15 KB: what does not fit goes into a docs/ page linked from it."""
    assert os.path.getsize(README) < 15 * 1024
