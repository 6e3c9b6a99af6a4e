#!/usr/bin/env python3
"""Writes the option tables of the docs from each binary's --help.

    scripts/gen-option-docs.py BUILD_DIR [--check] [DOC ...]

Between marker lines in a Markdown file

    <!-- BEGIN OPTIONS keycast-send -->  ...  <!-- END OPTIONS keycast-send -->
    <!-- BEGIN USAGE keycast-ctl -->    ...  <!-- END USAGE keycast-ctl -->

OPTIONS becomes a table of every option (name, default, meaning) and USAGE
the text --help prints before its options, both taken from the binary
built in BUILD_DIR. Without --check the docs are rewritten in place; with
--check nothing is written and any difference is printed as a unified diff
(exit status 1). Either way, a --name anywhere in a doc that is no option of
the four binaries (nor of another program listed in OTHER_PROGRAMS) is
reported, and fails --check. DOC defaults to README.md and every docs/*.md.
Exit status 2: a binary is not found in BUILD_DIR, or a marker is not closed.

--help is Boost.Program_options' text: an option line starts with two
spaces and '-'; its description starts at one column shared by the whole
listing and wraps onto lines indented to that column.
"""
import difflib
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARK = re.compile(r"^<!-- BEGIN (OPTIONS|USAGE) (\S+) -->$")
BINARIES = ("keycast-send", "keycast-recv", "keycast-keyd", "keycast-ctl")
# Options the docs name that belong to other programs. Any other --name in
# the docs must be an option of one of BINARIES, so a renamed or removed
# option cannot live on in the prose.
OTHER_PROGRAMS = {
    "--file-prefix": "DPDK EAL", "--in-memory": "DPDK EAL", "--no-huge": "DPDK EAL",
    "--no-pci": "DPDK EAL", "--vdev": "DPDK EAL", "--log-level": "DPDK EAL",
    "--build": "cmake", "--install": "cmake", "--now": "systemctl",
    "--setup": "dpdk-hugepages.py", "--status": "dpdk-hugepages.py",
    "--seconds": "bench_keyd", "--clients": "bench_keyd", "--max-clients": "bench_keyd", "--gtest": "GoogleTest (--gtest_filter)",
    "--cflags": "pkg-config", "--libs": "pkg-config", "--list-sas": "swanctl", "--syslog": "DPDK EAL",
}


class DocError(Exception):
    pass


def find_binary(build, name):
    for sub in ("", "dataplane", "keyplane"):
        p = Path(build) / sub / name
        if p.is_file() and os.access(p, os.X_OK):
            return p
    raise DocError(f"{name}: not built in {build}")


