// The CLI's entry module loads only what every command needs: each command's own modules (the FHIR stack, the store,
// the etcd client, the HTTP server) are loaded by its action. `careledger --help` took 0.46 s when main.ts pulled in
// the import command's modules; it takes ~0.05 s without them.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const SRC = join(dirname(fileURLToPath(import.meta.url)), "..");

/** Specifiers of a module's static imports and re-exports, leaving out type-only ones (erased when run). */
function staticImports(source: string): string[] {
  const found: string[] = [];
  const statement = /^\s*(?:import|export)\s+(type\s+)?(?:[^;"']*?\s+from\s+)?["']([^"']+)["']/gm;
  for (const m of source.matchAll(statement)) if (m[1] === undefined) found.push(m[2] as string);
  return found;
}

/** Every local file and package reached from `entry` through static imports. */
function staticGraph(entry: string): { files: string[]; packages: string[] } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const visit = (file: string) => {
    if (files.has(file)) return;
    files.add(file);
    for (const spec of staticImports(readFileSync(file, "utf8"))) {
      if (spec.startsWith(".")) visit(join(dirname(file), spec));
      else if (!spec.startsWith("node:")) packages.add(spec);
    }
  };
  visit(entry);
  return { files: [...files].map((f) => relative(SRC, f)).sort(), packages: [...packages].sort() };
}

test("staticImports: values and re-exports count, type-only imports and dynamic imports do not", () => {
  const source = [
    'import { a, type B } from "./a.ts";',
    'import type { C } from "./c.ts";',
    "import {\n  d,\n  e,\n} from './d.ts';",
    'import "./side-effect.ts";',
    'export { f } from "./f.ts";',
    'export type { G } from "./g.ts";',
    'const h = await import("./h.ts");',
    "// import { i } from './i.ts';",
  ].join("\n");
  assert.deepEqual(staticImports(source), ["./a.ts", "./d.ts", "./side-effect.ts", "./f.ts"]);
});

test("src/cli/main.ts loads commander and the errors it reports, nothing else, before a command runs", () => {
  const graph = staticGraph(join(SRC, "cli", "main.ts"));
  assert.deepEqual(graph.packages, ["commander"]);
  assert.deepEqual(graph.files, [
    "cli/generate-defaults.ts",
    "cli/import-command.ts",
    "cli/main.ts",
    "node/errors.ts",
    "store/errors.ts",
  ]);
});
