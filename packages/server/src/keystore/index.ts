export * from './keystore.js';
export { FileKeyStore } from './file-keystore.js';
export { resolvePassphrase } from './passphrase.js';
