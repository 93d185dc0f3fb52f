"""The package's layout: subpackages import one another in one direction only, and the library never imports
main.py (the command line), so that tests, scripts and users' programs import the engine itself."""
import ast
import os

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'cakes')


def imported_units(path, unit):
    """The top-level units of cakes (subpackages or modules) that the file at `path` imports, and 'main'."""
    package = os.path.relpath(os.path.dirname(path), os.path.dirname(PACKAGE)).split(os.sep)
    for node in ast.walk(ast.parse(open(path).read())):
        names = []
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            names = [base + (node.module.split('.') if node.module else [])]
        elif isinstance(node, ast.Import):
            names = [a.name.split('.') for a in node.names]
        for name in names:
            if name[:1] == ['main']:
                yield 'main'
            elif name[:1] == ['cakes'] and len(name) > 1 and name[1] != unit:
                yield name[1]


def unit_graph():
    graph = {}
    for root, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith('.py'):
                path = os.path.join(root, f)
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


def test_subpackages_import_in_one_direction():
    graph = unit_graph()
    assert {'engine', 'models', 'ops', 'data', 'convert', 'files'} <= set(graph)
    assert find_cycle(graph) is None, f'import cycle between subpackages: {" -> ".join(find_cycle(graph))}'


def test_find_cycle_finds_one():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': set()}) is None


def test_the_library_never_imports_main():
    assert not [unit for unit, targets in unit_graph().items() if 'main' in targets]
