"""The documentation site (mkdocs.yml, docs/) is executable and complete: every guide's
```python blocks run, in order, in one namespace per guide (as README's do); every public
module is on an API page; every public function and class has a docstring."""
import importlib
import inspect
import pathlib
import pkgutil
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GUIDES = sorted(p for p in DOCS.glob("*.md"))
#: the packages and modules the API reference covers (docs/api/<name>.md each)
API = ["ops", "layers", "combinators", "models", "train", "data", "inspect", "compress", "plot", "interop",
       "gradcheck", "backprop", "dispatch", "kernels", "config"]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def public_modules(name: str) -> list[str]:
    """``jaxcnn.<name>`` and its submodules without a ``_``-prefixed part, from this
    checkout's files only."""
    module = importlib.import_module(f"jaxcnn.{name}")
    found = [module.__name__]
    for info in pkgutil.walk_packages(getattr(module, "__path__", []), module.__name__ + "."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            found.append(info.name)
    return [m for m in found if (ROOT / pathlib.Path(*m.split("."))).with_suffix(".py").exists()
            or (ROOT / pathlib.Path(*m.split(".")) / "__init__.py").exists()]


def test_guides_have_python_examples():
    assert sum(len(python_blocks(p.read_text())) for p in GUIDES) >= 8


@pytest.mark.slow
@pytest.mark.parametrize("guide", [p.name for p in GUIDES if python_blocks(p.read_text())])
def test_guide_python_blocks_run(guide, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "guide"}
    for i, block in enumerate(python_blocks((DOCS / guide).read_text())):
        try:
            exec(compile(block, f"docs/{guide} python block {i}", "exec"), namespace)
        except Exception as e:  # noqa: BLE001 -- name the block that failed
            raise AssertionError(f"docs/{guide} python block {i} failed: {type(e).__name__}: {e}\n{block}") from e


def test_every_public_module_is_on_an_api_page():
    pages = "\n".join(p.read_text() for p in (DOCS / "api").glob("*.md"))
    documented = set(re.findall(r"^::: (jaxcnn[\w.]*)", pages, flags=re.M))
    nav = (ROOT / "mkdocs.yml").read_text()
    for name in API:
        assert f"api/{name}.md" in nav, f"docs/api/{name}.md is not in mkdocs.yml's nav"
        for module in public_modules(name):
            assert module in documented, f"{module} is on no docs/api page (add '::: {module}')"


def test_every_public_function_and_class_has_a_docstring():
    missing = []
    for name in API:
        for module_name in public_modules(name):
            module = importlib.import_module(module_name)
            if not (module.__doc__ or "").strip():
                missing.append(f"{module_name} (module)")
            for attr, obj in vars(module).items():
                if attr.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
                    continue
                if getattr(obj, "__module__", None) != module_name:
                    continue                       # imported, documented where it is defined
                if not (obj.__doc__ or "").strip():
                    missing.append(f"{module_name}.{attr}")
                if inspect.isclass(obj):
                    missing += [f"{module_name}.{attr}.{m}" for m, f in vars(obj).items()
                                if not m.startswith("_") and inspect.isfunction(f) and not (f.__doc__ or "").strip()]
    assert not missing, f"{len(missing)} public names without a docstring: {', '.join(missing)}"
