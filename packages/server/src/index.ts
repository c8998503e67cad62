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
