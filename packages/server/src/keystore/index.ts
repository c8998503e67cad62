export * from './keystore.js';
export { FileKeyStore } from './file-keystore.js';
export { resolvePassphrase, resolvePin } from './passphrase.js';
export { openKeyStore, fileKeyStoreDir } from './open.js';
// Pkcs11KeyStore is not re-exported: importing it loads the native pkcs11js module. Use
// openKeyStore, or import './pkcs11-keystore.js' directly.
export type { Pkcs11KeyStore, Pkcs11Options } from './pkcs11-keystore.js';
