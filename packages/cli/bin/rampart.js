#!/usr/bin/env node
// Entry point linked by npm; the command itself is built into dist/ by `npm run build`.
import '../dist/bin/rampart.js';
