"""Every relative link in README.md and docs/*.md resolves: the file (or folder) exists in the repository and
an #anchor names a heading of the target page, spelled as GitHub spells heading anchors. No ComfyUI needed."""
import re
import unicodedata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Pages that other branches of issue 25 add (the node spec; the training page's safety notes). Links to them are
# accepted while they are missing here; remove each from this list when its branch merges.

FENCE = re.compile(r"^ {0,3}(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^()\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\".*\")?\s*$")
HTML_LINK = re.compile(r"<(?:a|img)\s[^>]*?(?:href|src)=\"([^\"]+)\"", re.IGNORECASE)
HTML_ANCHOR = re.compile(r"<a\s[^>]*?(?:id|name)=\"([^\"]+)\"", re.IGNORECASE)
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _prose_lines(text: str):
    """(line number, line) outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def _heading_text(markdown: str) -> str:
    """The text GitHub renders for a heading: code spans keep their content, links and images their text,
    emphasis marks and HTML tags go."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", markdown)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"(`+)(.*?)\1", r"\2", text)
    return re.sub(r"(\*\*|__|\*|_(?=\W|$)|(?<=\W)_|~~)", "", text)


def github_slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, every character that is not a letter, digit, space, hyphen or
    underscore removed, each space made a hyphen."""
    kept = "".join(c for c in _heading_text(heading).strip().lower()
                   if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set:
    """Every anchor of a markdown page: heading slugs (a repeated slug gets -1, -2, ... as on GitHub) and
    explicit <a id/name> anchors."""
    found, counts = set(), {}
    for _, line in _prose_lines(path.read_text(encoding="utf-8")):
        found.update(HTML_ANCHOR.findall(line))
        heading = HEADING.match(line)
        if heading:
            slug = github_slug(heading.group(2))
            found.add(slug if slug not in counts else f"{slug}-{counts[slug]}")
            counts[slug] = counts.get(slug, 0) + 1
    return found


def links(path: Path):
    """(line number, target) of every link and image in a page's prose (code blocks and code spans left out)."""
    for number, line in _prose_lines(path.read_text(encoding="utf-8")):
        line = CODE_SPAN.sub("", line)
        for pattern in (INLINE_LINK, HTML_LINK):
            for target in pattern.findall(line):
                yield number, target
        definition = REFERENCE_DEFINITION.match(line)
        if definition:
            yield number, definition.group(1)


def broken_links(pages, repo: Path) -> list:
    """'page:line: target (why)' for every relative link of `pages` that does not resolve inside `repo`."""
    problems = []
    for page in pages:
        for number, target in links(page):
            if SCHEME.match(target) or target.startswith("//"):
                continue  # absolute URLs are not checked here (no network)
            path_part, _, anchor = target.partition("#")
            where = f"{page.relative_to(repo)}:{number}: {target}"
            resolved = (page.parent / path_part).resolve() if path_part else page
            try:
                relative = resolved.relative_to(repo).as_posix()
            except ValueError:
                problems.append(f"{where} (outside the repository)")
                continue
            if not resolved.exists():
                problems.append(f"{where} (no such file)")
            elif anchor and resolved.suffix != ".md":
                problems.append(f"{where} (an anchor into a file that is not markdown)")
            elif anchor and anchor not in anchors(resolved):
                problems.append(f"{where} (no heading or anchor '{anchor}' in {relative})")
    return problems


def _pages(repo: Path) -> list:
    return [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]


def test_every_relative_link_in_readme_and_docs_resolves():
    pages = _pages(REPO)
    assert len(pages) > 1, "no pages under docs/"
    problems = broken_links(pages, REPO)
    assert not problems, f"{len(problems)} broken links:\n" + "\n".join(problems)


@pytest.mark.parametrize("heading, slug", [
    ("Guidance cutoff: steps and low memory", "guidance-cutoff-steps-and-low-memory"),
    ("Python / diffusers", "python--diffusers"),
    ("`ETCSampler` (text-to-video)", "etcsampler-text-to-video"),
    ("What **V3** changed, and why", "what-v3-changed-and-why"),
    ("snake_case_name 2.0", "snake_case_name-20"),
    ("[Install](#install) now", "install-now"),
])
def test_github_slugs(heading, slug):
    assert github_slug(heading) == slug


def test_checker_finds_missing_files_and_anchors(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Top\n\n## Same\n\n## Same\n\n<a id=\"here\"></a>\n", encoding="utf-8")
    (tmp_path / "pic.png").write_bytes(b"")
    (tmp_path / "README.md").write_text(
        "[ok](docs/a.md) [ok](docs/a.md#same-1) [ok](docs/a.md#here) ![ok](pic.png) [ok](#readme) [web](https://x.y/z)\n"
        "# Readme\n"
        "[gone](docs/b.md) [bad anchor](docs/a.md#same-2) [png anchor](pic.png#x) [up](../outside.md)\n"
        "`[code](nowhere.md)`\n```\n[fenced](nowhere.md)\n```\n[ref]: docs/c.md\n",
        encoding="utf-8")
    problems = broken_links(_pages(tmp_path), tmp_path)
    targets = sorted(p.split(": ", 1)[1].split(" (")[0] for p in problems)
    assert targets == ["../outside.md", "docs/a.md#same-2", "docs/b.md", "docs/c.md", "pic.png#x"], problems
