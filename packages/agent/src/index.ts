export { loadAgentConfig, AgentConfigSchema, type AgentConfig } from './config.js';
export type { TrustAnchor } from './trust-anchor/trust-anchor.js';
export { SoftwareTrustAnchor } from './trust-anchor/software.js';
export { AgentError } from './errors.js';
