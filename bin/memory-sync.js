#!/usr/bin/env node
import { main } from '../dist/src/cli/index.js';

const code = await main(process.argv);
// Exit explicitly once output is flushed: the WASM schema engine leaves
// timers behind that would hold the process for ~10 s after `migrate`.
process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
