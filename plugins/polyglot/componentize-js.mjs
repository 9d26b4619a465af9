// Builds a JavaScript policy into a component with componentize-js's own
// API (its `jco componentize` CLI could not be pointed at a WIT directory
// in the versions tried). Usage: node componentize-js.mjs SOURCE WIT OUT
import { writeFile } from 'node:fs/promises';
import { componentize } from '@bytecodealliance/componentize-js';

const [sourcePath, witPath, out] = process.argv.slice(2);
const { component } = await componentize({
    sourcePath,
    witPath,
    worldName: 'policy-plugin',
    // A policy needs no HTTP, and gets its clocks and randomness from the
    // host's WASI, which Vigil drives.
    disableFeatures: ['http', 'fetch-event'],
});
await writeFile(out, component);
