export * from './signed.js';
export * from './formats.js';
export * from './verify.js';
