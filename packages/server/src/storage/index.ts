export * from './database.js';
export { chunks } from './chunks.js';
export type { SqlDialect } from './dialect.js';
export type * from './schema.js';
