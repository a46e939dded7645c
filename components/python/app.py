"""Kiln's Python runtime: CPython (componentize-py) exporting kiln:language/script.

A script defines `def main(**params)`; its return value, encoded as JSON, is the
execution's result. `print` goes to stdout. Exceptions become failures with the
traceback of the script's own frames.
"""

import ast
import asyncio
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import gc
import json
import marshal
import os
import sys
import traceback

# Only modules imported while the component is built exist at run time, so the
# standard library a script may use is imported here. `GET /v1/languages`
# lists these (the kiln-components build reads this list); what they import
# in turn is there too, unlisted.
STDLIB = [
    "abc",
    "array",
    "asyncio",
    "base64",
    "bisect",
    "calendar",
    "cmath",
    "collections",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "email.utils",
    "enum",
    "fnmatch",
    "fractions",
    "functools",
    "graphlib",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "html.parser",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "math",
    "numbers",
    "operator",
    "pathlib",
    "pprint",
    "random",
    "re",
    "secrets",
    "shlex",
    "statistics",
    "string",
    "struct",
    "textwrap",
    "time",
    "types",
    "typing",
    "unicodedata",
    "urllib.parse",
    "uuid",
    "xml.etree.ElementTree",
    "zlib",
    "zoneinfo",
]
for _name in STDLIB:
    importlib.import_module(_name)
import io  # noqa: E402
import time  # noqa: E402
import zoneinfo  # noqa: E402

import kiln  # noqa: F401  (kiln.http: outbound HTTP through the host)

from typing import List, Tuple

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.script import Failure, FailureKind

FILENAME = "script.py"
# The files whose frames a traceback keeps: the script's own (a bundle's
# paths, once one runs).
SCRIPT_FILES = {FILENAME}
# Marks a bundle's compiled form (see `compile_bundle`).
BUNDLE_TAG = "kiln-bundle-1"


def syntax_failure(error: SyntaxError) -> Failure:
    message = f"SyntaxError: {error.msg}"
    return Failure(FailureKind.SYNTAX, message, None, error.lineno, error.offset)


def runtime_failure(error: BaseException) -> Failure:
    # Keep only the script's frames: the runtime's own are noise to the user.
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename not in SCRIPT_FILES:
        tb = tb.tb_next
    stack = "".join(traceback.format_exception(type(error), error, tb)).rstrip()
    text = str(error)
    message = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return Failure(FailureKind.RUNTIME, message, stack, None, None)


def _read_time_zones():
    """The IANA time zone database from the `tzdata` package, read while the
    runtime is built: a script has no file system to find it in."""
    import importlib.resources
    import tzdata

    zones = {}

    def walk(node, prefix):
        for child in node.iterdir():
            if child.is_dir():
                walk(child, f"{prefix}{child.name}/")
            elif not child.name.endswith(".py"):
                data = child.read_bytes()
                if data.startswith(b"TZif"):
                    zones[prefix + child.name] = data

    walk(importlib.resources.files("tzdata").joinpath("zoneinfo"), "")
    return tzdata.IANA_VERSION, zones


TZDATA_VERSION, _TIME_ZONES = _read_time_zones()


def _load_tzdata(key):
    try:
        return io.BytesIO(_TIME_ZONES[key])
    except (KeyError, TypeError):
        raise zoneinfo.ZoneInfoNotFoundError(f"No time zone found with key {key}") from None


# zoneinfo looks in TZPATH (none here), then asks `load_tzdata`.
zoneinfo.reset_tzpath(to=[])
zoneinfo._common.load_tzdata = _load_tzdata
zoneinfo.available_timezones = lambda: set(_TIME_ZONES)


class _Clock:
    """What Kiln's event loop waits on. The sandbox has no file descriptors
    to watch, so waiting means sleeping until the next timer (a WASI clock
    wait: the run's deadline still applies)."""

    def select(self, timeout=None):
        if timeout is None:
            raise RuntimeError(
                "the event loop has nothing left to run: a coroutine awaits something "
                "no callback or timer will complete"
            )
        if timeout > 0:
            time.sleep(timeout)
        return []

    def get_map(self):
        return {}

    def close(self):
        pass


