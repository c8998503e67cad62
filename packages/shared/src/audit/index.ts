export * from './canonical.js';
export * from './entry.js';
export * from './checkpoint.js';
export * from './verify.js';
export * from './syslog.js';
