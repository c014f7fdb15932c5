"""One source of truth for the project's settings: every ``RAVEL_*`` default is in
ravelscraper/settings.py, documented in the README's tables, and read without a fallback."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from ravelscraper import settings as project_settings
from tests.support.crawl import ROOT

PACKAGE = ROOT / "ravelscraper"
SETTINGS_FILE = PACKAGE / "settings.py"
RAVEL_NAME = re.compile(r"\bRAVEL_[A-Z0-9_]+\b")
# A README table row naming a setting: | `NAME` | `default` or words | meaning |
TABLE_ROW = re.compile(r"^\| `(?P<name>[A-Z][A-Z0-9_]*)` \| (?P<default>[^|]*) \|", re.MULTILINE)
GETTERS = {"get", "getbool", "getint", "getfloat", "getlist", "getdict", "getdictorlist"}


def code_files() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if p != SETTINGS_FILE]


def names_read_by_the_code() -> set[str]:
    return {name for path in code_files() for name in RAVEL_NAME.findall(path.read_text())}


def defined_settings() -> dict[str, object]:
    return {name: getattr(project_settings, name) for name in dir(project_settings)}


def readme_defaults() -> dict[str, str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return {m["name"]: m["default"].strip() for m in TABLE_ROW.finditer(text)}


def test_every_ravel_setting_the_code_reads_has_its_default_in_settings_py() -> None:
    missing = names_read_by_the_code() - defined_settings().keys()
    assert not missing, f"no default in ravelscraper/settings.py: {sorted(missing)}"


def test_every_ravel_setting_in_settings_py_is_read_by_the_code() -> None:
    defined = {name for name in defined_settings() if name.startswith("RAVEL_")}
    dead = defined - names_read_by_the_code()
    assert not dead, f"set in settings.py, read by nothing: {sorted(dead)}"


def test_every_ravel_setting_is_in_the_readme_tables_with_its_default() -> None:
    documented = readme_defaults()
    defaults = {k: v for k, v in defined_settings().items() if k.startswith("RAVEL_")}
    assert sorted(defaults.keys() - documented.keys()) == [], "missing from the README's tables"
    unknown = {k for k in documented if k.startswith("RAVEL_")} - defaults.keys()
    assert sorted(unknown) == [], "in the README's tables, not in settings.py"
    for name, value in defaults.items():
        assert readme_value(documented[name]) == value, (name, documented[name], value)


def readme_value(cell: str) -> object:
    """A default as the README writes it: `2`, `0.5`, `.archive.org`, or none."""
    if cell == "none":
        return []
    text = cell.strip("`")
    try:
        return float(text)  # 20 == 20.0: the README writes whole numbers without ".0"
    except ValueError:
        return text


def test_no_ravel_setting_is_read_with_a_fallback_or_defaulted_elsewhere() -> None:
    found = []
    for path in code_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Call) and ravel_setting_argument(node):
                if isinstance(node.func, ast.Attribute) and node.func.attr == "setdefault":
                    found.append(f"{where}: setdefault")
                elif fallback_given(node):
                    found.append(f"{where}: a fallback")
            targets = node.targets if isinstance(node, ast.Assign) else []
            if any(isinstance(t, ast.Name) and RAVEL_NAME.fullmatch(t.id) for t in targets):
                found.append(f"{where}: a default outside settings.py")
    assert found == [], "\n".join(found)


def ravel_setting_argument(call: ast.Call) -> bool:
    first = call.args[0] if call.args else None
    return isinstance(first, ast.Constant) and bool(RAVEL_NAME.fullmatch(str(first.value)))


def fallback_given(call: ast.Call) -> bool:
    """``settings.getfloat("RAVEL_X", 3.0)`` or ``settings.get("RAVEL_X", default=...)``."""
    if not (isinstance(call.func, ast.Attribute) and call.func.attr in GETTERS):
        return False
    return len(call.args) > 1 or any(k.arg == "default" for k in call.keywords)


def call_of(source: str) -> ast.Call:
    node = ast.parse(source, mode="eval").body
    assert isinstance(node, ast.Call)
    return node


def test_the_checker_sees_a_fallback() -> None:
    call = call_of('crawler.settings.getfloat("RAVEL_X", 3.0)')
    assert ravel_setting_argument(call) and fallback_given(call)
    assert fallback_given(call_of('settings.get("RAVEL_X", default=1)'))
    plain = call_of('settings.getint("RAVEL_X")')
    assert ravel_setting_argument(plain) and not fallback_given(plain)
    assert not ravel_setting_argument(call_of('settings.getint("DOWNLOAD_DELAY", 2)'))


def test_the_bases_are_scrapys_own_less_the_unused_components():
    """No hand-kept copy of Scrapy's *_BASE settings: a new Scrapy's defaults are kept, and a
    component Scrapy renames or drops is caught here rather than silently imported."""
    from scrapy.settings import default_settings

    for name in ("EXTENSIONS_BASE", "DOWNLOADER_MIDDLEWARES_BASE"):
        scrapys, ours = getattr(default_settings, name), getattr(project_settings, name)
        assert set(scrapys) - set(ours) <= project_settings.UNUSED_COMPONENTS
        assert {path: scrapys[path] for path in ours} == ours
    everything = {
        **default_settings.EXTENSIONS_BASE,
        **default_settings.DOWNLOADER_MIDDLEWARES_BASE,
    }
    assert set(everything) >= project_settings.UNUSED_COMPONENTS


def test_log_tags_are_named_once_in_logtags():
    """A log line's tag is written in ravelscraper/logtags.py and only used elsewhere."""
    import re
    from pathlib import Path

    from ravelscraper import logtags

    package = Path(logtags.__file__).parent
    written = {
        f"{path.relative_to(package)}: {tag}"
        for path in package.rglob("*.py")
        if path.name != "logtags.py"
        for tag in re.findall(r"\"(\[[a-z][a-z ]+\])[ :\"]", path.read_text())
    }
    assert written == set()
