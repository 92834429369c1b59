#!/usr/bin/env node
// Entry point for `npx careledger`. npx puts node_modules/.bin first on PATH, so `node` here is the pinned Node 24.
const major = Number(process.versions.node.split(".")[0]);
if (major < 24) {
  console.error(`careledger: needs Node 24 (found ${process.versions.node}); run it as \`npx careledger …\``);
  process.exit(2);
}
// Node keeps the compiled code of our TypeScript and of our dependencies between runs (its compile cache, in the OS
// temp dir; NODE_DISABLE_COMPILE_CACHE=1 turns it off): each command starts ~0.3 s sooner. Set before the CLI loads.
const { enableCompileCache } = await import("node:module");
enableCompileCache?.();
const { main } = await import("../src/cli/main.ts");
process.exitCode = await main(process.argv.slice(2));
