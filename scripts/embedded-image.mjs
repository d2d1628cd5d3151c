#!/usr/bin/env node
// Part of `npm run build`: makes the embedded database's data directory image
// (PGlite's initdb output) once per PGlite version, so that a new embedded
// database is unpacked from it instead of running initdb at start-up.
import { defaultImagePath, ensureEmbeddedImage } from '../dist/src/backend/embedded.js';

const had = (await import('node:fs')).existsSync(defaultImagePath());
const path = await ensureEmbeddedImage();
if (!had) console.error(`memory-sync: made ${path}`);
