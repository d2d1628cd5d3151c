#!/usr/bin/env node
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const cli = new URL('../dist/src/cli/index.js', import.meta.url);
const root = fileURLToPath(new URL('..', import.meta.url));
const fail = (message) => {
  process.stderr.write(`memory-sync: ${message}\n`, () => process.exit(1));
};

// The CLI runs from the compiled dist/: say what to run rather than print an
// import stack trace when it is missing.
let main;
if (!existsSync(cli)) {
  if (!existsSync(new URL('../src/cli/index.ts', import.meta.url))) {
    fail(`this installation has no dist/ (${root}): reinstall memory-sync.`);
  } else if (!existsSync(new URL('../node_modules', import.meta.url))) {
    fail(`not built: dist/ is missing. From ${root} run: npm ci && npm run build`);
  } else {
    fail(`not built: dist/ is missing. From ${root} run: npm run build`);
  }
} else {
  try {
    ({ main } = await import(cli.href));
  } catch (err) {
    if (err?.code !== 'ERR_MODULE_NOT_FOUND') throw err;
    fail(`${err.message}\nDependencies are missing: run npm ci (in a clone) or reinstall memory-sync.`);
  }
}

if (main) {
  const code = await main(process.argv);
  // Exit explicitly once output is flushed: the WASM schema engine leaves
  // timers behind that would hold the process for ~10 s after `migrate`.
  process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
}
