"""Custom import-linter contracts for mlshift (loaded by ``lint-imports`` through ``.importlinter``).

import-linter's own wildcards replace whole module names, so "any module whose name starts with
an underscore" cannot be written as a forbidden contract; :class:`PublicOnlyContract` says it.
"""

from __future__ import annotations

from typing import Any

from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


def is_private(module: str) -> bool:
    """Whether a dotted module name has a private part (``_x``; dunders such as ``__main__`` are not)."""
    return any(p.startswith("_") and not (p.startswith("__") and p.endswith("__")) for p in module.split("."))


class PublicOnlyContract(Contract):
    """``source_modules`` import only public modules of ``package`` (no ``_private`` part).

    Configuration options:
        - source_modules: The packages held to it (each with its submodules).
        - package: The package whose private modules are off limits.
    """

    source_modules = fields.ListField(subfield=fields.ModuleField())
    package = fields.StringField()

    def check(self, graph: Any, verbose: bool) -> ContractCheck:
        broken: list[dict[str, Any]] = []
        package = str(self.package)
        for source in self.source_modules:
            modules = {source.name} | set(graph.find_descendants(source.name))
            for importer in sorted(modules):
                for imported in sorted(graph.find_modules_directly_imported_by(importer)):
                    inside = imported == package or imported.startswith(package + ".")
                    if inside and is_private(imported[len(package) :]):
                        lines = [
                            d["line_number"]
                            for d in graph.get_import_details(importer=importer, imported=imported)
                        ]
                        broken.append({"importer": importer, "imported": imported, "lines": lines})
        return ContractCheck(kept=not broken, metadata={"broken": broken})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for item in check.metadata["broken"]:
            where = ", ".join(f"l.{n}" for n in item["lines"])
            output.print_error(f"{item['importer']} imports {item['imported']} ({where})", bold=False)
            output.new_line()
