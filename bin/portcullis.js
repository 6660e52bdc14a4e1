#!/usr/bin/env node
// Entry point for `npx portcullis`. Needs Node >= 24 (type stripping); the project pins node@24 as a devDependency
// so npm/npx put that binary first on PATH.
const [major] = process.versions.node.split('.').map(Number);
if (major < 24) {
  process.stderr.write(`portcullis needs Node 24 or later (this is ${process.version}); run it through npm/npx in the repository\n`);
  process.exit(1);
}
const { runCli } = await import('../src/cli/index.ts');
await runCli(process.argv);
