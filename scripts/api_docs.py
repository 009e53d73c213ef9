"""Write docs/API.md, the wallet's API reference, from protos/ and the comments in them.

    .venv/bin/python scripts/api_docs.py > docs/API.md    # refresh the page
    .venv/bin/python scripts/api_docs.py --check          # exit 1 when docs/API.md is stale

protoc (grpcio-tools, the compiler the build hook uses) compiles every .proto under protos/
with source info, so each comment written in the contract reaches the page: the file's
header (money, idempotency, errors), the service, every RPC, message, field, enum and value.
The page depends on the protos alone (declaration order, no dates or paths of this machine),
so tests/project/test_contracts.py regenerates it and fails when the committed copy differs.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "protos"
PAGE = ROOT / "docs" / "API.md"
REFRESH = ".venv/bin/python scripts/api_docs.py > docs/API.md"

# Field numbers of descriptor.proto, the steps of a SourceCodeInfo location path.
FILE_SYNTAX, FILE_MESSAGE, FILE_ENUM, FILE_SERVICE = 12, 4, 5, 6
MESSAGE_FIELD, MESSAGE_NESTED, MESSAGE_ENUM = 2, 3, 4
ENUM_VALUE, SERVICE_METHOD = 2, 2

FDP = descriptor_pb2.FieldDescriptorProto
SCALARS = {
    FDP.TYPE_DOUBLE: "double", FDP.TYPE_FLOAT: "float", FDP.TYPE_INT64: "int64",
    FDP.TYPE_UINT64: "uint64", FDP.TYPE_INT32: "int32", FDP.TYPE_FIXED64: "fixed64",
    FDP.TYPE_FIXED32: "fixed32", FDP.TYPE_BOOL: "bool", FDP.TYPE_STRING: "string",
    FDP.TYPE_BYTES: "bytes", FDP.TYPE_UINT32: "uint32", FDP.TYPE_SFIXED32: "sfixed32",
    FDP.TYPE_SFIXED64: "sfixed64", FDP.TYPE_SINT32: "sint32", FDP.TYPE_SINT64: "sint64",
}


def compile_protos(proto_root: Path = PROTO_ROOT) -> descriptor_pb2.FileDescriptorSet:
    """Every .proto under `proto_root`, compiled with its comments (imports left out)."""
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(proto_root.rglob("*.proto"))
    if not protos:
        raise SystemExit(f"api_docs: no .proto files under {proto_root}")
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "descriptors.binpb"
        args = ["grpc_tools.protoc", f"-I{proto_root}", f"-I{well_known}",
                "--include_source_info", f"--descriptor_set_out={out}", *map(str, protos)]
        if protoc.main(args) != 0:
            raise SystemExit("api_docs: protoc failed; see the messages above")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


# --- text --------------------------------------------------------------------------------


def _escape(text: str, *, in_table: bool) -> str:
    """Markdown-safe prose. Outside `code spans`, a < that could open an HTML tag becomes
    &lt; (a comment's "<wallet id>" would otherwise vanish as a tag) and a > starting the
    text is escaped (it would quote); in a table, | is escaped too."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):  # even parts are outside code spans
        parts[i] = re.sub(r"<(?=[A-Za-z/!?])", "&lt;", parts[i])
    joined = re.sub(r"^>", r"\\>", "`".join(parts))
    return joined.replace("|", "\\|") if in_table else joined


def _paragraphs(raw: str) -> list[list[str]]:
    """A comment's paragraphs, each a list of its lines with the indentation stripped."""
    paragraphs: list[list[str]] = [[]]
    for line in raw.splitlines():
        if line.strip():
            paragraphs[-1].append(line.strip())
        elif paragraphs[-1]:
            paragraphs.append([])
    return [p for p in paragraphs if p]


class Comments:
    """The comments of one file, by the location path of what they are attached to."""

    def __init__(self, file: descriptor_pb2.FileDescriptorProto) -> None:
        self._by_path = {tuple(loc.path): loc for loc in file.source_code_info.location}

    def raw(self, *path: int) -> str:
        loc = self._by_path.get(path)
        if loc is None:
            return ""
        return "\n\n".join(c for c in (loc.leading_comments, loc.trailing_comments) if c.strip())

    def block(self, *path: int) -> str:
        """The comment as Markdown paragraphs (source line breaks kept)."""
        return "\n\n".join("\n".join(_escape(line, in_table=False) for line in p)
                           for p in _paragraphs(self.raw(*path)))

    def cell(self, *path: int) -> str:
        """The comment on one line, for a table cell."""
        text = " ".join(line for p in _paragraphs(self.raw(*path)) for line in p)
        return _escape(text, in_table=True)


def _row(*cells: str) -> str:
    return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"


def anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to -."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


# --- the page ----------------------------------------------------------------------------


class Page:
    """Renders a FileDescriptorSet. Types declared in it are linked to their section."""

    def __init__(self, files: descriptor_pb2.FileDescriptorSet) -> None:
        self.files = list(files.file)
        self.links = {full_name: anchor(title) for file in self.files
                      for full_name, title, _, _ in self._types(file)}
        self.anchors: list[str] = []

    def heading(self, level: int, title: str) -> list[str]:
        self.anchors.append(anchor(title))
        return [f"{'#' * level} {title}", ""]

    def _types(self, file: descriptor_pb2.FileDescriptorProto) -> Iterator[
            tuple[str, str, tuple[int, ...], descriptor_pb2.DescriptorProto
                  | descriptor_pb2.EnumDescriptorProto]]:
        """(full name, title, location path, descriptor) of every message and enum declared
        in `file`, nested ones after their parent; map entries are shown as map<>, not here."""
        def walk(prefix: str, messages: list[descriptor_pb2.DescriptorProto],
                 enums: list[descriptor_pb2.EnumDescriptorProto], path: tuple[int, ...],
                 message_step: int, enum_step: int) -> Iterator[
                tuple[str, str, tuple[int, ...], descriptor_pb2.DescriptorProto
                      | descriptor_pb2.EnumDescriptorProto]]:
            for i, message in enumerate(messages):
                if message.options.map_entry:
                    continue
                title = f"{prefix}{message.name}"
                here = (*path, message_step, i)
                yield f"{file.package}.{title}", title, here, message
                yield from walk(f"{title}.", list(message.nested_type),
                                list(message.enum_type), here, MESSAGE_NESTED, MESSAGE_ENUM)
            for i, enum in enumerate(enums):
                title = f"{prefix}{enum.name}"
                yield f"{file.package}.{title}", title, (*path, enum_step, i), enum

        yield from walk("", list(file.message_type), list(file.enum_type), (), FILE_MESSAGE,
                        FILE_ENUM)

    def type_ref(self, type_name: str) -> str:
        name = type_name.lstrip(".")
        if name in self.links:
            return f"[{name.rsplit('.', 1)[-1]}](#{self.links[name]})"
        return f"`{name}`"

    def field_type(self, field: descriptor_pb2.FieldDescriptorProto,
                   message: descriptor_pb2.DescriptorProto) -> str:
        if field.type_name:
            entry = next((m for m in message.nested_type if m.options.map_entry
                          and field.type_name.endswith(f".{message.name}.{m.name}")), None)
            if entry is not None:  # keys are scalars; "<" before a backtick opens no tag
                key, value = entry.field
                if not value.type_name:
                    return f"`map<{SCALARS[key.type]}, {SCALARS[value.type]}>`"
                return f"map<`{SCALARS[key.type]}`, {self.field_type(value, entry)}>"
            shown = self.type_ref(field.type_name)
        else:
            shown = f"`{SCALARS[field.type]}`"
        if field.label == FDP.LABEL_REPEATED:
            return f"repeated {shown}"
        if field.proto3_optional:
            return f"optional {shown}"
        if field.HasField("oneof_index"):
            return f"{shown} (oneof `{message.oneof_decl[field.oneof_index].name}`)"
        return shown

    def render(self) -> str:
        names = ", ".join(f"`{f.name}`" for f in self.files)
        lines = [f"# API reference: {', '.join(sorted({f.package for f in self.files}))}", "",
                 f"Generated from {names} and its comments by `scripts/api_docs.py`: "
                 f"do not edit by hand. After a change to the protos, refresh it with "
                 f"`{REFRESH}` (the project tests fail while it is stale).", ""]
        for file in self.files:
            lines += self._file(file)
        # GitHub numbers a repeated anchor (-1, -2): a link to the second would land on the first.
        repeated = sorted({a for a in self.anchors if self.anchors.count(a) > 1})
        if repeated:
            raise SystemExit(f"api_docs: two headings share the anchors {repeated}")
        return "\n".join(lines).rstrip("\n") + "\n"

    def _file(self, file: descriptor_pb2.FileDescriptorProto) -> list[str]:
        comments = Comments(file)
        lines: list[str] = []
        if header := comments.block(FILE_SYNTAX):
            lines += [*self.heading(2, "Overview"), header, ""]
        for s, service in enumerate(file.service):
            lines += [*self.heading(2, service.name),
                      f"Service `{file.package}.{service.name}`.", ""]
            if text := comments.block(FILE_SERVICE, s):
                lines += [text, ""]
            for m, method in enumerate(service.method):
                request = ("stream " if method.client_streaming else "") + self.type_ref(
                    method.input_type)
                response = ("stream " if method.server_streaming else "") + self.type_ref(
                    method.output_type)
                lines += [*self.heading(3, method.name), f"{request} → {response}", ""]
                if text := comments.block(FILE_SERVICE, s, SERVICE_METHOD, m):
                    lines += [text, ""]
        messages = [t for t in self._types(file) if isinstance(t[3], descriptor_pb2.DescriptorProto)]
        enums = [t for t in self._types(file)
                 if isinstance(t[3], descriptor_pb2.EnumDescriptorProto)]
        if messages:
            lines += self.heading(2, "Messages")
        for _, title, path, message in messages:
            assert isinstance(message, descriptor_pb2.DescriptorProto)
            lines += self.heading(3, title)
            if text := comments.block(*path):
                lines += [text, ""]
            if not message.field:
                lines += ["No fields.", ""]
                continue
            lines += ["| field | number | type | comment |", "|---|---|---|---|"]
            lines += [_row(f"`{field.name}`", str(field.number), self.field_type(field, message),
                           comments.cell(*path, MESSAGE_FIELD, i))
                      for i, field in enumerate(message.field)]
            lines.append("")
        if enums:
            lines += self.heading(2, "Enums")
        for _, title, path, enum in enums:
            assert isinstance(enum, descriptor_pb2.EnumDescriptorProto)
            lines += self.heading(3, title)
            if text := comments.block(*path):
                lines += [text, ""]
            lines += ["| value | number | comment |", "|---|---|---|"]
            lines += [_row(f"`{value.name}`", str(value.number), comments.cell(*path, ENUM_VALUE, i))
                      for i, value in enumerate(enum.value)]
            lines.append("")
        return lines


def render(proto_root: Path = PROTO_ROOT) -> str:
    """The reference page for the protos under `proto_root`."""
    return Page(compile_protos(proto_root)).render()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help=f"compare with {PAGE.relative_to(ROOT)} instead of printing")
    args = parser.parse_args(argv)
    page = render()
    if not args.check:
        sys.stdout.write(page)
        return 0
    current = PAGE.read_text() if PAGE.exists() else ""
    if current == page:
        return 0
    diff = difflib.unified_diff(current.splitlines(), page.splitlines(), "docs/API.md",
                                "generated", lineterm="", n=1)
    sys.stderr.write("\n".join(list(diff)[:40]) + f"\n\ndocs/API.md is stale: run `{REFRESH}`\n")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
