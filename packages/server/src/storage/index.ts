export * from './database.js';
export type { SqlDialect } from './dialect.js';
export type * from './schema.js';
