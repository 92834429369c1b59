#!/usr/bin/env node
// Entry point for `npx careledger`. npx puts node_modules/.bin first on PATH, so `node` here is the pinned Node 24.
const major = Number(process.versions.node.split(".")[0]);
if (major < 24) {
  console.error(`careledger: needs Node 24 (found ${process.versions.node}); run it as \`npx careledger …\``);
  process.exit(2);
}
const { main } = await import("../src/cli/main.ts");
process.exitCode = await main(process.argv.slice(2));