def run_help(path):
    # --help must not depend on the caller's terminal or locale.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
    r = subprocess.run([str(path), "--help"], capture_output=True, text=True, env=env, timeout=30)
    if r.returncode != 0:
        raise DocError(f"{path} --help: exit {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def parse_help(text):
    """Returns (usage lines, [(names, arg, default, meaning)])."""
    lines = text.rstrip("\n").split("\n")
    first = next((i for i, l in enumerate(lines) if l.startswith("  -")), None)
    if first is None:
        raise DocError("no option lines in --help")
    # The description column: where the text after an option's spec starts,
    # the most common such column (a long spec pushes its text to the next line).
    cols = {}
    for l in lines[first:]:
        m = re.match(r"^(  -\S.*?)\s{2,}\S", l)
        if m:
            c = m.end() - 1
            cols[c] = cols.get(c, 0) + 1
    col = max(cols, key=lambda c: (cols[c], -c))
    usage = lines[:first]
    while usage and not usage[-1].strip():
        usage.pop()
    opts = []
    for l in lines[first:]:
        if l.startswith("  -"):
            spec, text = (l[:col].strip(), l[col:]) if len(l) > col and l[col - 1] == " " else (l.strip(), "")
            opts.append([spec, [text] if text else []])
        elif l.startswith(" " * col) and opts:
            opts[-1][1].append(l[col:])
        # any other line is another group's caption: its options join the same table
    opts = [(spec, join_wrapped(parts, LINE_WIDTH - col)) for spec, parts in opts]
    rows = []
    for spec, text in opts:
        # "-h [ --help ]", "--listen arg (=127.0.0.1:7400)", "--next"
        m = re.match(r"^(?:(-\w) \[ )?(--[\w-]+)(?: \])?(?: ([^\s(]\S*))?(?: \(=(.*)\))?$", spec)
        if not m:
            raise DocError(f"cannot read the option '{spec}'")
        short, long_, arg, default = m.groups()
        rows.append(([long_] + ([short] if short else []), arg or "", default or "", text))
    return usage, rows


# Boost fills --help lines up to its default line length (80) less one.
LINE_WIDTH = 79


def join_wrapped(parts, width):
    """Undoes Boost's wrapping. A line broken at a space loses that space;
    Boost chops a word only when it fills half the width or more, at a full
    line, so a full line ending in such a long word continues it unbroken."""
    text = ""
    for i, part in enumerate(parts):
        part = part.rstrip(" ") if i == len(parts) - 1 else part
        if i == 0:
            text = part
            continue
        prev = parts[i - 1]
        chopped = len(prev) >= width and not prev.endswith(" ") and len(prev.split(" ")[-1]) >= width // 2
        text = text.rstrip(" ") + ("" if chopped else " ") + part.strip(" ")
    return text.strip(" ")


def cell(s):
    return s.replace("|", "\\|")


def code(s):
    return f"`{cell(s)}`" if s else ""


def render(kind, name, help_text):
    usage, rows = parse_help(help_text)
    if kind == "USAGE":
        body = [l for l in usage if l.strip()]
        if body and re.match(r"^\w[\w ]*:$", body[-1]):  # the caption of the option list
            body.pop()
        return ["```"] + body + ["```"]
    out = [f"| option | default | meaning (`{name} --help`) |", "|---|---|---|"]
    for names, arg, default, text in rows:
        opt = ", ".join(code(n + (" " + arg if arg and i == 0 else "")) for i, n in enumerate(names))
        out.append(f"| {opt} | {code(default)} | {cell(text)} |")
    return out


def regenerate(doc_text, build, cache):
    out, lines, i = [], doc_text.split("\n"), 0
    while i < len(lines):
        out.append(lines[i])
        m = MARK.match(lines[i])
        i += 1
        if not m:
            continue
        kind, name = m.groups()
        end = f"<!-- END {kind} {name} -->"
        try:
            j = lines.index(end, i)
        except ValueError:
            raise DocError(f"'{lines[i - 1]}' has no '{end}'")
        if name not in cache:
            cache[name] = run_help(find_binary(build, name))
        out += render(kind, name, cache[name])
        out.append(end)
        i = j + 1
    return "\n".join(out)


def option_names(help_text):
    return {n for names, *_ in parse_help(help_text)[1] for n in names if n.startswith("--")}


def unknown_options(doc_text, known):
    """--names in a doc that no binary and no program in OTHER_PROGRAMS has."""
    found = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", doc_text))
    return sorted(found - known - set(OTHER_PROGRAMS))


def main(argv):
    args = [a for a in argv if a != "--check"]
    check = len(args) != len(argv)
    if not args or args[0].startswith("-"):
        print(__doc__.strip().split("\n")[2].strip(), file=sys.stderr)
        return 2
    build, docs = args[0], [Path(a) for a in args[1:]] or [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    cache, differ = {}, False
    try:
        for b in BINARIES:
            cache[b] = run_help(find_binary(build, b))
        # --version is answered before the option parser of send and recv.
        known = {"--version"}.union(*(option_names(h) for h in cache.values()))
        for doc in docs:
            old = doc.read_text()
            new = regenerate(old, build, cache)
            stale = unknown_options(new, known)
            if stale:
                differ = True
                print(f"{doc}: names options no keycast binary has: {' '.join(stale)}")
            if new == old:
                continue
            differ = True
            if check:
                sys.stdout.writelines(difflib.unified_diff(
                    old.splitlines(True), new.splitlines(True), f"{doc} (in the tree)", f"{doc} (from --help)"))
            else:
                doc.write_text(new)
                print(f"updated {doc}")
    except DocError as e:
        print(f"gen-option-docs: {e}", file=sys.stderr)
        return 2
    if differ and check:
        print("gen-option-docs: the docs differ from --help: run scripts/gen-option-docs.py BUILD_DIR "
              "(an option of another program: add it to OTHER_PROGRAMS there)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
