#!/usr/bin/env python3
"""Fails when the documentation has a broken internal link or its code map has drifted.

Run by `make lint` after `mdbook build` (tests/docs/mdbook.sh), from the repository root:

    tests/docs/check.py [--html target/book]

Links. In README.md and every page under docs/ (with the files a page pulls in through
mdBook's `{{#include}}`), every relative link must name a file or folder that exists, and a
`#fragment` on a link to a Markdown page (or on a link within the page) must be the id of a
heading of that page. Ids are made as mdBook 0.5 makes them (mdbook-html's
`id_from_content`: the heading's text lowercased, alphanumerics, `-` and `_` kept,
whitespace turned into `-`, the rest dropped; `-1`, `-2`, ... for a repeated id), which is
also how GitHub makes them for these headings. With `--html`, the ids computed for each page
of the book must be exactly those mdBook wrote into its HTML, so that a change of mdBook's
rule fails here rather than in a reader's browser. Links to the web are not followed.

Reachability. Every page under docs/ is listed in docs/SUMMARY.md, and every page is
reachable from README.md by following links.

Code map. The section "## Code map" of docs/development/architecture.md has one line per
module path, `- `path`: what it holds`: every `.rs` file and every module folder under
api/src, process/src, operator/src and receiver/src must have its line, and every line must
name a path that exists. Moving or adding a module means adding, moving or deleting that one
line.

Why no crate does this: mdbook-linkcheck 0.7.7 (its latest release) accepts only mdBook
^0.4 and refuses to run under 0.5; its maintained fork mdbook-linkcheck2 (0.13) runs under
0.5 but does not check fragments ("fragment resolution isn't implemented"), builds a web
client (reqwest, tokio) that the check does not need, and checks only the book, not the
README. This file needs nothing but Python's standard library.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

DOCS = "docs"
SUMMARY = "docs/SUMMARY.md"
ARCHITECTURE = "docs/development/architecture.md"
CODE_MAP_HEADING = "Code map"
SOURCE_TREES = ["api/src", "process/src", "operator/src", "receiver/src"]

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
CUSTOM_ID = re.compile(r"\s*\{#([^}\s]+)\}\s*$")
INCLUDE = re.compile(r"\{\{#include\s+([^}\s]+)\s*\}\}")
# [text](target) or [text](target "title"); images too. Nested brackets in the text are rare
# in these docs and not supported.
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
MAP_LINE = re.compile(r"^- `([^`]+)`(.*)$")


@dataclass
class Line:
    """A line of a page after includes are expanded, and where it came from."""

    text: str
    path: Path
    number: int


@dataclass
class Page:
    path: Path
    lines: list[Line]
    ids: list[str] = field(default_factory=list)


def id_from_content(content: str) -> str:
    """mdbook-html 0.5's `id_from_content`."""
    out = []
    for ch in content.strip().lower():
        if ch.isalnum() or ch in "_-":
            out.append(ch)
        elif ch.isspace():
            out.append("-")
    return "".join(out)


def unique_id(wanted: str, used: set[str]) -> str:
    """mdbook-html 0.5's `unique_id`."""
    if wanted not in used:
        used.add(wanted)
        return wanted
    n = 1
    while f"{wanted}-{n}" in used:
        n += 1
    used.add(f"{wanted}-{n}")
    return f"{wanted}-{n}"


def heading_text(markdown: str) -> str:
    """The text a heading renders to: code spans, links and emphasis reduced to their text."""
    parts = []
    last = 0
    for m in CODE_SPAN.finditer(markdown):
        parts.append(_plain(markdown[last : m.start()]))
        parts.append(m.group(2).strip() if m.group(2).strip() else m.group(2))
        last = m.end()
    parts.append(_plain(markdown[last:]))
    return html.unescape("".join(parts))


def _plain(text: str) -> str:
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"(\*\*|\*)(?=\S)(.+?)(?<=\S)\1", r"\2", text)
    text = re.sub(r"(?<!\w)(__|_)(?=\S)(.+?)(?<=\S)\1(?!\w)", r"\2", text)
    return text.replace("\\", "")


def read_lines(path: Path, root: Path, errors: list[str], depth: int = 0) -> list[Line]:
    """A page's lines with `{{#include}}` expanded as mdBook does (whole files and line ranges)."""
    out: list[Line] = []
    for number, text in enumerate(path.read_text().split("\n"), 1):
        m = INCLUDE.search(text)
        if m is None:
            out.append(Line(text, path, number))
            continue
        target, _, spec = m.group(1).partition(":")
        included = (path.parent / target).resolve()
        where = f"{rel(path, root)}:{number}"
        if not included.is_file():
            errors.append(f"{where}: included file {target} does not exist")
            continue
        if depth > 8:
            errors.append(f"{where}: includes nested too deep")
            continue
        if text[: m.start()].strip() or text[m.end() :].strip():
            errors.append(f"{where}: an include must stand on a line of its own")
        lines = read_lines(included, root, errors, depth + 1)
        if spec:
            bounds = spec.split(":")
            if len(bounds) > 2 or not all(b == "" or b.isdigit() for b in bounds):
                errors.append(f"{where}: include anchors ({spec}) are not supported here")
                continue
            if len(bounds) == 1:
                start = end = int(bounds[0])
            else:
                start = int(bounds[0]) if bounds[0] else 1
                end = int(bounds[1]) if bounds[1] else len(lines)
            lines = lines[start - 1 : end]
        out.extend(lines)
    return out


