// Fails fast, in one line, when the project is run on a Node other than the pinned 24 LTS.
const major = Number(process.versions.node.split(".")[0]);
if (major !== 24) {
  console.error(
    `careledger needs Node 24 (found ${process.versions.node}); run through npm scripts or npx, which use the pinned node@24 package`,
  );
  process.exit(2);
}
