"""Tests of tests/docs/check.py on small repositories made in a temporary folder: a
broken file link, a broken anchor, a page left out, and a code map that has drifted each
fail; the same repository without the fault passes.

    python3 -m unittest discover -s tests/docs -p 'test_*.py'      (part of `make lint`)
"""

from __future__ import annotations

import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import check  # noqa: E402  (tests/docs/check.py)

GOOD = {
    "README.md": "# Project\n\nRead [the docs](docs/SUMMARY.md) and [the guide](docs/guide.md#the-webhook-resource).\n",
    "docs/SUMMARY.md": "# Summary\n\n- [Guide](guide.md)\n- [Architecture](development/architecture.md)\n",
    "docs/guide.md": (
        "# Guide\n\n## The `Webhook` resource\n\nSee [below](#the-operators-rbac), the\n"
        "[architecture, across a line\nbreak](development/architecture.md#code-map) and\n"
        "[a file](../src/a.rs).\n\n## The operator's RBAC\n\n## Overview\n\n## Overview\n\n"
        "Back to [the second overview](#overview-1).\n\n"
        "```sh\n# not a heading; [not a link](missing.md)\n```\n\n"
        "`[not a link either](missing.md)`\n"
    ),
    "docs/development/architecture.md": (
        "# Architecture\n\n{{#include ../../notes.md:2:}}\n\n## Code map\n\n"
        "- `api/src/lib.rs`: the root\n- `api/src/sub/`: a module folder\n"
        "- `api/src/sub/mod.rs`: its root\n\n## After\n\n- `not/mapped.rs`: outside the section\n"
        "\nAn included heading: [Included](#included-heading).\n"
    ),
    "notes.md": "# Dropped by the include's line range\n## Included heading\n",
    "src/a.rs": "",
    "api/src/lib.rs": "",
    "api/src/sub/mod.rs": "",
}


class CheckTest(unittest.TestCase):
    def run_check(self, changes: dict[str, str | None] | None = None) -> list[str]:
        files = dict(GOOD)
        for path, text in (changes or {}).items():
            if text is None:
                files.pop(path, None)
            else:
                files[path] = text
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            for path, text in files.items():
                (root / path).parent.mkdir(parents=True, exist_ok=True)
                (root / path).write_text(text)
            return check.Checker(root).run(None)

    def assert_one_error(self, errors: list[str], *parts: str) -> None:
        self.assertEqual(len(errors), 1, errors)
        for part in parts:
            self.assertIn(part, errors[0])

    def test_a_sound_tree_passes(self) -> None:
        self.assertEqual(self.run_check(), [])

    def test_a_link_to_a_missing_file_fails(self) -> None:
        errors = self.run_check({"README.md": GOOD["README.md"] + "\nAnd [gone](docs/gone.md).\n"})
        self.assert_one_error(errors, "README.md:5", "docs/gone.md does not exist")

    def test_a_link_to_a_missing_anchor_fails(self) -> None:
        text = GOOD["README.md"].replace("#the-webhook-resource", "#the-webhook-resources")
        errors = self.run_check({"README.md": text})
        self.assert_one_error(errors, "README.md:3", "docs/guide.md", "'the-webhook-resources'")

    def test_an_anchor_within_the_page_is_checked(self) -> None:
        text = GOOD["docs/guide.md"].replace("(#overview-1)", "(#overview-2)")
        self.assert_one_error(self.run_check({"docs/guide.md": text}), "docs/guide.md", "'overview-2'")

    def test_a_link_broken_across_lines_is_found(self) -> None:
        text = GOOD["docs/guide.md"].replace("architecture.md#code-map", "architecture.md#codemap")
        self.assert_one_error(self.run_check({"docs/guide.md": text}), "docs/guide.md:7", "'codemap'")

    def test_a_heading_of_an_included_file_is_an_anchor(self) -> None:
        text = GOOD["notes.md"].replace("Included heading", "Renamed heading")
        self.assert_one_error(self.run_check({"notes.md": text}), "'included-heading'")

    def test_a_page_missing_from_the_summary_fails(self) -> None:
        errors = self.run_check({"docs/orphan.md": "# Orphan\n"})
        self.assertEqual(len(errors), 2, errors)
        self.assertIn("docs/orphan.md: not listed in docs/SUMMARY.md", errors)
        self.assertIn("docs/orphan.md: not reachable from README.md by links", errors)

    def test_a_module_missing_from_the_code_map_fails(self) -> None:
        errors = self.run_check({"api/src/new.rs": "", "api/src/other/x.rs": ""})
        self.assertEqual(len(errors), 3, errors)
        self.assertTrue(any("source file `api/src/new.rs`" in e for e in errors), errors)
        self.assertTrue(any("module folder `api/src/other/`" in e for e in errors), errors)
        self.assertTrue(any("source file `api/src/other/x.rs`" in e for e in errors), errors)

    def test_a_code_map_line_for_a_path_that_is_gone_fails(self) -> None:
        errors = self.run_check({"api/src/sub/mod.rs": None})
        self.assertEqual(len(errors), 2, errors)
        self.assertTrue(all("does not exist" in e for e in errors), errors)
        self.assertTrue(any("`api/src/sub/mod.rs`" in e for e in errors), errors)
        self.assertTrue(any("`api/src/sub/`" in e for e in errors), errors)

    def test_a_code_map_line_needs_a_description(self) -> None:
        text = GOOD["docs/development/architecture.md"].replace("`api/src/lib.rs`: the root", "`api/src/lib.rs`")
        errors = self.run_check({"docs/development/architecture.md": text})
        self.assert_one_error(errors, "`api/src/lib.rs` has no description")

    def test_ids_are_made_as_mdbook_makes_them(self) -> None:
        ids = check.heading_ids(
            [
                check.Line(t, Path("x.md"), n)
                for n, t in enumerate(
                    [
                        "# The `Webhook` resource",
                        "## Refused at `kubectl apply`",
                        "## GitOps (Argo CD, Flux)",
                        "## Receiver pools: many Webhooks, a few pods",
                        "## Über **bold** and [a link](x.md)",
                        "## snake_case_name",
                        "## Custom {#chosen}",
                        "## GitOps (Argo CD, Flux)",
                    ],
                    1,
                )
                for t in (t, "")
            ]
        )
        self.assertEqual(
            ids,
            [
                "the-webhook-resource",
                "refused-at-kubectl-apply",
                "gitops-argo-cd-flux",
                "receiver-pools-many-webhooks-a-few-pods",
                "über-bold-and-a-link",
                "snake_case_name",
                "chosen",
                "gitops-argo-cd-flux-1",
            ],
        )


if __name__ == "__main__":
    unittest.main()