class KilnEventLoop(asyncio.BaseEventLoop):
    """asyncio's loop without sockets: callbacks, timers, tasks and futures
    (sleep, gather, wait_for, timeout) work; anything that needs a socket, a
    pipe or a thread fails as it would without them."""

    def __init__(self):
        super().__init__()
        self._selector = _Clock()

    def _process_events(self, event_list):
        pass

    def _write_to_self(self):
        pass


# `asyncio.run` and `asyncio.new_event_loop` in a script make Kiln's loop
# (the default one needs a socket pair to start).
asyncio.events.new_event_loop = KilnEventLoop
asyncio.new_event_loop = KilnEventLoop


def drive(coroutine):
    """Runs an async main to completion on Kiln's event loop."""
    with asyncio.Runner(loop_factory=KilnEventLoop) as runner:
        return runner.run(coroutine)


def compile_script(source: str, filename=FILENAME, package=None, bundle=frozenset()):
    try:
        tree = ast.parse(source, filename)
        check_imports(tree, filename, package, bundle)
        return compile(tree, filename, "exec")
    except SyntaxError as error:
        failure = syntax_failure(error)
        if filename != FILENAME:
            failure.message += f" (in {filename})"
        raise Err(failure)
    except ValueError as error:  # e.g. a NUL character in the source
        raise Err(Failure(FailureKind.SYNTAX, f"SyntaxError: {error} (in {filename})", None, None, None))


def available(name: str) -> bool:
    """Whether `import name` can work here: only modules imported while the
    runtime was built exist (this module's imports, and what they import),
    besides those compiled into the interpreter."""
    return name in sys.modules or name in sys.builtin_module_names


class _Imports(ast.NodeVisitor):
    """The imports a script makes unconditionally: one inside a `try` may
    be guarded (`except ImportError`), one under an `if` may never run, so
    both are left to run time."""

    def __init__(self):
        self.found = []

    def visit_Try(self, node):
        for part in node.handlers + node.orelse + node.finalbody:
            self.visit(part)

    visit_TryStar = visit_Try

    def visit_If(self, node):
        # `if TYPE_CHECKING:` and other conditional imports may never run.
        pass

    def visit_Import(self, node):
        self.found.append(node)

    def visit_ImportFrom(self, node):
        self.found.append(node)


def check_imports(tree, filename, package, bundle):
    """Refuses, before anything runs, an import of a module neither this
    runtime nor the bundle has, naming the module, the file and the line.
    `package` is the package a bundle's module is in (for relative
    imports); `bundle` the module names the bundle defines."""
    imports = _Imports()
    imports.visit(tree)
    where = "" if filename == FILENAME else f" (in {filename})"

    def refuse(node, message):
        raise Err(Failure(FailureKind.SYNTAX, message + where, None, node.lineno, node.col_offset + 1))

    for node in imports.found:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif node.level:
            if not package:
                refuse(node, "ImportError: attempted relative import with no known parent package: "
                             "a script's entry (or a one-file script) is not in a package; import "
                             "a bundle's modules by their full name")
            try:
                names = [importlib.util.resolve_name("." * node.level + (node.module or ""), package)]
            except ImportError as error:
                refuse(node, f"ImportError: {error}")
        else:
            names = [node.module]
        for name in names:
            if not available(name) and name not in bundle:
                holders = "neither the script's files nor Kiln's Python runtime include" if bundle \
                    else "Kiln's Python runtime does not include"
                refuse(node, f"ModuleNotFoundError: No module named {name!r}: {holders} it")


def module_of(path: str):
    """The module a bundle's file defines: `pkg/mod.py` is `pkg.mod`,
    `pkg/__init__.py` the package `pkg`; `None` for anything else."""
    if not path.endswith(".py"):
        return None
    parts = path[:-3].split("/")
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    if not parts or not all(part.isidentifier() for part in parts):
        return None
    return ".".join(parts), is_package