def rel(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def outside_code(lines: list[Line]):
    """Yields the lines outside fenced code blocks."""
    fence_char = None
    fence_len = 0
    for line in lines:
        m = FENCE.match(line.text)
        if m:
            mark = m.group(1)
            if fence_char is None:
                fence_char, fence_len = mark[0], len(mark)
                continue
            closing = mark[0] == fence_char and len(mark) >= fence_len
            if closing and not line.text.strip()[len(mark) :]:
                fence_char = None
                continue
        if fence_char is None:
            yield line


def paragraphs(lines: list[Line]):
    """Yields (lines, text) per run of non-blank lines outside code, code spans blanked out."""
    run: list[Line] = []
    for line in [*outside_code(lines), None]:
        if line is not None and line.text.strip():
            run.append(line)
            continue
        if run:
            text = "\n".join(ln.text for ln in run)
            yield run, CODE_SPAN.sub(lambda c: re.sub(r"[^\n]", " ", c.group(0)), text)
            run = []


def heading_ids(lines: list[Line]) -> list[str]:
    used: set[str] = set()
    ids = []
    for run, _ in paragraphs(lines):
        titles = []
        for i, line in enumerate(run):
            atx = ATX.match(line.text)
            if atx:
                titles.append(atx.group(2) or "")
            elif i == 1 and SETEXT.match(line.text) and is_plain(run[0].text):
                titles.append(run[0].text.strip())
        for title in titles:
            custom = CUSTOM_ID.search(title)
            if custom:
                used.add(custom.group(1))
                ids.append(custom.group(1))
            else:
                ids.append(unique_id(id_from_content(heading_text(title)), used))
    return ids


def is_plain(text: str) -> bool:
    """A line that a setext underline turns into a heading (not a list item, table row, ...)."""
    return not (ATX.match(text) or re.match(r"^\s*([|>*+-]|\d+[.)]\s)", text))


def links(lines: list[Line]):
    """Yields (line, target) for every link outside code, links across lines included."""
    for run, text in paragraphs(lines):
        starts = [0]
        for ln in run[:-1]:
            starts.append(starts[-1] + len(ln.text) + 1)
        def line_at(offset: int) -> Line:
            return run[max(i for i, s in enumerate(starts) if s <= offset)]
        for m in INLINE_LINK.finditer(text):
            yield line_at(m.start(1)), m.group(1)
        for m in re.finditer(r"(?m)^" + REFERENCE_DEF.pattern[1:], text):
            yield line_at(m.start(1)), m.group(1)


def is_external(target: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target)) or target.startswith("//")


