"""The layout of service/ stays as its module map says (service/__init__.py): imports run one way.

Each module belongs to a layer by where it lives; a module may import only from the layers listed
for its own. Imports are read with `ast`, including those inside functions (the lazy ones count).
"""

import ast
from pathlib import Path

SERVICE = Path(__file__).resolve().parent.parent / "service"
VOCABULARY = {"schemas", "errors", "metrics", "settings", "report"}

# layer -> the layers it may import from (its own included)
ALLOWED = {
    "signal": {"signal"},
    "models": {"signal", "models"},
    "vocabulary": {"signal", "models", "vocabulary"},
    "runtime": {"signal", "models", "vocabulary", "runtime"},
    "admission": {"vocabulary", "admission"},
    "api": {"signal", "models", "vocabulary", "runtime", "api"},
    "app": {"signal", "models", "vocabulary", "runtime", "admission", "api", "app"},
    "server": {"vocabulary", "app", "server"},
    "cli": {"signal", "models", "vocabulary", "runtime", "cli"},
    "package": set(),  # service/__init__.py: documentation only
}


def layer(parts: tuple[str, ...]) -> str:
    """The layer of a module named by its parts under service (e.g. ("signal", "beats"))."""
    head = parts[0]
    if head in VOCABULARY:
        return "vocabulary"
    if head in ("server", "__main__"):
        return "server"
    if head == "__init__":
        return "package"
    return head


def imported_modules(source: str) -> list[str]:
    """Every absolute module name a source imports, wherever the import statement stands."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError("relative import: the service uses absolute imports only")
    return names


def violations(modules: dict[tuple[str, ...], str]) -> list[str]:
    """Imports that break the rules, for modules given as {parts under service: source}."""
    found = []
    for parts, source in modules.items():
        own = layer(parts)
        for name in imported_modules(source):
            top = name.split(".")
            if top[0] == "training":
                found.append(f"service/{'/'.join(parts)}.py imports {name}: service never imports training")
            elif top[0] == "service" and len(top) > 1:
                target = layer(tuple(top[1:]))
                if target not in ALLOWED[own]:
                    found.append(f"service/{'/'.join(parts)}.py ({own}) imports {name} ({target})")
    return found


def service_modules() -> dict[tuple[str, ...], str]:
    return {path.relative_to(SERVICE).with_suffix("").parts: path.read_text()
            for path in SERVICE.rglob("*.py")}


def test_every_import_in_service_follows_the_module_map():
    modules = service_modules()
    assert len(modules) > 20, "the service's modules were not found"
    assert violations(modules) == []


def test_every_module_lives_in_a_known_layer():
    layers = {layer(parts) for parts in service_modules()}
    assert layers <= set(ALLOWED), layers - set(ALLOWED)


def test_the_rules_catch_a_signal_module_that_imports_the_api():
    """The check itself can fail: a signal module reaching up to a route is reported."""
    planted = {("signal", "beats"): "def f():\n    from service.api.classify import router\n"}
    assert violations(planted) == [
        "service/signal/beats.py (signal) imports service.api.classify (api)",
        "service/signal/beats.py (signal) imports service.api.classify.router (api)"]
    assert violations({("models", "registry"): "import training.export\n"}) == [
        "service/models/registry.py imports training.export: service never imports training"]
    assert violations({("signal", "beats"): "from service.signal.context import resample\n"}) == []
