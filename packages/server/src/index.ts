export {
  startPlatform,
  openKeyStore,
  dataFiles,
  AUDIT_KEY_LABEL,
  type Platform,
  type Listener,
} from './platform.js';
export { loadServerConfig, databaseUrlOf, ServerConfigSchema, type ServerConfig } from './config/index.js';
export { openStorage, type Storage } from './storage/index.js';
export { AuditLog } from './audit/log.js';
export { RampartError } from './errors.js';
export { VERSION } from './version.js';
// Offline CA administration (`rampart ca init`).
export { identitySettingsOf } from './platform.js';
export { lockDataDir } from './data-dir-lock.js';
export { getOrCreateKey, type KeyStore } from './keystore/index.js';
export { FleetRegistry } from './fleet/registry.js';
export { IdentityService, type IdentitySettings } from './identity/service.js';
export { lintPolicy, type Finding } from './gateway/policy/index.js';
export { issueBirthCertificate, stationSigner } from './provisioning/factory.js';
export {
  generateDelta,
  type DeltaGeneratorOptions,
  type DeltaOutcome,
  type DeltaRequest,
} from './updates/artifacts/delta.js';
