#!/usr/bin/env python3
"""Fails when the modules of a crate import each other, directly or around a loop.

Each crate's modules must form a tree (a DAG): `a` uses `b` means `b` never uses `a`, by
`crate::`, `super::` or a `mod` declaration (a parent module declaring a child uses it).
Test modules (`#[cfg(test)]` onwards) are left out: tests may reach anywhere.

`cargo modules dependencies --acyclic` checks the same, but building cargo-modules (it
links rust-analyzer) costs a fresh machine more than ten minutes; this reads `use` paths,
which is all the rule needs.

    tests/module_graph.py [CRATE_SRC_DIR...]   (default: every crate of the workspace)
"""

import os
import re
import sys

CRATES = ["api/src", "process/src", "operator/src", "receiver/src", "tests/src"]


def module_of(src_dir, path):
    rel = os.path.relpath(path, src_dir)[:-3]
    if rel.endswith("/mod"):
        rel = rel[: -len("/mod")]
    return rel.replace("/", "::")


def exists(src_dir, parts):
    base = os.path.join(src_dir, *parts)
    return os.path.exists(base + ".rs") or os.path.exists(os.path.join(base, "mod.rs"))


def imports(src_dir, name, text):
    """The crate's modules that module `name` (source `text`) uses."""
    text = text.split("#[cfg(test)]")[0]
    text = re.sub(r"//[^\n]*", "", text)
    used = set()
    for path in re.findall(r"\bcrate::([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)", text):
        parts = path.split("::")
        for k in range(len(parts), 0, -1):
            if exists(src_dir, parts[:k]):
                used.add("::".join(parts[:k]))
                break
    parent = name.rsplit("::", 1)[0] if "::" in name else ""
    for child in re.findall(r"\bsuper::([a-z_][a-z0-9_]*)", text):
        candidate = f"{parent}::{child}" if parent else child
        used.add(candidate if exists(src_dir, candidate.split("::")) else parent)
    for child in re.findall(r"^\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*;", text, re.M):
        used.add(f"{name}::{child}")
    used.discard(name)
    used.discard("")
    return used


def graph(src_dir):
    edges = {}
    for root, _, files in os.walk(src_dir):
        for f in sorted(files):
            if not f.endswith(".rs"):
                continue
            path = os.path.join(root, f)
            name = module_of(src_dir, path)
            if name in ("lib", "main"):
                continue
            with open(path, encoding="utf-8") as fh:
                edges[name] = imports(src_dir, name, fh.read())
    return edges


def cycle(edges):
    """One loop of modules, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def main():
    dirs = sys.argv[1:] or [d for d in CRATES if os.path.isdir(d)]
    failed = False
    for src_dir in dirs:
        edges = graph(src_dir)
        loop = cycle(edges)
        if loop:
            failed = True
            print(f"{src_dir}: modules import each other: {' -> '.join(loop)}", file=sys.stderr)
        else:
            print(f"{src_dir}: {len(edges)} modules, no import loop")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
