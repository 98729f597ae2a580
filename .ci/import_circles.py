#!/usr/bin/env python3
"""Fails when the files of a crate import each other in a circle.

Reads every `.rs` file under the given `src` folders, draws an edge from a file to each file
whose items it names through `crate::` (in `use` lines and in paths; comments and `#[cfg(test)]
mod tests` left out), resolving the crate root's re-exports (`crate::Cache` is `cache.rs`), and
prints every group of files that reach each other. Exit status 1 if there is one.
"""
import os
import re
import sys


def modules(src):
    found = {}
    for folder, _, names in os.walk(src):
        for name in names:
            if name.endswith(".rs"):
                path = os.path.join(folder, name)
                module = os.path.relpath(path, src)[:-3].replace("/mod", "").replace("/", "::")
                found["" if module == "lib" else module] = open(path, encoding="utf-8").read()
    return found


def code_of(text):
    text = text.split("#[cfg(test)]\nmod tests", 1)[0]
    return "\n".join(l for l in text.split("\n") if not l.strip().startswith("//"))


def resolver(files):
    reexported = {}
    for m in re.finditer(r"pub use ([\w:]+)::\{?([\w, ]+)\}?;", files.get("", "")):
        for name in m.group(2).split(","):
            reexported[name.strip()] = m.group(1)

    def resolve(path):
        parts = path.split("::")
        if parts[0] in reexported:
            parts = reexported[parts[0]].split("::") + parts[1:]
        for k in range(len(parts), 0, -1):
            if "::".join(parts[:k]) in files:
                return "::".join(parts[:k])
        return None

    return resolve


def named_paths(code):
    for use in re.finditer(r"use crate::([^;]+);", code):
        body = " ".join(use.group(1).split())
        grouped = re.match(r"(.*?)\{(.*)\}", body)
        if not grouped:
            yield body.split(" as ")[0]
            continue
        prefix = grouped.group(1).rstrip(":")
        for item in re.split(r",\s*", grouped.group(2)):
            item = item.strip().split(" as ")[0]
            if item:
                yield prefix if item == "self" else (f"{prefix}::{item}" if prefix else item)
    for path in re.finditer(r"crate::((?:\w+::)*\w+)", code):
        yield path.group(1)


def relative_paths(module, code):
    """`super::` paths, and paths through a child module this file declares, as crate paths."""
    parent = module.rsplit("::", 1)[0] if "::" in module else ""
    for path in re.finditer(r"\bsuper::((?:\w+::)*\w+)", code):
        yield f"{parent}::{path.group(1)}" if parent else path.group(1)
    children = re.findall(r"^\s*(?:pub(?:\([\w:]+\))? )?mod (\w+);", code, re.M)
    for child in children:
        for path in re.finditer(rf"(?<![\w:]){child}::((?:\w+::)*\w+)", code):
            yield f"{module}::{child}::{path.group(1)}" if module else f"{child}::{path.group(1)}"


def edges_of(files):
    resolve = resolver(files)
    edges = {m: set() for m in files}
    for module, text in files.items():
        code = code_of(text)
        for path in list(named_paths(code)) + list(relative_paths(module, code)):
            target = resolve(path)
            if target is not None and target != module:
                edges[module].add(target)
    return edges


def circles(edges):
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for v in edges:
        if v not in index:
            visit(v)
    return found


def main(sources):
    failed = False
    for src in sources:
        edges = edges_of(modules(src))
        for group in circles(edges):
            failed = True
            print(f"{src}: files that import each other: {', '.join(group)}")
            for module in group:
                print(f"  {module or 'lib'} -> {', '.join(sorted(e for e in edges[module] if e in group))}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