def compile_bundle(entry: str, files):
    """Compiles a script of several files: the entry, and every module and
    package of the bundle (a directory without `__init__.py` is a namespace
    package, as on disk). Modules are compiled whether or not the entry
    imports them, so an error anywhere is found at upload."""
    sources = dict(files)
    if entry not in sources or not entry.endswith(".py"):
        raise Err(Failure(FailureKind.SYNTAX,
                          f"the entry {entry!r} is not one of the bundle's .py files", None, None, None))
    modules = {}
    for path in sorted(sources):
        found = module_of(path)
        if found is None or path == entry:
            continue
        name, is_package = found
        top = name.split(".")[0]
        if available(top):
            raise Err(Failure(FailureKind.SYNTAX,
                              f"ImportError: {path} would define {top!r}, which is a module of Kiln's "
                              "Python runtime: rename it", None, None, None))
        modules[name] = (path, is_package)
        parts = name.split(".")
        for depth in range(1, len(parts)):
            modules.setdefault(".".join(parts[:depth]), (None, True))
    bundle = frozenset(modules)
    compiled = []
    for name, (path, is_package) in sorted(modules.items()):
        code = None
        if path is not None:
            package = name if is_package else name.rpartition(".")[0]
            code = compile_script(sources[path], path, package, bundle)
        compiled.append((name, path, is_package, code))
    entry_code = compile_script(sources[entry], entry, None, bundle)
    return (BUNDLE_TAG, entry, compiled, entry_code)


class _BundleImporter(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves a bundle's modules from their compiled code, ahead of
    everything else on `sys.meta_path` (a bundle cannot redefine one of the
    runtime's modules: `compile_bundle` refuses that)."""

    def __init__(self, modules):
        self.modules = {name: (path, is_package, code) for name, path, is_package, code in modules}

    def find_spec(self, fullname, path=None, target=None):
        found = self.modules.get(fullname)
        if found is None:
            return None
        origin, is_package, code = found
        spec = importlib.machinery.ModuleSpec(fullname, self, origin=origin, is_package=is_package)
        spec.has_location = code is not None
        return spec

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        path, _, code = self.modules[module.__name__]
        if code is not None:
            exec(code, module.__dict__)


class Script(exports.Script):
    def compile(self, source: str) -> bytes:
        return marshal.dumps(compile_script(source))

    def compile_bundle(self, entry: str, files) -> bytes:
        return marshal.dumps(compile_bundle(entry, [(f.path, f.text) for f in files]))

    def run(self, code: bytes, params: str, env: List[Tuple[str, str]]) -> str:
        global SCRIPT_FILES
        try:
            code = marshal.loads(code)
        except Exception as error:  # not what `compile` returned
            raise Err(Failure(FailureKind.RUNTIME, f"not compiled by this runtime: {error}", None, None, None))
        filename = FILENAME
        if isinstance(code, tuple) and code[:1] == (BUNDLE_TAG,):
            _, filename, modules, code = code
            sys.meta_path.insert(0, _BundleImporter(modules))
            SCRIPT_FILES = {filename} | {path for _, path, _, _ in modules if path}
        os.environ.clear()
        os.environ.update(dict(env))
        try:
            arguments = json.loads(params)
            namespace = {"__name__": "__main__", "__file__": filename}
            exec(code, namespace)
            main = namespace.get("main")
            if not callable(main):
                raise Err(Failure(
                    FailureKind.SYNTAX,
                    "the script has no entry point: define `def main(**params)` "
                    "(or `async def main(**params)`) at the top level",
                    None, None, None,
                ))
            result = main(**arguments)
            if inspect.iscoroutine(result):
                result = drive(result)
            return json.dumps(result)
        except Err:
            raise
        except SystemExit as error:
            if error.code in (None, 0):
                return "null"
            raise Err(runtime_failure(error))
        except BaseException as error:
            raise Err(runtime_failure(error))
        finally:
            sys.stdout.flush()
            sys.stderr.flush()


# The snapshot is taken after this module has run, so everything done here is
# done once, not per execution. Running the whole run path a few times leaves
# its caches filled and its bytecode specialized in the snapshot; freezing the
# heap keeps the collector from walking (and so dirtying) snapshot objects.
# Both cut the pages a warm run writes, which is most of its cost.
_WARM_UP = Script().compile("def main(name):\n    return {'ok': name}\n")
for _ in range(3):
    Script().run(_WARM_UP, '{"name": "warm"}', [("KILN_WARM_UP", "1")])
os.environ.clear()
del _WARM_UP
gc.collect()
gc.freeze()
