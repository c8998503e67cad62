export * from './target.js';
export * from './signing.js';
export * from './receipt.js';
export * from './chunks.js';
export * from './encryption.js';
export * from './delta.js';
