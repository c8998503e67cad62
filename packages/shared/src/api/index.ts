export * from './tokens.js';
export * from './audit.js';
export * from './fleet.js';
export * from './system.js';
export * from './identity.js';
export * from './policy.js';
export * from './gateway.js';
export * from './provisioning.js';