class Checker:
    def __init__(self, root: Path):
        self.root = root.resolve()
        self.errors: list[str] = []
        self.pages: dict[Path, Page] = {}

    def page(self, path: Path) -> Page:
        path = path.resolve()
        if path not in self.pages:
            lines = read_lines(path, self.root, self.errors)
            self.pages[path] = Page(path, lines, heading_ids(lines))
        return self.pages[path]

    def markdown_files(self) -> list[Path]:
        files = [self.root / "README.md"]
        files += sorted((self.root / DOCS).rglob("*.md"))
        return [f.resolve() for f in files if f.is_file()]

    def check_links(self) -> dict[Path, set[Path]]:
        """Checks every link; returns which Markdown files each file links to."""
        graph: dict[Path, set[Path]] = {}
        for path in self.markdown_files():
            page = self.page(path)
            graph[path] = set()
            for line, target in links(page.lines):
                if not target or is_external(target):
                    continue
                where = f"{rel(line.path, self.root)}:{line.number}"
                raw_path, _, fragment = target.partition("#")
                file_part = urllib.parse.unquote(raw_path)
                if file_part:
                    resolved = (path.parent / file_part).resolve()
                    if not resolved.exists():
                        self.errors.append(
                            f"{where}: broken link {target}: {file_part} does not exist"
                        )
                        continue
                    try:
                        resolved.relative_to(self.root)
                    except ValueError:
                        self.errors.append(f"{where}: link {target} leaves the repository")
                        continue
                else:
                    resolved = path
                if resolved.suffix == ".md":
                    graph[path].add(resolved)
                    if fragment:
                        ids = self.page(resolved).ids
                        if urllib.parse.unquote(fragment) not in ids:
                            self.errors.append(
                                f"{where}: broken link {target}: no heading of "
                                f"{rel(resolved, self.root)} has the id {fragment!r}"
                                + (f" (ids: {', '.join(ids)})" if len(ids) <= 12 else "")
                            )
        return graph

    def summary_pages(self) -> list[Path]:
        summary = self.root / SUMMARY
        pages = []
        for line, target in links(self.page(summary).lines):
            if target and not is_external(target):
                file_part = urllib.parse.unquote(target.partition("#")[0])
                pages.append((summary.parent / file_part).resolve())
        return pages

    def check_reachability(self, graph: dict[Path, set[Path]]) -> None:
        docs = self.root / DOCS
        listed = set(self.summary_pages())
        for path in sorted((docs).rglob("*.md")):
            path = path.resolve()
            if path == (self.root / SUMMARY).resolve():
                continue
            if path not in listed:
                self.errors.append(f"{rel(path, self.root)}: not listed in {SUMMARY}")
        seen = set()
        todo = [(self.root / "README.md").resolve()]
        while todo:
            here = todo.pop()
            if here in seen:
                continue
            seen.add(here)
            todo.extend(graph.get(here, ()))
        for path in sorted(docs.rglob("*.md")):
            if path.resolve() not in seen:
                self.errors.append(f"{rel(path, self.root)}: not reachable from README.md by links")

    def check_html(self, book: Path) -> None:
        """The ids computed for each page are those mdBook wrote into its HTML."""
        docs = (self.root / DOCS).resolve()
        for path in self.summary_pages():
            out = book / path.relative_to(docs).with_suffix(".html")
            if not out.is_file():
                self.errors.append(f"{rel(path, self.root)}: mdBook wrote no {out}")
                continue
            written = re.findall(r"<h[1-6] id=\"([^\"]*)\"", out.read_text())
            written = [html.unescape(i) for i in written]
            computed = self.page(path).ids
            if written != computed:
                self.errors.append(
                    f"{rel(path, self.root)}: heading ids computed here differ from mdBook's "
                    f"({out}): only here {sorted(set(computed) - set(written))}, "
                    f"only in the HTML {sorted(set(written) - set(computed))}"
                )

    def check_code_map(self) -> None:
        arch = self.root / ARCHITECTURE
        if not arch.is_file():
            self.errors.append(f"{ARCHITECTURE}: missing (it holds the code map)")
            return
        mapped = self.code_map(arch)
        if not mapped:
            self.errors.append(
                f"{ARCHITECTURE}: no section \"## {CODE_MAP_HEADING}\" with `- `path`: ...` lines"
            )
            return
        actual = self.modules()
        for entry in sorted(actual - set(mapped)):
            kind = "module folder" if entry.endswith("/") else "source file"
            self.errors.append(
                f"{ARCHITECTURE}: the code map lacks the {kind} `{entry}`: "
                f"add `- `{entry}`: <what it holds>`"
            )
        for entry in sorted(set(mapped) - actual):
            self.errors.append(
                f"{ARCHITECTURE}:{mapped[entry]}: the code map names `{entry}`, which does not "
                "exist (moved or deleted? entries are paths from the repository root; folders "
                "end in /)"
            )

    def code_map(self, arch: Path) -> dict[str, int]:
        """The paths the code map lists, with the line of each."""
        section = None
        mapped: dict[str, int] = {}
        for line in outside_code(read_lines(arch, self.root, self.errors)):
            atx = ATX.match(line.text)
            if atx and len(atx.group(1)) <= 2:
                section = (atx.group(2) or "").strip()
                continue
            m = MAP_LINE.match(line.text) if section == CODE_MAP_HEADING else None
            if m is None:
                continue
            entry, where = m.group(1), f"{ARCHITECTURE}:{line.number}"
            if not re.match(r"^\s*[:\u2014-]\s*\S", m.group(2)):
                self.errors.append(
                    f"{where}: `{entry}` has no description (`- `path`: what it holds`)"
                )
            if entry in mapped:
                self.errors.append(f"{where}: `{entry}` is listed twice (line {mapped[entry]})")
            mapped[entry] = line.number
        return mapped

    def modules(self) -> set[str]:
        """Every .rs file and every folder under the source trees, as the code map names them."""
        found = set()
        for tree in SOURCE_TREES:
            base = self.root / tree
            for dirpath, _, filenames in os.walk(base):
                here = Path(dirpath)
                if here != base:
                    found.add(f"{here.relative_to(self.root)}/")
                found.update(
                    str((here / f).relative_to(self.root)) for f in filenames if f.endswith(".rs")
                )
        return found

    def run(self, book: Path | None) -> list[str]:
        graph = self.check_links()
        self.check_reachability(graph)
        if book is not None:
            self.check_html(book)
        self.check_code_map()
        return self.errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2])
    parser.add_argument(
        "--html", type=Path, help="the built book (target/book) to compare heading ids with"
    )
    args = parser.parse_args()
    errors = Checker(args.root).run(args.html)
    for error in errors:
        print(error, file=sys.stderr)
    if errors:
        print(f"docs: {len(errors)} problem(s)", file=sys.stderr)
        return 1
    print("docs: links, reachability and code map OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
