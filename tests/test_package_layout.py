"""The package's layout: its units import one another downwards only (the command lines' side, then the engine, then
the networks, then the operations and the data), the library never imports main.py (the command line), so that
tests, scripts and users' programs import the engine itself, and inside the engine a module never imports the one
that drives it."""
import ast
import os

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'cakes')

# The top-level units of cakes, each importing only units that come after it. The package's own __init__ imports
# nothing when it loads (create_model comes on first use).
LAYERS = ['cli', 'engine', 'plot', 'convert', 'models', 'conv_config', 'data', 'complexity', 'ops', 'configs',
          'files', 'progress', 'settings', 'runtime', 'errors']
# module -> the modules it must not import (inside the engine: a module never imports the one that drives it).
NEVER = {
    'engine/checkpoint.py': {'cakes.engine.loop', 'cakes.engine.run'},
    'engine/prune.py': {'cakes.engine.run'},
    'engine/loop.py': {'cakes.engine.run', 'cakes.models.budget'},
}


def imported_names(path):
    """The dotted names the file at `path` imports (relative imports resolved; `from X import y` also as X.y)."""
    package = os.path.relpath(os.path.dirname(path), os.path.dirname(PACKAGE)).split(os.sep)
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = base + (node.module.split('.') if node.module else [])
            yield '.'.join(module)
            for alias in node.names:
                yield '.'.join(module + [alias.name])
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def imported_units(path, unit):
    """The top-level units of cakes (subpackages or modules) that the file at `path` imports, and 'main'."""
    for name in imported_names(path):
        parts = name.split('.')
        if parts[0] == 'main':
            yield 'main'
        elif parts[0] == 'cakes' and len(parts) > 1 and parts[1] != unit and (
                os.path.exists(os.path.join(PACKAGE, parts[1])) or os.path.exists(os.path.join(PACKAGE,
                                                                                               parts[1] + '.py'))):
            yield parts[1]


def package_files():
    for root, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith('.py'):
                yield os.path.join(root, f)


def unit_graph():
    graph = {}
    for path in package_files():
        unit = os.path.relpath(path, PACKAGE).split(os.sep)[0].removesuffix('.py')
        graph.setdefault(unit, set()).update(imported_units(path, unit))
    return graph


def find_cycle(graph):
    state = {}

    def visit(node, path):
        state[node] = 'open'
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 'open':
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target, path + [target])
                if cycle:
                    return cycle
        state[node] = 'done'
        return None

    return next((c for n in sorted(graph) if n not in state for c in [visit(n, [n])] if c), None)


def upward_imports(graph, layers):
    """(unit, imported unit) pairs where a unit imports one at or above its own layer, or one outside `layers`."""
    return sorted((unit, target) for unit, targets in graph.items() if unit != '__init__' for target in targets
                  if unit not in layers or target not in layers or layers.index(target) <= layers.index(unit))


def test_subpackages_import_in_one_direction():
    graph = unit_graph()
    assert {'engine', 'models', 'ops', 'data', 'convert', 'files', 'cli'} <= set(graph)
    assert find_cycle(graph) is None, f'import cycle between subpackages: {" -> ".join(find_cycle(graph))}'


def test_imports_point_downwards():
    """cli -> engine -> models -> ops and data: the networks and the operations never import the engine or the
    command lines' side, the engine never the command lines' side."""
    graph = unit_graph()
    assert set(graph) - {'__init__'} == set(LAYERS), 'a new unit: give it its place in LAYERS'
    assert upward_imports(graph, LAYERS) == []
    for unit in ('models', 'ops', 'data', 'convert'):
        assert not graph[unit] & {'engine', 'cli'}, unit


def test_upward_imports_are_found():
    layers = ['cli', 'engine', 'models']
    assert upward_imports({'models': {'engine'}, 'engine': {'models'}}, layers) == [('models', 'engine')]
    assert upward_imports({'engine': {'cli'}, 'cli': {'engine'}}, layers) == [('engine', 'cli')]
    assert upward_imports({'engine': {'models'}, 'cli': {'engine', 'models'}}, layers) == []


def test_engine_modules_never_import_what_drives_them():
    for module, never in NEVER.items():
        names = set(imported_names(os.path.join(PACKAGE, module)))
        assert not names & never, f'{module} imports {sorted(names & never)}'


def test_imported_names_resolve_relative_imports():
    engine = os.path.join(PACKAGE, 'engine')
    names = set(imported_names(os.path.join(engine, 'run.py')))
    assert {'cakes.engine.loop', 'cakes.engine.checkpoint.resume', 'cakes.models.create_model'} <= names


def test_find_cycle_finds_one():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': set()}) is None


def test_the_library_never_imports_main():
    assert not [unit for unit, targets in unit_graph().items() if 'main' in targets]
